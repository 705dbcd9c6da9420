"""Titanic preprocessing as scikit-learn estimators.

This module imports pandas and scikit-learn; :mod:`xpnn.datasets` only imports it when
Titanic functions are called, so the rest of the package works without them.

The preprocessing is a :class:`~sklearn.pipeline.Pipeline` so that everything learned
from data (age medians, fare median, most common port, scaling statistics) is learned
by ``fit`` on the training split only, then applied unchanged to validation/test rows::

    from sklearn.model_selection import train_test_split
    from xpnn.datasets import load_titanic, titanic_preprocessor

    X_raw, y = load_titanic(as_frame=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X_raw, y, stratify=y, random_state=0)
    pre = titanic_preprocessor()
    X_tr = pre.fit_transform(X_tr)  # statistics from the training rows only
    X_te = pre.transform(X_te)
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "CATEGORICAL_FEATURES",
    "NUMERIC_FEATURES",
    "TITLES",
    "TitanicFeatures",
    "extract_title",
    "make_titanic_preprocessor",
]

#: Raw Kaggle columns the preprocessing reads (others, e.g. Ticket and Cabin, are dropped).
REQUIRED_COLUMNS = ("Pclass", "Name", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked")
#: Numeric columns produced by :class:`TitanicFeatures`, in order.
NUMERIC_FEATURES = ("Pclass", "Age", "SibSp", "Parch", "Fare", "FamilySize")
#: Categorical columns produced by :class:`TitanicFeatures`, in order.
CATEGORICAL_FEATURES = ("Sex", "Embarked", "Title")
#: Title groups; every title not mapped by :data:`TITLE_MAP` becomes ``"Rare"``.
TITLES = ("Master", "Miss", "Mr", "Mrs", "Rare")
#: Known honorifics and their group (French forms folded into English ones).
TITLE_MAP = {
    "Mr": "Mr",
    "Mrs": "Mrs",
    "Miss": "Miss",
    "Master": "Master",
    "Mlle": "Miss",
    "Ms": "Miss",
    "Mme": "Mrs",
}
_CATEGORIES = {"Sex": ("female", "male"), "Embarked": ("C", "Q", "S"), "Title": TITLES}

# "Braund, Mr. Owen Harris" -> "Mr"; "Rothes, the Countess. of (...)" -> "the Countess".
_TITLE_RE = re.compile(r",\s*([^.]+?)\s*\.")


def extract_title(name) -> str:
    """Return the title group of a Kaggle ``Name`` such as ``"Braund, Mr. Owen Harris"``.

    Parameters
    ----------
    name : str or None
        Passenger name in the form ``"Surname, Title. Given names"``.

    Returns
    -------
    str
        One of :data:`TITLES`: ``"Mr"``, ``"Mrs"``, ``"Miss"``, ``"Master"``, or
        ``"Rare"`` for other titles (Dr, Rev, Col, ...) and unparsable or missing names.
    """
    if not isinstance(name, str):
        return "Rare"
    match = _TITLE_RE.search(name)
    return TITLE_MAP.get(match.group(1), "Rare") if match else "Rare"


def _clean_category(values, normalise) -> list:
    out = []
    for value in values:
        text = value.strip() if isinstance(value, str) else ""
        out.append(normalise(text) if text else None)
    return out


class TitanicFeatures(TransformerMixin, BaseEstimator):
    """Feature engineering and imputation for the raw Kaggle Titanic columns.

    ``fit`` learns, from the rows it is given only:

    * ``age_medians_``: median Age per title group (missing ages are filled with the
      median of the passenger's title: a "Master" is a boy, a "Mr" a man), with
      ``age_median_`` (overall median) for titles without any known age;
    * ``fare_median_``: median Fare (for the rare missing fare);
    * ``embarked_mode_``: most common port of embarkation.

    ``transform`` returns a DataFrame with the columns :data:`NUMERIC_FEATURES`
    (Pclass, Age, SibSp, Parch, Fare, FamilySize = SibSp + Parch + 1) followed by
    :data:`CATEGORICAL_FEATURES` (Sex, Embarked, Title from :func:`extract_title`), with
    no missing values. PassengerId, Name, Ticket and Cabin are dropped.

    Use it through :func:`xpnn.datasets.titanic_preprocessor`, which adds scaling and
    one-hot encoding.
    """

    def fit(self, X, y=None):
        """Learn the imputation values from ``X``.

        Parameters
        ----------
        X : pandas.DataFrame of shape (n_samples, n_columns)
            Raw Kaggle Titanic rows; must contain the columns in ``REQUIRED_COLUMNS``.
        y : ignored

        Returns
        -------
        self : TitanicFeatures
        """
        frame = self._engineer(X)
        ages = frame["Age"]
        if not ages.notna().any():
            raise ValueError("cannot fit TitanicFeatures: every Age value is missing")
        self.age_median_ = float(ages.median())
        known = frame.loc[ages.notna()]
        self.age_medians_ = {
            str(title): float(median)
            for title, median in known.groupby("Title")["Age"].median().items()
        }
        fares = frame["Fare"]
        self.fare_median_ = float(fares.median()) if fares.notna().any() else 0.0
        ports = Counter(p for p in frame["Embarked"] if p is not None)
        self.embarked_mode_ = max(sorted(ports), key=ports.__getitem__) if ports else "S"
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def transform(self, X):
        """Engineer features and fill missing values with the fitted statistics.

        Parameters
        ----------
        X : pandas.DataFrame of shape (n_samples, n_columns)
            Raw Kaggle Titanic rows.

        Returns
        -------
        pandas.DataFrame of shape (n_samples, 9)
            Columns Pclass, Age, SibSp, Parch, Fare, FamilySize (float64) and Sex,
            Embarked, Title (str), same index as ``X``.
        """
        check_is_fitted(self, "age_medians_")
        frame = self._engineer(X)
        by_title = frame["Title"].map(self.age_medians_).astype("float64")
        frame["Age"] = frame["Age"].fillna(by_title).fillna(self.age_median_)
        frame["Fare"] = frame["Fare"].fillna(self.fare_median_)
        frame["Embarked"] = [p if p is not None else self.embarked_mode_ for p in frame["Embarked"]]
        for column in CATEGORICAL_FEATURES:
            frame[column] = frame[column].astype(object)
        return frame[list(NUMERIC_FEATURES + CATEGORICAL_FEATURES)]

    def get_feature_names_out(self, input_features=None):
        """Names of the columns returned by :meth:`transform`.

        Returns
        -------
        numpy.ndarray of str, shape (9,)
        """
        return np.asarray(NUMERIC_FEATURES + CATEGORICAL_FEATURES, dtype=object)

    @staticmethod
    def _engineer(X) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                f"TitanicFeatures needs a pandas DataFrame with the Kaggle columns, "
                f"got {type(X).__name__}"
            )
        missing = [c for c in REQUIRED_COLUMNS if c not in X.columns]
        if missing:
            raise ValueError(f"Titanic data lacks the column(s) {missing}")
        numeric = {
            c: pd.to_numeric(X[c], errors="coerce").astype("float64")
            for c in ("Pclass", "Age", "SibSp", "Parch", "Fare")
        }
        frame = pd.DataFrame(numeric, index=X.index)
        frame["SibSp"] = frame["SibSp"].fillna(0.0)
        frame["Parch"] = frame["Parch"].fillna(0.0)
        frame["FamilySize"] = frame["SibSp"] + frame["Parch"] + 1.0
        sex = _clean_category(X["Sex"].astype(object), str.lower)
        frame["Sex"] = pd.Series(sex, index=X.index, dtype=object)
        ports = _clean_category(X["Embarked"].astype(object), str.upper)
        frame["Embarked"] = pd.Series(ports, index=X.index, dtype=object)
        titles = [extract_title(n) for n in X["Name"].astype(object)]
        frame["Title"] = pd.Series(titles, index=X.index, dtype=object)
        return frame


def make_titanic_preprocessor(*, scale: bool = True) -> Pipeline:
    """Build the unfitted Titanic pipeline (see :func:`xpnn.datasets.titanic_preprocessor`)."""
    encoder = OneHotEncoder(
        categories=[list(_CATEGORIES[c]) for c in CATEGORICAL_FEATURES],
        handle_unknown="ignore",
        sparse_output=False,
        dtype=np.float64,
    )
    columns = ColumnTransformer(
        [
            ("numeric", StandardScaler() if scale else "passthrough", list(NUMERIC_FEATURES)),
            ("categorical", encoder, list(CATEGORICAL_FEATURES)),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline([("features", TitanicFeatures()), ("encode", columns)])

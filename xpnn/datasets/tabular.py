"""Small tabular datasets: XOR, diabetes, Titanic and Student Performance.

pandas and scikit-learn are imported inside the functions that need them, so importing
:mod:`xpnn.datasets` only requires NumPy.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from ._home import DATA_HOME_ENV, DatasetNotFoundError, get_data_home, warn_if_checksum_differs

__all__ = [
    "STUDENT_FEATURES",
    "load_diabetes",
    "load_student_performance",
    "load_titanic",
    "load_xor",
    "titanic_preprocessor",
]

TITANIC_URL = "https://www.kaggle.com/competitions/titanic/data"
TITANIC_SHA256 = "7d118fef8b6ccf7f81111877bc388536f7b1e498a655e3d649d19aaa010e9f6f"
STUDENT_URL = (
    "https://www.kaggle.com/datasets/nikhil7280/student-performance-multiple-linear-regression"
)
STUDENT_SHA256 = "93793b00d9026d0b4907df0ca9f88b3696747c7496679d35833bb0fbf9fb57cf"

#: Feature columns of :func:`load_student_performance`, in the order of ``X``.
STUDENT_FEATURES = (
    "Hours Studied",
    "Previous Scores",
    "Extracurricular Activities",
    "Sleep Hours",
    "Sample Question Papers Practiced",
)
STUDENT_TARGET = "Performance Index"
_YES_NO = {"yes": 1.0, "no": 0.0, "1": 1.0, "0": 0.0}


def load_xor():
    """Return the four points of the XOR problem.

    Returns
    -------
    X : numpy.ndarray of shape (4, 2), float64
        ``[[0, 0], [0, 1], [1, 0], [1, 1]]``.
    y : numpy.ndarray of shape (4,), int64
        ``[0, 1, 1, 0]``, the exclusive or of the two inputs.
    """
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    return X, y


def load_diabetes(*, scaled: bool = True):
    """Load the diabetes regression data bundled with scikit-learn (no download).

    Parameters
    ----------
    scaled : bool, default True
        Passed to :func:`sklearn.datasets.load_diabetes`: if True the features are
        mean-centred and scaled to unit L2 norm per column, as in the original study.

    Returns
    -------
    X : numpy.ndarray of shape (442, 10), float64
        Age, sex, BMI, blood pressure and six blood serum measurements.
    y : numpy.ndarray of shape (442,), float64
        Disease progression one year after baseline (25 to 346).

    Raises
    ------
    ImportError
        scikit-learn is not installed.
    """
    from sklearn.datasets import load_diabetes as _sk_load_diabetes

    X, y = _sk_load_diabetes(return_X_y=True, scaled=scaled)
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)


def _kaggle_file(data_home, relative: str, title: str, url: str):
    path = get_data_home(data_home) / relative
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{title} data not found: expected the file {path}. It is Kaggle data and "
            f"cannot be downloaded automatically. Download {path.name} from {url} (a free "
            f"Kaggle account is needed) and save it as {path}, or point data_home= or the "
            f"{DATA_HOME_ENV} environment variable at a data folder that contains {relative}."
        )
    return path


def titanic_preprocessor(*, scale: bool = True):
    """Return a new, unfitted scikit-learn pipeline that turns raw Titanic rows into floats.

    Steps (everything data-dependent is learned by ``fit``, so fit it on the training
    split only and call ``transform`` on validation/test data to avoid leakage):

    1. :class:`xpnn.datasets.titanic.TitanicFeatures`: extract the Title (Mr, Mrs,
       Miss, Master, Rare) from Name; add FamilySize = SibSp + Parch + 1; impute missing
       Age with the median age of the passenger's title, missing Fare with the median
       fare and missing Embarked with the most common port; drop PassengerId, Name,
       Ticket and Cabin.
    2. A :class:`~sklearn.compose.ColumnTransformer`: standardise Pclass, Age, SibSp,
       Parch, Fare and FamilySize (:class:`~sklearn.preprocessing.StandardScaler`), and
       one-hot encode Sex, Embarked and Title with fixed categories (unknown values
       become all zeros), so the output always has the same 16 columns.

    Parameters
    ----------
    scale : bool, default True
        Standardise the numeric columns; if False pass them through unchanged.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Unfitted. ``fit``/``transform`` take a DataFrame with the raw Kaggle columns
        (as from ``load_titanic(as_frame=True)``) and return a float64 array of shape
        ``(n_samples, 16)``; ``get_feature_names_out()`` gives the column names: Pclass,
        Age, SibSp, Parch, Fare, FamilySize, Sex_female, Sex_male, Embarked_C,
        Embarked_Q, Embarked_S, Title_Master, Title_Miss, Title_Mr, Title_Mrs, Title_Rare.

    Raises
    ------
    ImportError
        pandas or scikit-learn is not installed.

    Examples
    --------
    Four rows in the layout of ``load_titanic(as_frame=True)`` (one Age and one Embarked
    missing):

    >>> import pandas as pd
    >>> rows = pd.DataFrame({
    ...     "Pclass": [3, 1, 3, 2], "Sex": ["male", "female", "female", "male"],
    ...     "Name": ["Braund, Mr. Owen Harris", "Cumings, Mrs. John Bradley",
    ...              "Heikkinen, Miss. Laina", "Palsson, Master. Gosta"],
    ...     "Age": [22.0, 38.0, None, 2.0], "SibSp": [1, 1, 0, 3], "Parch": [0, 0, 0, 1],
    ...     "Fare": [7.25, 71.28, 7.93, 21.08], "Embarked": ["S", "C", "S", None]})
    >>> pre = titanic_preprocessor()
    >>> X = pre.fit_transform(rows)          # fit on training rows only; then pre.transform(test)
    >>> X.shape, X.dtype
    ((4, 16), dtype('float64'))
    >>> list(pre.get_feature_names_out()[6:8])
    ['Sex_female', 'Sex_male']
    """
    from .titanic import make_titanic_preprocessor

    return make_titanic_preprocessor(scale=scale)


def load_titanic(data_home: str | os.PathLike[str] | None = None, *, as_frame: bool = False):
    """Load the Kaggle Titanic training set (``<data home>/titanic/train.csv``).

    The file cannot be downloaded automatically (Kaggle requires an account): get
    ``train.csv`` from https://www.kaggle.com/competitions/titanic/data and save it as
    ``<data home>/titanic/train.csv``. A file that differs from the original Kaggle
    file (SHA-256 ``7d118fef...``) is still loaded, with a :class:`ChecksumWarning`.

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Data folder; defaults to :func:`get_data_home` (``XPNN_DATA`` or the user cache).
    as_frame : bool, default False
        If True, return the raw, unprocessed data, to split first and preprocess after
        with :func:`titanic_preprocessor` (the leak-free way to evaluate a model).

    Returns
    -------
    X : numpy.ndarray of shape (891, 16), float64, or pandas.DataFrame of shape (891, 11)
        If ``as_frame`` is False: the features from ``titanic_preprocessor()`` fitted on
        all 891 rows (column names in its docstring). If True: the raw Kaggle columns
        PassengerId, Pclass, Name, Sex, Age, SibSp, Parch, Ticket, Fare, Cabin, Embarked.
    y : numpy.ndarray of shape (891,), int64, or pandas.Series
        Survived: 1 survived, 0 died (a Series named "Survived" if ``as_frame``).

    Raises
    ------
    DatasetNotFoundError
        The CSV file is missing; the message gives the full expected path.
    ValueError
        The CSV lacks the Survived column or a column the preprocessing needs.
    ImportError
        pandas or scikit-learn is not installed.

    Notes
    -----
    With ``as_frame=False`` the imputation medians and scaling statistics come from all
    rows, so a later train/test split of ``X`` leaks a little test information into the
    features. That is fine for demos; for honest evaluation use ``as_frame=True``, split,
    and fit :func:`titanic_preprocessor` on the training part only.

    Examples
    --------
    >>> X, y = load_titanic()  # doctest: +SKIP
    >>> X.shape, y.mean().round(3)  # doctest: +SKIP
    ((891, 16), np.float64(0.384))
    """
    import pandas as pd

    path = _kaggle_file(data_home, "titanic/train.csv", "Titanic", TITANIC_URL)
    warn_if_checksum_differs(path, TITANIC_SHA256, reference="Kaggle titanic train.csv")
    frame = pd.read_csv(path)
    if "Survived" not in frame.columns:
        raise ValueError(
            f"{path} has no Survived column; it should be Kaggle's train.csv "
            "(test.csv has no labels)"
        )
    y = frame["Survived"].astype("int64")
    X = frame.drop(columns="Survived")
    if as_frame:
        return X, y
    features = titanic_preprocessor().fit_transform(X)
    return np.asarray(features, dtype=np.float64), y.to_numpy()


def load_student_performance(
    data_home: str | os.PathLike[str] | None = None, *, as_frame: bool = False
):
    """Load Kaggle's Student Performance data (``student-performance/Student_Performance.csv``).

    The file cannot be downloaded automatically (Kaggle requires an account): get
    ``Student_Performance.csv`` from
    https://www.kaggle.com/datasets/nikhil7280/student-performance-multiple-linear-regression
    and save it as ``<data home>/student-performance/Student_Performance.csv``. A file
    that differs from the original (SHA-256 ``93793b00...``) is still loaded, with a
    :class:`ChecksumWarning`.

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Data folder; defaults to :func:`get_data_home` (``XPNN_DATA`` or the user cache).
    as_frame : bool, default False
        If True, return a pandas DataFrame and Series (with the CSV's column names)
        instead of NumPy arrays; the Yes/No column is mapped to 1/0 in both cases.

    Returns
    -------
    X : numpy.ndarray of shape (10000, 5), float64, or pandas.DataFrame
        Columns :data:`STUDENT_FEATURES`: Hours Studied, Previous Scores,
        Extracurricular Activities (Yes = 1, No = 0), Sleep Hours, Sample Question
        Papers Practiced. Not scaled.
    y : numpy.ndarray of shape (10000,), float64, or pandas.Series
        Performance Index (10 to 100).

    Raises
    ------
    DatasetNotFoundError
        The CSV file is missing; the message gives the full expected path.
    ValueError
        Unexpected header, a row without 6 fields, a non-numeric value, or an
        Extracurricular Activities value other than Yes/No; the message gives the line.
    """
    path = _kaggle_file(
        data_home,
        "student-performance/Student_Performance.csv",
        "Student Performance",
        STUDENT_URL,
    )
    warn_if_checksum_differs(path, STUDENT_SHA256, reference="Kaggle Student_Performance.csv")
    expected_header = [*STUDENT_FEATURES, STUDENT_TARGET]
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [_norm(h) for h in header] != [_norm(h) for h in expected_header]:
            raise ValueError(f"{path}: header {header} is not the expected {expected_header}")
        for row in reader:
            if not row or all(not field.strip() for field in row):
                continue
            line = reader.line_num
            if len(row) != len(expected_header):
                raise ValueError(
                    f"{path}, line {line}: expected {len(expected_header)} fields, "
                    f"got {len(row)}: {row}"
                )
            activity = _YES_NO.get(row[2].strip().lower())
            if activity is None:
                raise ValueError(
                    f"{path}, line {line}: Extracurricular Activities must be Yes or No, "
                    f"got {row[2]!r}"
                )
            try:
                rows.append([float(row[0]), float(row[1]), activity, *map(float, row[3:])])
            except ValueError as exc:
                raise ValueError(f"{path}, line {line}: non-numeric value in {row}") from exc
    data = np.array(rows, dtype=np.float64).reshape(-1, len(expected_header))
    X, y = data[:, :-1], data[:, -1].copy()
    X = np.ascontiguousarray(X)
    if as_frame:
        import pandas as pd

        frame = pd.DataFrame(X, columns=list(STUDENT_FEATURES))
        return frame, pd.Series(y, name=STUDENT_TARGET)
    return X, y


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).lower()

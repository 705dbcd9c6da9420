"""Preprocessing of raw tables for neural networks: :class:`TabularPreprocessor`.

Learned on the training rows only, then applied to any rows (RealMLP's recipe, Holzmüller et al.
2024, "Better by default"; pytabkit's ``median_center``, ``robust_scale``, ``smooth_clip`` and
``one_hot`` transforms):

* numeric columns: ``z = (x - median) · s`` with ``s = 1 / (q75 - q25)`` (or
  ``1 / ((max - min) / 2)`` when the quartiles coincide, 0 for a constant column), then the
  smooth clip ``z / sqrt(1 + z² / c²)`` (``c = clip``, 3 by default), which keeps ``|z| < c``
  and is close to the identity near 0. A missing value becomes 0 (the median) and, when the
  column had missing values in the training rows, a 0/1 indicator column says so.
* date-time columns (``datetime64``, time-zone aware ones too) are numbers: seconds since
  1970-01-01 UTC; durations (``timedelta64``) their length in seconds; then scaled as numeric
  columns (``NaT`` is missing). Such a column must have the same kind again when transformed.
* whole-number numeric columns with 3 to ``max_integer_categories`` distinct values in the training
  rows (a school id, a year, a count) can, besides their scaled number, also be encoded as
  categoricals whose categories are those values (a value not seen in training, or missing, is
  an unseen category), so that the network can learn an effect per value. Given targets ``y``,
  only the columns that act as categories get this: those whose per-value means of ``y``
  (shrunk towards the overall mean) explain at least ``MIN_CATEGORY_GAIN`` (2 %) more of its
  variance than a smooth curve of the number (a linear spline with knots at the 20/40/60/80 %
  quantiles), both cross-validated in 5 folds of the training rows. A school id passes; age,
  experience or a count with a smooth effect does not. Off by default (None); the tabular
  estimators turn it on.
* categorical columns (str, object, ``category``, bool): with at most ``max_one_hot`` categories
  (a missing value counting as one when the training rows have it) one-hot columns, a single
  ±1 column for two categories (with ``one_hot_width``, only while the one-hot columns total
  at most that many, the smallest categoricals first); a category not seen in training is all
  zeros (0). Larger ones become one column of integer codes ``0 .. m-1`` (as floats), ``-1``
  for a category not seen in training (or a missing value not seen in training), for a learned
  embedding (:class:`xpnn.Embedding`, which maps every code outside ``0 .. m-1`` to its
  reserved row). With ``min_category_count=k`` a category seen fewer than ``k`` times in the
  training rows counts as unseen.

Output columns, in this order: scaled numeric columns, missing indicators, one-hot columns,
category codes (``n_numeric_out_``, ``n_indicators_``, ``n_one_hot_``, ``cardinalities_``); in the
last two blocks the categorical columns come first, then the whole-number columns encoded as
categoricals.

Strings that all look like numbers (``"3.5"``, ``"12"``) are refused with a ValueError naming the
column: whether they are amounts or codes is the user's call (``pd.to_numeric`` or
``.astype("category")``), never a silent guess.
"""

from __future__ import annotations

import numbers

import numpy as np

try:
    import pandas as pd
except ImportError:  # pragma: no cover - pandas is optional
    pd = None

from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["TabularPreprocessor", "smooth_clip"]

NUMERIC, CATEGORICAL, BOOLEAN = "numeric", "categorical", "boolean"
DATETIME, DURATION = "datetime", "timedelta"
#: The kinds encoded as numbers (robust scaling, smooth clip, missing indicator).
NUMBERS = (NUMERIC, DATETIME, DURATION)
#: Least gain (a fraction of the target's variance, cross-validated) of a whole-number column's
#: per-value means over a smooth curve of it for the column to be encoded as a categorical too.
MIN_CATEGORY_GAIN = 0.02
#: Most rows, and most target columns (classes), that gain is judged on.
MAX_GAIN_ROWS, MAX_GAIN_CLASSES = 100_000, 100


def smooth_clip(z, c: float = 3.0):
    """``z / sqrt(1 + z² / c²)``: odd, increasing, ≈ z near 0 and bounded by ``c``."""
    return z / np.sqrt(1.0 + (z / c) ** 2)


def _column_names(X):
    """Names to use in messages: ``"column 'age'"`` for frames, ``"column 3"`` for arrays."""
    if pd is not None and isinstance(X, pd.DataFrame):
        return [f"column {c!r}" for c in X.columns]
    return [f"column {j}" for j in range(X.shape[1])]


def _columns(X):
    """The columns of ``X`` as 1-D arrays (pandas Series kept as such)."""
    if pd is not None and isinstance(X, pd.DataFrame):
        return [X.iloc[:, j] for j in range(X.shape[1])]
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"TabularPreprocessor: X must be 2-D (rows, columns), got shape "
                         f"{X.shape}")
    return [X[:, j] for j in range(X.shape[1])]


def _missing(col) -> np.ndarray:
    if pd is not None:
        return np.asarray(pd.isna(col), dtype=bool)
    col = np.asarray(col)
    if col.dtype.kind in "fc":
        return np.isnan(col)
    return np.array([v is None or (isinstance(v, float) and v != v) for v in col], dtype=bool)


def _np_kind(dtype) -> str | None:
    """NumPy's kind letter of a (pandas) dtype, None for pandas' own string/category dtypes."""
    try:
        return np.dtype(getattr(dtype, "numpy_dtype", dtype)).kind
    except TypeError:
        return None


def _kind(col) -> str | None:
    """The kind of a column: numeric, date-time, duration, boolean or categorical (None:
    every value is missing)."""
    dtype = getattr(col, "dtype", None)
    if pd is not None and isinstance(dtype, pd.CategoricalDtype):
        return CATEGORICAL
    letter = None if dtype is None else _np_kind(dtype)
    if letter == "M" or (pd is not None and isinstance(dtype, pd.DatetimeTZDtype)):
        return DATETIME
    if letter == "m":
        return DURATION
    if letter == "b" or str(dtype) == "boolean":
        return BOOLEAN
    if letter in ("i", "u", "f"):
        return NUMERIC
    if letter in ("c", "V"):
        why = " (Complex data not supported)" if letter == "c" else ""
        raise ValueError(f"TabularPreprocessor: columns of dtype {dtype} are not supported"
                         f"{why}; convert them to real numbers or categories")
    values = np.asarray(col, dtype=object)[~_missing(col)]
    if values.size == 0:
        return None
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return BOOLEAN
    if all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in values):
        return NUMERIC
    return CATEGORICAL


def _looks_numeric(strings: np.ndarray) -> bool:
    """Every string parses as a finite or infinite number (``"3"``, ``"-1.5e3"``)."""
    if pd is not None:
        parsed = pd.to_numeric(pd.Series(strings, dtype=object), errors="coerce")
        return bool(parsed.notna().all())
    try:
        np.asarray(strings, dtype=float)
    except ValueError:
        return False
    return True


def _seconds(col, kind) -> np.ndarray:
    """A date-time column as seconds since 1970-01-01 UTC, a duration as seconds (NaT: NaN)."""
    if pd is not None:
        col = pd.Series(col)
        if kind == DATETIME:
            col = col - pd.Timestamp(0, tz=getattr(col.dtype, "tz", None))
        return (col / pd.Timedelta(seconds=1)).to_numpy(dtype=float, na_value=np.nan)
    col = np.asarray(col)
    if kind == DATETIME:
        col = col - np.datetime64(0, "s")
    return col / np.timedelta64(1, "s")


def _as_float(col, name, kind=NUMERIC) -> np.ndarray:
    if kind != NUMERIC:
        return _seconds(col, kind)
    if pd is not None and isinstance(col, pd.Series):
        out = col.to_numpy(dtype=float, na_value=np.nan)
    else:
        out = np.array([np.nan if v is None else v for v in np.asarray(col, dtype=object)],
                       dtype=float) if np.asarray(col).dtype == object else \
            np.asarray(col, dtype=float)
    if np.isinf(out).any():
        raise ValueError(f"TabularPreprocessor: {name} holds an infinite value; replace it by "
                         "a finite number or NaN (missing)")
    return out


def _one_hot_columns(m: int) -> int:
    """Columns of the one-hot block of a categorical with ``m`` categories (one ±1 for two)."""
    return 1 if m == 2 else m


def _value_name(v: float) -> str:
    """A whole number's name in feature names: ``3`` rather than ``3.0``."""
    return str(int(v)) if abs(v) < 2 ** 53 else repr(v)


def _as_str(col, missing) -> np.ndarray:
    values = np.asarray(col, dtype=object)
    out = np.empty(values.shape[0], dtype=object)
    out[~missing] = [str(v) for v in values[~missing]]
    return out


def _target_sample(y, n):
    """The rows and targets :func:`category_gain` judges columns on: ``(rows, Y)`` with ``rows``
    at most ``MAX_GAIN_ROWS`` row indices (a fixed random choice, sorted; all rows of smaller
    tables) and ``Y`` (len(rows), q) float: one 0/1 column per class for labels (the
    ``MAX_GAIN_CLASSES - 1`` most frequent, the others together in one), the standardised
    targets for real ones (float, or integers with more than ``MAX_GAIN_CLASSES`` distinct
    values); rows whose target is not finite are NaN. ``(None, None)`` without targets."""
    if y is None:
        return None, None
    y = np.asarray(y)
    if y.shape[:1] != (n,) or y.ndim > 2:
        raise ValueError(f"TabularPreprocessor: y must have {n} rows (as X), got shape "
                         f"{y.shape}")
    rows = np.arange(n)
    if n > MAX_GAIN_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(n, MAX_GAIN_ROWS, replace=False))
    y = y[rows]
    if y.dtype.kind != "f":
        labels = (y.astype(str) if y.dtype.kind == "O" else y).reshape(len(rows), -1)[:, 0]
        classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
        if y.dtype.kind not in "iu" or classes.shape[0] <= MAX_GAIN_CLASSES:
            rank = np.empty_like(counts)
            rank[np.argsort(-counts, kind="stable")] = np.arange(counts.shape[0])
            column = np.minimum(rank, MAX_GAIN_CLASSES - 1)[codes]
            return rows, (column[:, None] == np.arange(column.max() + 1)).astype(float)
    Y = y.astype(float).reshape(len(rows), -1)
    finite = np.isfinite(Y).all(axis=1)
    if not finite.any():
        return None, None
    sd = Y[finite].std(axis=0)
    Y = (Y - Y[finite].mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    Y[~finite] = np.nan
    return rows, Y


def category_gain(x, z, Y, folds: int = 5, shrink: float = 5.0) -> float:
    """How much more of the targets' variance the per-value means of a column explain than a
    smooth curve of it, cross-validated: ``(SSE_curve - SSE_means) / SSE_mean`` over ``folds``
    folds of the rows (a fixed shuffle), summed over the target columns.

    ``x`` (n,) are the column's values, ``z`` (n,) the same scaled (the curve is a linear
    spline in ``z`` with knots at its 20/40/60/80 % quantiles, fitted by least squares), ``Y``
    (n, q) the targets (rows with a NaN target are left out). The per-value means are shrunk
    towards the fold's overall mean as ``(Σ y + shrink·ȳ) / (count + shrink)``; a value not in
    the fold's training rows predicts ``ȳ``.
    """
    keep = ~np.isnan(Y).any(axis=1)
    x, z, Y = x[keep], z[keep], Y[keep]
    n = x.shape[0]
    if n < 2 * folds:
        return 0.0
    fold = np.random.default_rng(0).permutation(n) % folds
    values, code = np.unique(x, return_inverse=True)
    m = values.shape[0]
    knots = np.quantile(z, [0.2, 0.4, 0.6, 0.8])
    curve = np.column_stack([np.ones(n), z] + [np.maximum(z - k, 0.0) for k in knots])
    # Sums per fold (and per fold and value), once: a fold's training rows are the others.
    cell = fold * m + code
    counts = np.bincount(cell, minlength=folds * m).reshape(folds, m)
    sums = np.stack([np.bincount(cell, weights=col, minlength=folds * m) for col in Y.T],
                    1).reshape(folds, m, -1)
    sizes = counts.sum(axis=1)
    parts = [fold == f for f in range(folds)]
    gram = np.stack([curve[p].T @ curve[p] for p in parts])           # (folds, 6, 6)
    cross = np.stack([curve[p].T @ Y[p] for p in parts])              # (folds, 6, q)
    sse_means = sse_curve = sse_mean = 0.0
    for f, test in enumerate(parts):
        count, total = counts.sum(axis=0) - counts[f], sums.sum(axis=0) - sums[f]
        mean = total.sum(axis=0) / (n - sizes[f])
        means = (total + shrink * mean) / (count[:, None] + shrink)
        seen = count[code[test]] > 0
        by_value = np.where(seen[:, None], means[code[test]], mean)
        # least squares of the curve on the training rows, from their normal equations
        coef = np.linalg.lstsq(gram.sum(axis=0) - gram[f], cross.sum(axis=0) - cross[f],
                               rcond=None)[0]
        sse_means += float(((Y[test] - by_value) ** 2).sum())
        sse_curve += float(((Y[test] - curve[test] @ coef) ** 2).sum())
        sse_mean += float(((Y[test] - mean) ** 2).sum())
    return (sse_curve - sse_means) / sse_mean if sse_mean > 0 else 0.0


class TabularPreprocessor(TransformerMixin, BaseEstimator):
    """Numeric scaling, missing-value indicators and categorical encoding of a raw table.

    Parameters
    ----------
    max_one_hot : int, default=9
        Categorical columns with at most this many categories are one-hot encoded (RealMLP's
        ``max_one_hot_cat_size``); larger ones become one column of integer codes.
    clip : float, default=3.0
        Bound of the smooth clip of the scaled numeric columns (None: no clip).
    one_hot_width : int or None, default=None
        Most one-hot columns in all: the categoricals of at most ``max_one_hot`` categories
        are one-hot encoded smallest first while their columns fit in this width, the others
        become code columns too. None: no limit.
    max_integer_categories : int or None, default=None
        Numeric columns whose values in the training rows are whole numbers, with more than 2
        and at most this many distinct values, are also encoded as categoricals (one category
        per value; one-hot or code columns as ``max_one_hot`` and ``one_hot_width`` say), as
        well as scaled: all of them, or with ``y`` given to :meth:`fit` those whose values act
        as categories of ``y`` (module docstring). None: no such encoding.
    min_category_count : int, default=1
        Categories of a categorical column (a missing value included) seen fewer times than
        this in the training rows are left out of ``categories_`` and encoded as unseen ones
        (as scikit-learn's ``OneHotEncoder(min_frequency=...)`` groups them): with 2, a column
        of names or ticket numbers, one per row, no longer gives each training row a column
        or an embedding of its own. 1 keeps every category.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str (when X was a DataFrame with string column names)
    kinds_ : list of str
        ``"numeric"``, ``"datetime"``, ``"timedelta"``, ``"categorical"`` or ``"boolean"`` for
        each input column.
    median_, scale_ : ndarray (n_numeric,)
        Centre and factor of each numeric, date-time or duration column (in seconds for the
        last two).
    categories_ : list of ndarray
        The categories (as str) of each categorical/boolean column, in the order encoded; a
        missing value seen in training is the category ``None`` (last). Only those seen at
        least ``min_category_count`` times (possibly none).
    integer_columns_ : list of int
        The numeric columns (indices into ``median_``) also encoded as categoricals.
    integer_values_ : list of ndarray
        Their categories: the sorted distinct values of each in the training rows.
    n_numeric_out_, n_indicators_, n_one_hot_ : int
        Widths of the output blocks.
    cardinalities_ : list of int
        Number of categories of each code column (the last block).

    Examples
    --------
    >>> import pandas as pd
    >>> from xpnn.sklearn import TabularPreprocessor
    >>> df = pd.DataFrame({"age": [22.0, 38.0, None, 35.0],
    ...                    "sex": ["male", "female", "female", "male"]})
    >>> pre = TabularPreprocessor().fit(df)
    >>> pre.get_feature_names_out().tolist()
    ['age', 'age_missing', 'sex_male']
    >>> pre.transform(df).round(2)      # float64 (n, pre.n_features_out_)
    array([[-1.43,  0.  ,  1.  ],
           [ 0.37,  0.  , -1.  ],
           [ 0.  ,  1.  , -1.  ],
           [ 0.  ,  0.  ,  1.  ]])
    """

    def __init__(self, max_one_hot: int = 9, clip: float | None = 3.0,
                 one_hot_width: int | None = None, max_integer_categories: int | None = None,
                 min_category_count: int = 1):
        self.max_one_hot = max_one_hot
        self.clip = clip
        self.one_hot_width = one_hot_width
        self.max_integer_categories = max_integer_categories
        self.min_category_count = min_category_count

    # ---------------------------------------------------------------- checks
    def _check_params(self):
        if not isinstance(self.max_one_hot, numbers.Integral) or self.max_one_hot < 1:
            raise ValueError(f"TabularPreprocessor: max_one_hot must be an int >= 1, got "
                             f"{self.max_one_hot!r}")
        if self.one_hot_width is not None and (
                not isinstance(self.one_hot_width, numbers.Integral)
                or isinstance(self.one_hot_width, bool) or self.one_hot_width < 0):
            raise ValueError(f"TabularPreprocessor: one_hot_width must be an int >= 0 or None, "
                             f"got {self.one_hot_width!r}")
        m = self.max_integer_categories
        if m is not None and (not isinstance(m, numbers.Integral) or isinstance(m, bool)
                              or m < 3):
            raise ValueError(f"TabularPreprocessor: max_integer_categories must be an int >= 3 "
                             f"or None, got {m!r}")
        k = self.min_category_count
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"TabularPreprocessor: min_category_count must be an int >= 1, "
                             f"got {k!r}")
        if self.clip is not None and not (isinstance(self.clip, numbers.Real)
                                          and np.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"TabularPreprocessor: clip must be a number > 0 or None, got "
                             f"{self.clip!r}")

    def _validate(self, X, reset):
        if hasattr(X, "__dataframe__") and not (pd is not None and isinstance(X, pd.DataFrame)):
            X = pd.api.interchange.from_dataframe(X) if pd is not None else X
        if pd is None or not isinstance(X, pd.DataFrame):
            if hasattr(X, "toarray") or hasattr(X, "tocsr"):
                raise TypeError("TabularPreprocessor: sparse input is not supported; pass a "
                                "dense array or a DataFrame")
            X = np.asarray(X)
            if X.ndim == 1:
                raise ValueError("TabularPreprocessor: expected a 2-D X (rows, columns), got a "
                                 "1-D array. Reshape your data with X.reshape(-1, 1) for one "
                                 "column or X.reshape(1, -1) for one row")
        validate_data(self, X, reset=reset, skip_check_array=True)
        if X.ndim != 2:
            raise ValueError(f"TabularPreprocessor: X must be 2-D, got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError("TabularPreprocessor: X has 0 rows; at least 1 is required")
        if reset and X.shape[1] == 0:
            raise ValueError(f"TabularPreprocessor: 0 feature(s) (shape={X.shape}) while a "
                             "minimum of 1 is required.")
        return X

    # ---------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Learn the kinds, scales and categories of ``X``'s columns (rows × columns).

        Parameters
        ----------
        X : DataFrame or array-like (n_samples, n_features)
            The raw table.
        y : array-like (n_samples,) or (n_samples, n_targets), optional
            Targets, used only with ``max_integer_categories`` to choose the whole-number
            columns encoded as categoricals: class labels (str, bool, object, or integers
            with at most 100 distinct values) or real targets (float, or more integers).
            Rows whose target is not finite are left out of that choice; tables of more than
            100,000 rows are judged on 100,000 of them.

        Returns
        -------
        TabularPreprocessor
            ``self``, fitted.
        """
        self._check_params()
        # Everything is computed on locals first: an error leaves a fitted preprocessor as it was.
        state = {}
        saved = {k: v for k, v in vars(self).items() if k.endswith("_")}
        try:
            X = self._validate(X, reset=True)
            state = self._learn(X, *_target_sample(y, X.shape[0]))
        except Exception:
            for k in [k for k in vars(self) if k.endswith("_")]:
                delattr(self, k)
            vars(self).update(saved)
            raise
        vars(self).update(state)
        return self

    def _learn(self, X, rows=None, Y=None):
        names = _column_names(X)
        kinds, medians, scales, indicators, categories = [], [], [], [], []
        integer_columns, integer_values = [], []
        for col, name in zip(_columns(X), names, strict=True):
            missing = _missing(col)
            if missing.all():
                raise ValueError(f"TabularPreprocessor: {name} has no value (every row is "
                                 "missing); drop it")
            kind = _kind(col)
            if kind in NUMBERS:
                column = _as_float(col, name, kind)
                x = column[~missing]
                median = float(np.median(x))
                q25, q75 = np.quantile(x, [0.25, 0.75])
                spread = float(q75 - q25) or 0.5 * float(x.max() - x.min())
                kinds.append(kind)
                medians.append(median)
                scales.append(1.0 / spread if spread > 0 else 0.0)
                indicators.append(bool(missing.any()))
                values = None if kind != NUMERIC else self._integer_values(
                    x, column, missing, rows, Y, median, scales[-1])
                if values is not None:
                    integer_columns.append(len(medians) - 1)
                    integer_values.append(values)
                continue
            strings = _as_str(col, missing)
            present = strings[~missing]
            if kind == CATEGORICAL and _looks_numeric(present) \
                    and not isinstance(getattr(col, "dtype", None), getattr(
                        pd, "CategoricalDtype", ())):
                raise ValueError(
                    f"TabularPreprocessor: {name} holds strings that all look like numbers "
                    f"(e.g. {present[0]!r}); convert it to numbers (pd.to_numeric) if they are "
                    "amounts, or to a category (.astype('category')) if they are codes")
            found, counts = np.unique(present, return_counts=True)
            cats = [str(c) for c, k in zip(found, counts, strict=True)
                    if k >= self.min_category_count]
            if missing.sum() >= self.min_category_count:
                cats.append(None)
            kinds.append(kind)
            categories.append(np.array(cats, dtype=object))
        n_num = sum(k in NUMBERS for k in kinds)
        sizes = [len(c) for c in categories] + [len(v) for v in integer_values]
        small = [m <= self.max_one_hot for m in sizes]
        if self.one_hot_width is not None:        # the smallest first, while they fit
            used = 0
            for i in sorted(range(len(sizes)), key=sizes.__getitem__):
                small[i] = small[i] and used + _one_hot_columns(sizes[i]) <= self.one_hot_width
                used += _one_hot_columns(sizes[i]) if small[i] else 0
        return {
            "kinds_": kinds, "median_": np.array(medians, dtype=float),
            "scale_": np.array(scales, dtype=float), "indicators_": np.array(indicators, bool),
            "categories_": categories, "one_hot_": small,
            "integer_columns_": integer_columns, "integer_values_": integer_values,
            "n_numeric_out_": n_num, "n_indicators_": int(sum(indicators)),
            "n_one_hot_": int(sum(_one_hot_columns(m)
                                  for m, s in zip(sizes, small, strict=True) if s)),
            "cardinalities_": [m for m, s in zip(sizes, small, strict=True) if not s],
        }

    def _integer_values(self, x, column, missing, rows, Y, median, scale):
        """The sorted distinct values of a numeric column's present values ``x`` when they are
        whole numbers, more than 2 and at most ``max_integer_categories`` of them, and (with
        targets ``Y`` of the rows ``rows`` of the whole ``column``) act as categories; else
        None."""
        m = self.max_integer_categories
        if m is None or not np.all(np.isfinite(x)) or np.any(x != np.round(x)):
            return None
        values = np.unique(x)
        if not 2 < values.shape[0] <= m:
            return None
        if Y is not None:
            present = ~missing[rows]
            xs = column[rows][present]
            if category_gain(xs, self._scaled(xs, median, scale), Y[present]) \
                    < MIN_CATEGORY_GAIN:
                return None
        return values

    def _scaled(self, x, median, scale):
        """A numeric column's output: ``(x - median) · scale``, smoothly clipped at ``clip``."""
        z = (x - median) * scale
        return z if self.clip is None else smooth_clip(z, float(self.clip))

    @staticmethod
    def _codes(x, values):
        """Index of each ``x`` in the sorted ``values``; -1 where absent (or NaN)."""
        at = np.minimum(np.searchsorted(values, x), values.shape[0] - 1)
        return np.where(values[at] == x, at, -1)

    @staticmethod
    def _encode(code, m, one_hot, codes):
        """Append category codes ``code`` (-1: unseen) of ``m`` categories as one-hot columns
        (one ±1 column for two categories; unseen: zeros) or as one code column."""
        if one_hot is None:
            codes.append(code.astype(float))
        elif m == 2:
            one_hot.append(np.where(code < 0, 0.0, np.where(code == 1, 1.0, -1.0)))
        else:
            one_hot.extend((code[:, None] == np.arange(m)).astype(float).T)

    @property
    def n_features_out_(self) -> int:
        """Width of :meth:`transform`'s output: numeric, indicator, one-hot and code columns."""
        check_is_fitted(self, "kinds_")
        return (self.n_numeric_out_ + self.n_indicators_ + self.n_one_hot_
                + len(self.cardinalities_))

    # ---------------------------------------------------------------- transform
    def transform(self, X):
        """The encoded table.

        Parameters
        ----------
        X : DataFrame or array-like (n_samples, n_features)
            A table with the columns seen by :meth:`fit`.

        Returns
        -------
        numpy.ndarray (n_samples, n_features_out)
            ``n_features_out_`` float64 columns: the scaled numeric columns, the missing-value
            indicators, the one-hot columns, then the integer codes of the large categoricals.
        """
        check_is_fitted(self, "kinds_")
        X = self._validate(X, reset=False)
        names = _column_names(X)
        n = X.shape[0]
        numeric, indicators, one_hot, codes, raw = [], [], [], [], []
        i_num = i_cat = 0
        for col, name, kind in zip(_columns(X), names, self.kinds_, strict=True):
            missing = _missing(col)
            actual = _kind(col) if not missing.all() else kind
            if actual != kind:
                raise ValueError(f"TabularPreprocessor: {name} was {kind} when fitted but is "
                                 f"{actual} now (dtype {getattr(col, 'dtype', None)})")
            if kind in NUMBERS:
                x = _as_float(col, name, kind)
                raw.append(x)
                median = self.median_[i_num]
                numeric.append(self._scaled(np.where(missing, median, x), median,
                                            self.scale_[i_num]))
                if self.indicators_[i_num]:
                    indicators.append(missing.astype(float))
                i_num += 1
                continue
            cats = self.categories_[i_cat]
            strings = _as_str(col, missing)
            lookup = {c: k for k, c in enumerate(cats)}
            code = np.array([lookup.get(s, -1) for s in strings], dtype=np.int64)
            self._encode(code, len(cats), one_hot if self.one_hot_[i_cat] else None, codes)
            i_cat += 1
        for j, values in zip(self.integer_columns_, self.integer_values_, strict=True):
            self._encode(self._codes(raw[j], values), len(values),
                         one_hot if self.one_hot_[i_cat] else None, codes)
            i_cat += 1
        cols = numeric + indicators + one_hot + codes
        if not cols:
            return np.zeros((n, 0))
        return np.stack(cols, axis=1)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns (``age``, ``age_missing``, ``sex_male``, ``city_code``).

        Parameters
        ----------
        input_features : None
            Ignored: the names seen by :meth:`fit` are used (``x0``, ``x1``... for arrays).

        Returns
        -------
        numpy.ndarray of str (n_features_out,)
        One name per output column.
        """
        check_is_fitted(self, "kinds_")
        base = (list(self.feature_names_in_) if hasattr(self, "feature_names_in_")
                else [f"x{j}" for j in range(self.n_features_in_)])
        num = [b for b, k in zip(base, self.kinds_, strict=True) if k in NUMBERS]
        cat = [b for b, k in zip(base, self.kinds_, strict=True) if k not in NUMBERS]
        out = num + [f"{b}_missing" for b, i in zip(num, self.indicators_, strict=True) if i]
        cat += [num[j] for j in self.integer_columns_]
        cats = self.categories_ + [[_value_name(v) for v in values]
                                   for values in self.integer_values_]
        for b, c, small in zip(cat, cats, self.one_hot_, strict=True):
            if small:
                out += [f"{b}_{c[1]}"] if len(c) == 2 else [f"{b}_{v}" for v in c]
        out += [f"{b}_code" for b, small in zip(cat, self.one_hot_, strict=True) if not small]
        return np.array(out, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags

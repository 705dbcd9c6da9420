"""What host data is and how it reads as a NumPy array: SciPy sparse matrices, pandas frames,
data in files (memmaps, h5py, zarr), nested lists; and messages that say where bad values are.

Shared by the input checks (:mod:`xpnn.inputs`) and the batch sources (:mod:`xpnn.data`); nothing
here converts to a backend or reads more than it is asked to.
"""

from __future__ import annotations

import numpy as np

from .backend import to_numpy


def is_sparse(X) -> bool:
    """Whether ``X`` is a SciPy sparse matrix or array (checked without importing SciPy)."""
    return type(X).__module__.startswith("scipy.sparse")


def _is_pandas(X) -> bool:
    return type(X).__module__.startswith("pandas")


def is_frame(X) -> bool:
    """Whether ``X`` is a pandas DataFrame or Series (checked without importing pandas)."""
    return _is_pandas(X) and hasattr(X, "dtypes") and hasattr(X, "iloc")


def in_file(X) -> bool:
    """Whether host data ``X`` lives in a file: a NumPy memmap, an ``h5py`` dataset or a
    ``zarr`` array (checked without importing h5py or zarr). Such data is always read one
    batch at a time, whatever its size."""
    return isinstance(X, np.memmap) or type(X).__module__.split(".")[0] in ("h5py", "zarr")


def check_frame(X, what="X") -> None:
    """Refuse a pandas frame (or Series) with columns that are not numbers: ``category``,
    strings, objects, dates. Numeric NumPy dtypes, ``bool`` and pandas' nullable numbers
    (``Int64``, ``Float64``, ``boolean``...) are accepted. The TypeError names the columns and
    the encoder to use."""
    dtypes = X.dtypes.items() if hasattr(X, "columns") else [(X.name, X.dtype)]
    bad = [f"{label!r} ({dtype})" for label, dtype in dtypes
           if getattr(dtype, "kind", "O") not in "biuf"]
    if bad:
        one = len(bad) == 1
        raise TypeError(
            f"{what} has {'a column' if one else 'columns'} that {'is' if one else 'are'} not "
            f"numeric: {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}. Encode "
            "categories and strings as numbers first, e.g. with scikit-learn's OneHotEncoder "
            "or OrdinalEncoder in a ColumnTransformer (in a Pipeline with "
            "xpnn.sklearn.MLPClassifier or MLPRegressor)")


def frame_to_numpy(X) -> np.ndarray:
    """A numeric pandas frame (see :func:`check_frame`) as a NumPy array: of the columns' common
    dtype when they all have NumPy dtypes, else float64 with pandas' NA as NaN."""
    dtypes = list(X.dtypes) if hasattr(X, "columns") else [X.dtype]
    if all(isinstance(d, np.dtype) for d in dtypes):
        return X.to_numpy(dtype=np.result_type(*dtypes))
    return X.to_numpy(dtype=np.float64, na_value=np.nan)


def check_frame_missing(X, what="X") -> None:
    """Raise ValueError naming the first row and column of a pandas frame that holds a
    missing value (NaN, or pandas' NA in a nullable column)."""
    missing = X.isna().to_numpy()
    if not missing.any():
        return
    missing = missing.reshape(missing.shape[0], -1)
    n = int(missing.sum())
    i, j = np.unravel_index(int(np.argmax(missing)), missing.shape)
    column = X.columns[j] if hasattr(X, "columns") else X.name
    raise ValueError(f"{what} contains {n} missing value{'s' if n > 1 else ''} (NaN or NA; "
                     f"{'the first ' if n > 1 else ''}at row {i} (index {X.index[i]!r}), "
                     f"column {column!r}): fill missing values (e.g. with scikit-learn's "
                     "SimpleImputer) or drop those rows")


def as_array(X, what="X") -> np.ndarray:
    """``X`` (host data, or a host array of another library) as a NumPy array. Nested lists
    of unequal lengths raise ValueError naming ``what`` (instead of NumPy's "inhomogeneous
    shape"), with a hint for a list of ``(x, y)`` batches whose ``x`` are not arrays."""
    try:
        return np.asarray(to_numpy(X))
    except ValueError as exc:
        if "inhomogeneous" not in str(exc):
            raise
    batches = isinstance(X, (list, tuple)) and len(X) > 0 and all(
        isinstance(item, (tuple, list)) and len(item) in (2, 3)
        and isinstance(item[0], (list, tuple, np.ndarray)) for item in X)
    hint = (" As a list of (x, y) batches, give each batch's x as an array (np.asarray(x)), "
            "of shape (rows, features)" if batches else "")
    raise ValueError(f"{what} is ragged: its rows (or items) are not all of the same length, "
                     f"so it is not an array.{hint}") from None


def host_shape(X) -> tuple:
    """Shape of host data of any supported kind, without reading it."""
    shape = getattr(X, "shape", None)
    if shape is None:
        return np.shape(as_array(X))
    return tuple(shape)


def host_dtype(X):
    """NumPy dtype of host data, or None for a frame of mixed column types."""
    if _is_pandas(X):
        dtypes = set(X.dtypes) if hasattr(X, "columns") else {X.dtype}
        return np.result_type(*dtypes) if all(
            isinstance(d, np.dtype) for d in dtypes) else None
    dtype = getattr(X, "dtype", None)
    return None if dtype is None else np.dtype(dtype)



def count_and_where(bad: np.ndarray, what: str, plural: str | None = None) -> str:
    """``"3 NaN or infinite values (the first at row 2, column 5)"`` for the boolean mask
    ``bad`` (1-D: ``"at index 2"``); ``what`` is the singular, ``plural`` the plural (default
    ``what + " values"`` / ``what + " value"``)."""
    n = int(np.count_nonzero(bad))
    if plural is None:
        what, plural = f"{what} value", f"{what} values"
    first = np.unravel_index(int(np.argmax(bad.reshape(-1))), bad.shape)
    if bad.ndim == 1:
        where = f"at index {first[0]}"
    elif bad.ndim == 2:
        where = f"at row {first[0]}, column {first[1]}"
    else:
        where = f"at {tuple(int(i) for i in first)}"
    return f"{n} {what if n == 1 else plural} ({'' if n == 1 else 'the first '}{where})"

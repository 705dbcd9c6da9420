"""Which batch source (:mod:`xpnn.data`) serves what the user passed to ``fit``/``evaluate``/
``predict``: device arrays up front, host data streamed batch by batch, or an iterable of
batches; the validation split; the model's input width taken from the first data it sees.
"""

from __future__ import annotations

import numpy as np

from . import data
from .backend import backend_of
from .callbacks import Callback
from .inputs import check_X_shape, prepare_w, prepare_Xy, prepare_y

__all__ = ["building_from", "check_host_X", "fit_sources", "make_source", "split_source",
           "streams"]


def streams(model, X) -> bool:
    """Whether host data ``X`` is read one batch at a time rather than converted up front
    (a memmap, h5py or zarr source, sparse data, or in-memory host data whose converted size
    exceeds ``model.resident_budget``)."""
    if backend_of(X) is not None:
        return False
    if data.is_sparse(X) or data.in_file(X):
        return True                       # never densify a sparse matrix or load a file
    if not hasattr(X, "shape"):
        return False                      # lists and the like: converted up front
    if (type(X) is np.ndarray and X.dtype == np.dtype(model.dtype)
            and model.backend.family == "numpy"):
        return False                      # already the model's array: nothing to copy
    shape = data.host_shape(X)
    size = int(np.prod(shape)) * np.dtype(model.dtype).itemsize
    return size > model.resident_budget


def check_host_X(model, X, what="X"):
    """Shape and dtype checks of host data that is streamed (the rows are checked as read)."""
    shape = data.host_shape(X)
    if data.is_frame(X):
        data.check_frame(X, what)
    dtype = data.host_dtype(X)
    if dtype is not None and dtype.kind not in "biuf":
        raise TypeError(f"{what} must be numeric, got dtype {dtype}")
    check_X_shape(model, shape, what)
    return shape


def make_source(model, X, y, w=None, what="X", steps=None):
    """A batch source for ``(X, y, w)``, or for an iterable of batches when ``y`` is None."""
    if y is None and data.is_batch_iterable(X):
        if w is not None:
            raise ValueError(f"fit: give sample weights as the third item of each batch of "
                             f"{what}, not as sample_weight")
        return data.IterableBatches(X, steps, what="data" if what == "X" else what)
    if steps is not None:
        raise ValueError("fit: steps_per_epoch applies only to a generator of batches")
    if streams(model, X):
        shape = check_host_X(model, X, what)
        t = prepare_y(model, y, shape[0], what.replace("X", "y", 1))
        wd = None if w is None else prepare_w(model, w, shape[0])
        return data.HostBatches(X, t, wd, what)
    Xd, td = prepare_Xy(model, X, y, what)
    wd = None if w is None else prepare_w(model, w, Xd.shape[0])
    return data.ArrayBatches(Xd, td, wd)


def split_source(source, cut):
    """``(first cut rows, the rest)`` of an array or host batch source (validation_split)."""
    if isinstance(source, data.ArrayBatches):
        w = source.w
        return (data.ArrayBatches(source.X[:cut, ...], source.t[:cut, ...],
                                  None if w is None else w[:cut]),
                data.ArrayBatches(source.X[cut:, ...], source.t[cut:, ...],
                                  None if w is None else w[cut:]))
    n, w = source.n, source.w
    return (data.HostBatches(source.X, source.t[:cut, ...], None if w is None else w[:cut],
                             source.what, rows=slice(0, cut)),
            data.HostBatches(source.X, source.t[cut:, ...], None if w is None else w[cut:],
                             "X_val", rows=slice(cut, n)))


def fit_sources(model, X, y, w, validation_data, validation_split, callbacks,
                steps=None, validation_steps=None):
    """Batch sources for ``fit``: ``(train, validation or None)``. A callback monitoring a
    value ``fit`` will not log is refused here, before an epoch changes the weights."""
    source = make_source(model, X, y, w, steps=steps)
    val = None
    iterable_val = validation_data is not None and data.is_batch_iterable(validation_data)
    if validation_steps is not None and not iterable_val:
        raise ValueError("fit: validation_steps applies only to validation_data given as "
                         "an iterable of batches")
    if validation_data is not None:
        if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3) \
                and not iterable_val:
            vw = validation_data[2] if len(validation_data) == 3 else None
            val = make_source(model, validation_data[0], validation_data[1], vw, "X_val")
        elif iterable_val:
            val = data.IterableBatches(validation_data, validation_steps,
                                       what="validation_data")
        else:
            raise ValueError("fit: validation_data must be a tuple (X_val, y_val) or "
                             "(X_val, y_val, sample_weight_val), or an iterable of batches")
    elif validation_split:
        if not source.replayable or source.n is None:
            raise ValueError("fit: validation_split needs array data; pass "
                             "validation_data with an iterable of batches")
        n = source.n
        n_val = int(n * validation_split)
        if n_val < 1 or n_val >= n:
            raise ValueError(f"fit: validation_split={validation_split} of "
                             f"{n} samples leaves an empty split")
        source, val = split_source(source, n - n_val)
    _check_monitors(model, callbacks, val is not None)
    return source, val


def _check_monitors(model, callbacks, validated):
    """Refuse a callback monitoring a value the epoch logs will not have (unless a user
    callback listed before it may add keys)."""
    logged = ["loss", *(m.name for m in model.metrics)]
    if validated:
        logged += [f"val_{k}" for k in logged]
    adds_keys = False
    for cb in callbacks:
        monitor = getattr(cb, "monitor", None)
        if isinstance(monitor, str) and monitor not in logged and not adds_keys:
            if not validated and monitor.startswith("val_") and monitor[4:] in logged:
                raise ValueError(f"fit: {type(cb).__name__} monitors {monitor!r}, but "
                                 "there is no validation data: pass validation_data or "
                                 "validation_split")
            raise ValueError(f"fit: {type(cb).__name__} monitor {monitor!r} is not among "
                             f"the logged values {logged} (metrics come from "
                             "compile(metrics=[...]))")
        adds_keys = adds_keys or (
            not type(cb).__module__.startswith("xpnn.")
            and getattr(type(cb), "on_epoch_end", None) is not Callback.on_epoch_end)


def building_from(model, X, prepare):
    """Run ``prepare()`` (the data checks) and return its result. If the weights do not exist
    yet, their input width is taken from ``X`` (or, when ``X`` is None, from the first batch of
    the iterable source ``prepare`` returns first) for the checks and they are built only when
    the checks pass: a bad call leaves the model as it was."""
    if not model.layers:
        raise ValueError("Sequential: the model has no layers")
    if model.built:
        return prepare()
    if X is None:
        result = prepare()
        shape = result[0].peek_shape(model)
        if len(shape) != 2:
            raise ValueError(f"fit: batches of x must be 2-D (n, n_features), got {shape}")
        model.build(shape[1])
        return result
    shape = tuple(data.host_shape(X) if backend_of(X) is None else X.shape)
    if len(shape) != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {shape}")
    model.n_features_in = shape[1]
    try:
        result = prepare()
    except Exception:
        model.n_features_in = None
        raise
    model.build(shape[1])
    return result

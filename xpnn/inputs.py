"""Checking and converting what a user passes to a model: ``X``, targets and sample weights.

Every function takes the model (its backend, dtype, width and loss) and returns arrays of the
model's backend and dtype, or raises a TypeError/ValueError naming the argument, the expected and
the actual shape or dtype. Nothing here changes the model.
"""

from __future__ import annotations

import numpy as np

from . import hostdata as data
from .backend import backend_of, to_numpy

__all__ = ["cast_finite", "check_X_shape", "prepare_X", "prepare_Xy", "prepare_w", "prepare_y"]


def prepare_X(model, X, what="X", stager=None):
    """``X`` checked (numeric, 2-D, the model's width, finite after the cast) as an array of
    the model's backend and dtype. Host data goes through ``stager`` when given (CuPy: a
    pinned buffer copied on a second stream, :mod:`xpnn.staging`)."""
    be = model.backend
    owner = backend_of(X)
    if owner is not None and owner.family != be.family:
        name = what if what.isidentifier() else "x"
        raise TypeError(f"{what} is a {owner.name} array but the model's backend is "
                        f"{be.name}: convert it with xpnn.to_numpy({name}) or move the model "
                        f"with model.to({owner.name!r})")
    if owner is None:
        if data.is_frame(X):
            data.check_frame(X, what)
            data.check_frame_missing(X, what)
            X = data.frame_to_numpy(X)
        host = data.as_array(X, what)
        if host.dtype.kind not in "biuf":
            raise TypeError(f"{what} must be numeric, got dtype {host.dtype}")
        shape = host.shape
    else:
        shape = tuple(X.shape)
    check_X_shape(model, shape, what)
    if owner is None:
        cast = cast_finite(host, model.dtype, what)
        return be.asarray(cast, dtype=model.dtype) if stager is None else stager.put(cast)
    xp = be.xp
    X = be.asarray(X, dtype=model.dtype)
    if owner.name != be.name:  # same library, other device (torch cpu -> cuda)
        X = be.asarray(to_numpy(X), dtype=model.dtype)
    if not bool(xp.all(xp.isfinite(X))):    # checked after the cast to the model's dtype
        bad = ~np.isfinite(np.asarray(to_numpy(X)))
        raise ValueError(f"{what} contains {data.count_and_where(bad, 'NaN or infinite')} "
                         f"once cast to {model.dtype}")
    return X


def prepare_y(model, y, n_samples, what="y"):
    """Targets for ``n_samples`` rows, as the model's loss expects them, on its backend."""
    if y is None:
        raise TypeError(f"{what} is required")
    host = data.as_array(y, what)
    if host.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be numeric, got dtype {host.dtype}"
                        + (" (encode string labels as integers, e.g. with "
                           "sklearn.preprocessing.LabelEncoder)"
                           if host.dtype.kind in "OUS" else ""))
    if host.shape[:1] != (n_samples,):
        raise ValueError(f"{what} has {host.shape[0] if host.ndim else 0} samples but "
                         f"{what.replace('y', 'X', 1)} has {n_samples} (shape of {what}: "
                         f"{host.shape})")
    if host.dtype.kind == "f":
        cast_finite(host, model.dtype, what)
    t = model.loss.prepare_targets(host, model.n_outputs)
    return model.backend.asarray(t, dtype="int64" if t.dtype.kind == "i" else model.dtype)


def prepare_Xy(model, X, y, what="X"):
    """``X`` and its targets as checked device arrays (names in messages: X/y, X_val/y_val)."""
    Xd = prepare_X(model, X, what)
    return Xd, prepare_y(model, y, Xd.shape[0], what.replace("X", "y", 1))


def prepare_w(model, w, n_samples, what="sample_weight"):
    """Per-sample weights as a checked device array of the model's dtype (N,)."""
    host = data.as_array(w, what)
    if host.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be numeric, got dtype {host.dtype}")
    if host.shape != (n_samples,):
        raise ValueError(f"{what} must have shape ({n_samples},), one weight per sample, got "
                         f"shape {host.shape}")
    cast = host.astype(model.dtype)
    if not np.all(np.isfinite(cast)) or np.any(cast < 0):
        raise ValueError(f"{what} must hold finite values >= 0 in {model.dtype}")
    if not np.any(cast > 0):
        raise ValueError(f"{what} is zero for every sample")
    return model.backend.asarray(cast, dtype=model.dtype)


def check_X_shape(model, shape, what="X"):
    """Raise ValueError unless ``shape`` is (n > 0, the model's width > 0)."""
    if len(shape) != 2:
        raise ValueError(f"{what} must be 2-D (n_samples, n_features), got shape {shape}"
                         + (": use X.reshape(-1, 1) for a single feature"
                            if len(shape) == 1 else ""))
    if shape[0] == 0:
        raise ValueError(f"{what} has no samples (shape {shape})")
    n_in = model.n_features_in
    if n_in is not None and shape[1] != n_in:
        first = next((i for i, layer in enumerate(model.layers) if layer.in_features), 0)
        raise ValueError(f"{what} has {shape[1]} features but layer {first} "
                         f"({model.layers[first]!r}) expects {n_in}: got {what} of shape "
                         f"{shape}, expected (n_samples, {n_in})")
    if shape[1] == 0:
        raise ValueError(f"{what} has no features (shape {shape}): a network needs at "
                         "least one input feature")


def cast_finite(host: np.ndarray, dtype: str, what: str) -> np.ndarray:
    """``host`` (a real NumPy array) cast to ``dtype``, after checking that it holds no NaN or
    inf and nothing that the cast turns into inf (1e300 in float32). Raises ValueError naming
    ``what``, the count and the range."""
    with np.errstate(over="ignore", invalid="ignore"):
        cast = np.asarray(host, dtype=dtype)
    if host.dtype.kind == "f" and not np.all(np.isfinite(cast)):
        bad = ~np.isfinite(host)
        if bad.any():
            raise ValueError(f"{what} contains {data.count_and_where(bad, 'NaN or infinite')}")
        raise ValueError(f"{what} contains "
                         f"{data.count_and_where(~np.isfinite(cast), 'value', 'values')} beyond "
                         f"the {dtype} range (largest magnitude "
                         f"{float(np.max(np.abs(host))):.3g}, {dtype} ends at "
                         f"{float(np.finfo(dtype).max):.3g}): scale the data or use "
                         "dtype='float64'")
    return cast

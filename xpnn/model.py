"""The :class:`Sequential` model: a stack of layers trained by backpropagation.

One training step (``train_on_batch``) is the whole algorithm:

1. forward: ``a₀ = x``, ``aᵢ = layerᵢ.forward(aᵢ₋₁)``;
2. loss: ``L = loss(a_last, t)`` and ``δ = dL/da_last``;
3. backward: ``δ = layerᵢ.backward(δ)`` from the last layer to the first, each layer storing the
   gradients of its parameters;
4. update: ``optimizer.step(params)``.

When the last layer is Softmax (Sigmoid) and the loss is the categorical (binary) cross-entropy,
steps 1-3 skip that activation and use the loss's fused, numerically stable form on the logits.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from . import fastpath
from .backend import DTYPES, backend_of, get_backend, host_rng, to_numpy
from .callbacks import History
from .errors import TrainingDivergedError, diverged
from .layers import LAYERS, Layer
from .losses import LOSS_CLASSES, get_loss
from .metrics import Accuracy, get_metric
from .optimizers import OPTIMIZERS, get_optimizer

FORMAT = "xpnn-model"
FORMAT_VERSION = 1

#: Rows densified at a time when a sparse matrix is predicted or evaluated in one call.
SPARSE_BLOCK = 4096


def _is_sparse(X) -> bool:
    """A SciPy sparse matrix or array (host data, densified batch by batch)."""
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


class Sequential:
    """A linear stack of layers with a Keras-like training API.

    Parameters
    ----------
    *layers : Layer
        The layers, input to output (a single list is accepted too).
    backend : str
        ``"numpy"`` (default), ``"cupy"``, ``"torch"`` or ``"array_api_strict"``; see
        :func:`xpnn.available_backends`.
    dtype : {"float32", "float64"}
        Floating dtype of weights and computations.
    seed : int or None
        Seed of the host random generator behind initial weights, shuffling and dropout. The same
        seed gives the same initial weights, and the same run, on every backend.

    Examples
    --------
    >>> model = Sequential(Dense(2, 8), Tanh(), Dense(8, 1), Sigmoid(), seed=0)
    >>> model.compile(loss="binary_crossentropy", optimizer=Adam(0.05), metrics=["accuracy"])
    >>> history = model.fit(X, y, epochs=500, batch_size=4, verbose=0)
    >>> model.predict(X)
    """

    def __init__(self, *layers, backend="numpy", dtype: str = "float32", seed=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layer {i} must be an xpnn Layer, got "
                                f"{type(layer).__name__}")
        if dtype not in DTYPES:
            raise ValueError(f"Sequential: dtype must be one of {DTYPES}, got {dtype!r}")
        self.layers: list[Layer] = list(layers)
        self.backend = get_backend(backend)
        self.dtype = dtype
        self.seed = seed
        self.rng = host_rng(seed)
        self.loss = None
        self.optimizer = None
        self.metrics = []
        self.params = []
        self.built = False
        self.stop_training = False
        self.history = None
        self._fused = False
        self.n_features_in, self.n_outputs = self._check_layer_shapes()
        if self.layers and self.n_features_in is not None:
            self.build(self.n_features_in)

    # ------------------------------------------------------------------ construction
    def _check_layer_shapes(self):
        """Walk the stack once, checking that consecutive widths agree.

        Returns ``(n_features_in, n_outputs)``; either may be None when it depends on the data.
        """
        first_in = None
        features, source = None, None
        for i, layer in enumerate(self.layers):
            expected = layer.in_features
            if expected is not None:
                if features is None and source is None:
                    first_in = expected
                elif features is not None and features != expected:
                    raise ValueError(
                        f"Sequential: layer {i} ({layer!r}) expects {expected} input features "
                        f"but layer {source[0]} ({source[1]!r}) outputs {features}")
            out = layer.output_features(features if features is not None else expected)
            if out != features:
                features, source = out, (i, layer)
        return first_in, features

    def build(self, n_features_in: int):
        """Create the weights for inputs with ``n_features_in`` features (``fit`` does this when
        the first layer left ``in_features`` open)."""
        features = n_features_in
        for layer in self.layers:
            layer.build(self.backend, self.dtype, self.rng, features)
            features = layer.output_features(features)
        self.n_features_in, self.n_outputs = n_features_in, features
        self.params = [p for layer in self.layers for p in layer.params]
        first = next((layer for layer in self.layers if layer.params), None)
        for layer in self.layers:
            # The first layer with weights needs no dL/dx (nothing below it learns).
            layer.input_grad_needed = layer is not first
        self.built = True
        return self

    def compile(self, loss="mse", optimizer="adam", metrics=()):
        """Choose the loss, the optimizer and the metrics to log.

        Parameters
        ----------
        loss : str or Loss
            ``"mse"``, ``"binary_crossentropy"``, ``"categorical_crossentropy"`` or
            ``"crossentropy"`` (binary after a Sigmoid or a single output, categorical
            otherwise), or a :class:`~xpnn.losses.Loss`.
        optimizer : str or Optimizer
            ``"sgd"``, ``"rmsprop"``, ``"adam"``, ``"adamw"`` (default settings) or an instance.
        metrics : sequence of str
            Any of ``"accuracy"``, ``"mae"``, ``"r2"``.
        """
        if not self.layers:
            raise ValueError("Sequential: cannot compile a model without layers")
        last = self.layers[-1]
        loss = get_loss(loss, last_layer=next(
            (layer for layer in reversed(self.layers) if type(layer).__name__ in
             ("Sigmoid", "Softmax", "Dense")), last))
        optimizer = get_optimizer(optimizer)
        if isinstance(metrics, str):
            metrics = [metrics]
        metric_objs = [get_metric(m) for m in metrics]
        for m in metric_objs:
            if isinstance(m, Accuracy):
                m.multilabel = loss.name == "binary_crossentropy"
        self.loss = loss.bind(self.backend.xp)
        self.optimizer = optimizer
        self.metrics = metric_objs
        self._fused = loss.fuses_with is not None and type(last).__name__ == loss.fuses_with
        return self

    # ------------------------------------------------------------------ data checks
    def _prepare_X(self, X, what="X"):
        be = self.backend
        if _is_sparse(X):
            return self._prepare_sparse_X(X, what)
        owner = backend_of(X)
        if owner is not None and owner.family != be.family:
            raise TypeError(f"{what} is a {owner.name} array but the model's backend is "
                            f"{be.name}: convert it with xpnn.to_numpy({what}) or move the model "
                            f"with model.to({owner.name!r})")
        if owner is None:
            host = np.asarray(to_numpy(X))
            if host.dtype.kind not in "biuf":
                raise TypeError(f"{what} must be numeric, got dtype {host.dtype}")
            shape = host.shape
        else:
            shape = tuple(X.shape)
        if len(shape) != 2:
            raise ValueError(f"{what} must be 2-D (n_samples, n_features), got shape {shape}"
                             + (": use X.reshape(-1, 1) for a single feature"
                                if len(shape) == 1 else ""))
        if shape[0] == 0:
            raise ValueError(f"{what} has no samples (shape {shape})")
        n_in = self.n_features_in
        if n_in is not None and shape[1] != n_in:
            first = next((i for i, layer in enumerate(self.layers) if layer.in_features), 0)
            raise ValueError(f"{what} has {shape[1]} features but layer {first} "
                             f"({self.layers[first]!r}) expects {n_in}: got {what} of shape "
                             f"{shape}, expected (n_samples, {n_in})")
        if owner is None:
            if host.dtype.kind == "f" and not np.all(np.isfinite(host)):
                raise ValueError(f"{what} contains {int(np.sum(~np.isfinite(host)))} NaN or "
                                 "infinite values")
            return be.asarray(host, dtype=self.dtype)
        xp = be.xp
        X = be.asarray(X, dtype=self.dtype)
        if owner.name != be.name:  # same library, other device (torch cpu -> cuda)
            X = be.asarray(to_numpy(X), dtype=self.dtype)
        if not bool(xp.all(xp.isfinite(X))):
            raise ValueError(f"{what} contains NaN or infinite values")
        return X

    def _prepare_sparse_X(self, X, what):
        """A SciPy sparse ``X`` stays on the host as CSR in the model's dtype; batches are
        densified and moved to the device one at a time (:meth:`_rows`)."""
        if len(X.shape) != 2 or X.shape[0] == 0:
            raise ValueError(f"{what} must be 2-D with samples, got a sparse matrix of shape "
                             f"{X.shape}")
        n_in = self.n_features_in
        if n_in is not None and X.shape[1] != n_in:
            raise ValueError(f"{what} has {X.shape[1]} features but the model expects {n_in}")
        X = X.tocsr().astype(np.dtype(self.dtype))
        if not np.all(np.isfinite(X.data)):
            raise ValueError(f"{what} contains NaN or infinite values")
        return X

    def _rows(self, X, start, stop):
        """Rows ``start:stop`` of prepared data as a device array (a sparse X densified)."""
        if _is_sparse(X):
            return self.backend.asarray(X[start:stop].toarray(), dtype=self.dtype)
        return X[start:stop, ...]

    def _prepare_y(self, y, n_samples, what="y"):
        if y is None:
            raise TypeError(f"{what} is required")
        host = np.asarray(to_numpy(y))
        if host.dtype.kind not in "biuf":
            raise TypeError(f"{what} must be numeric, got dtype {host.dtype}"
                            + (" (encode string labels as integers, e.g. with "
                               "sklearn.preprocessing.LabelEncoder)"
                               if host.dtype.kind in "OUS" else ""))
        if host.shape[:1] != (n_samples,):
            raise ValueError(f"{what} has {host.shape[0] if host.ndim else 0} samples but "
                             f"{what.replace('y', 'X', 1)} has {n_samples} (shape of {what}: "
                             f"{host.shape})")
        if host.dtype.kind == "f" and not np.all(np.isfinite(host)):
            raise ValueError(f"{what} contains {int(np.sum(~np.isfinite(host)))} NaN or "
                             "infinite values")
        t = self.loss.prepare_targets(host, self.n_outputs)
        return self.backend.asarray(t, dtype="int64" if t.dtype.kind == "i" else self.dtype)

    def _prepare_Xy(self, X, y, what="X"):
        """``X`` and its targets as checked device arrays (names in messages: X/y, X_val/y_val)."""
        Xd = self._prepare_X(X, what)
        return Xd, self._prepare_y(y, Xd.shape[0], what.replace("X", "y", 1))

    def _require_compiled(self, method):
        if self.loss is None:
            raise RuntimeError(f"Sequential.{method}: call compile(loss=..., optimizer=...) "
                               "first")

    def _require_weights(self, method):
        if not self.layers:
            raise ValueError(f"Sequential.{method}: the model has no layers")
        if not self.built:
            raise ValueError(f"Sequential.{method}: the model has no weights yet; call fit() "
                             "first or give the first Dense its in_features")

    def _building_from(self, X, prepare):
        """Run ``prepare()`` (the data checks) and return its result. If the weights do not
        exist yet, their input width is taken from ``X`` for the checks and they are built only
        when the checks pass: a bad call leaves the model as it was."""
        if not self.layers:
            raise ValueError("Sequential: the model has no layers")
        if self.built:
            return prepare()
        shape = tuple(np.shape(to_numpy(X)) if backend_of(X) is None and not _is_sparse(X)
                      else X.shape)
        if len(shape) != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {shape}")
        self.n_features_in = shape[1]
        try:
            result = prepare()
        except Exception:
            self.n_features_in = None
            raise
        self.build(shape[1])
        return result

    # ------------------------------------------------------------------ forward / backward
    def _forward(self, x, training=False, logits=False):
        layers = self.layers[:-1] if logits else self.layers
        for layer in layers:
            x = layer.forward(x, training=training)
        return x

    def _train_step(self, xb, tb, check_at=None, wb=None):
        """One step of backpropagation on a batch; returns (loss, output) as device arrays.

        With ``check_at=(epoch, batch)`` a non-finite loss raises before any weight changes.
        ``wb``: the batch's sample weights (the loss is their weighted mean), or None.
        """
        loss_fn = self.loss
        if self._fused:
            z = self._forward(xb, training=True, logits=True)
            loss = loss_fn.forward_logits(z, tb, w=wb)
        else:
            out = self._forward(xb, training=True)
            loss = loss_fn.forward(out, tb, w=wb)
        if check_at is not None:
            value = float(loss)
            if not math.isfinite(value):
                raise diverged(value, *check_at)
        if self._fused:
            delta = loss_fn.backward_logits()
            layers, out = self.layers[:-1], loss_fn.p
        else:
            delta = loss_fn.backward()
            layers = self.layers
        for layer in reversed(layers):
            delta = layer.backward(delta)
            if delta is None:   # the first layer with weights: dL/dx is not needed
                break
        self.optimizer.step(self.params)
        return loss, out

    # ------------------------------------------------------------------ training
    def fit(self, X, y, epochs: int = 1, batch_size: int = 32, validation_data=None,
            validation_split: float = 0.0, shuffle: bool = True, callbacks=(), verbose: int = 1,
            sample_weight=None):
        """Train for ``epochs`` passes over the data.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
            NumPy array, pandas DataFrame, list, or an array of the model's backend.
        y : array-like
            Targets: (n_samples,) or (n_samples, n_outputs); integer labels or one-hot rows for
            categorical cross-entropy.
        epochs, batch_size : int
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch; logged as ``val_loss`` and ``val_<metric>``.
        validation_split : float
            Fraction of the data (taken from the end, before shuffling) held out for validation.
        shuffle : bool
            Reshuffle the training data every epoch.
        callbacks : sequence of Callback
        verbose : int
            0 silent, 1 one line per epoch.
        sample_weight : array-like (n_samples,), optional
            Non-negative weights of the training samples: each batch's loss is the weighted
            mean ``Σ w_n ℓ_n / Σ w_n`` over its samples (the logged epoch loss stays the
            row-weighted average of the batch losses). With ``validation_split`` the held-out
            rows' weights are dropped.

        Returns
        -------
        History
            ``history.history["loss"]``, ``["val_loss"]``, ... one value per epoch.
        """
        self._require_compiled("fit")
        for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"fit: {name} must be an int >= {low}, got {value!r}")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
        if validation_data is not None and validation_split:
            raise ValueError("fit: give validation_data or validation_split, not both")

        Xd, yd, val, wd = self._building_from(X, lambda: self._prepare_fit_data(
            X, y, validation_data, validation_split, callbacks, sample_weight))

        history = History()
        callbacks = [history, *callbacks]
        for cb in callbacks:
            cb.set_model(self)
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin()
        for epoch in range(epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            t0 = time.perf_counter()
            logs = self._train_epoch(Xd, yd, batch_size, shuffle, epoch, callbacks, wd)
            if val is not None:
                logs.update({f"val_{k}": v for k, v in self._evaluate_arrays(*val).items()})
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if verbose:
                shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - t0:.2f}s - {shown}")
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end()
        self.history = history
        return history

    def _prepare_fit_data(self, X, y, validation_data, validation_split, callbacks,
                          sample_weight=None):
        """Checked device arrays for ``fit``: ``(X, t, (X_val, t_val) or None, w or None)``."""
        Xd, yd = self._prepare_Xy(X, y)
        wd = None if sample_weight is None else self._prepare_weights(sample_weight, Xd.shape[0])
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a tuple (X_val, y_val)")
            val = self._prepare_Xy(*validation_data, what="X_val")
        elif validation_split:
            n_val = int(Xd.shape[0] * validation_split)
            if n_val < 1 or n_val >= Xd.shape[0]:
                raise ValueError(f"fit: validation_split={validation_split} of "
                                 f"{Xd.shape[0]} samples leaves an empty split")
            cut = Xd.shape[0] - n_val
            Xd, yd, val = Xd[:cut, ...], yd[:cut, ...], (Xd[cut:, ...], yd[cut:, ...])
            wd = None if wd is None else wd[:cut]
        for cb in callbacks:
            monitor = getattr(cb, "monitor", None)
            if val is None and isinstance(monitor, str) and monitor.startswith("val_"):
                raise ValueError(f"fit: {type(cb).__name__} monitors {monitor!r}, but there "
                                 "is no validation data: pass validation_data or "
                                 "validation_split")
        return Xd, yd, val, wd

    def _prepare_weights(self, w, n_samples):
        """Sample weights as a checked device vector in the model's dtype."""
        host = np.asarray(to_numpy(w))
        if host.dtype.kind not in "biuf":
            raise TypeError(f"sample_weight must be numeric, got dtype {host.dtype}")
        if host.shape != (n_samples,):
            raise ValueError(f"sample_weight must have shape ({n_samples},) to match X, got "
                             f"{host.shape}")
        if not np.all(np.isfinite(host)) or np.any(host < 0):
            raise ValueError("sample_weight must be finite and >= 0")
        if not np.any(host > 0):
            raise ValueError("sample_weight must contain at least one non-zero weight")
        return self.backend.asarray(host, dtype=self.dtype)

    def _train_epoch(self, X, t, batch_size, shuffle, epoch, callbacks=(), w=None):
        be = self.backend
        n = X.shape[0]
        perm = self.rng.permutation(n) if shuffle else None
        # On the host a loss check per batch is free; on a GPU it would sync every batch, so
        # check once per epoch and, if the loss went bad, replay the epoch with checks on.
        check = not be.is_gpu
        saved = None if check else self._snapshot_state()
        loss_sum = self._run_batches(X, t, batch_size, epoch, check, perm, callbacks, w)
        logs = {"loss": float(loss_sum) / n}
        if not math.isfinite(logs["loss"]) and saved is not None:
            self._restore_state(saved)
            self._run_batches(X, t, batch_size, epoch, True, perm, w=w)  # raises at the bad batch
        logs.update({m.name: m.result() for m in self.metrics})
        return logs

    def _run_batches(self, X, t, batch_size, epoch, check, perm=None, callbacks=(), w=None):
        """One pass over consecutive batches, of the rows in the order ``perm`` when given
        (with the sample weights ``w``, or None); returns the summed loss (a device scalar)."""
        be, xp = self.backend, self.backend.xp
        for m in self.metrics:
            m.reset()
        # Backend-specific fast trainer for plain MLPs (same numbers), or the generic step.
        trainer = fastpath.select(self)
        step = self._train_step if trainer is None else trainer.train_step
        order = None
        if perm is not None:
            if _is_sparse(X):           # rows of the host matrix; batches densified below
                idx = be.asarray(perm, dtype="int64")
                X, t = X[perm], xp.take(t, idx, axis=0)
                w = None if w is None else xp.take(w, idx, axis=0)
            elif trainer is not None and trainer.gathers_batches:
                order = perm   # the trainer copies each batch's rows into a buffer it reuses
            else:          # one gather per epoch; batches are then contiguous slices
                idx = be.asarray(perm, dtype="int64")
                X, t = xp.take(X, idx, axis=0), xp.take(t, idx, axis=0)
                w = None if w is None else xp.take(w, idx, axis=0)
        loss_sum = 0.0
        for b, start in enumerate(range(0, X.shape[0], batch_size)):
            stop = min(start + batch_size, X.shape[0])  # array API: slice stops must be in bounds
            if order is None:
                xb, tb = self._rows(X, start, stop), t[start:stop, ...]
                wb = None if w is None else w[start:stop]
            else:
                xb, tb = trainer.gather(X, t, order[start:stop])
                wb = None if w is None else xp.take(
                    w, be.asarray(order[start:stop], dtype="int64"), axis=0)
            for cb in callbacks:
                cb.on_train_batch_begin(b)
            loss, out = step(xb, tb, (epoch, b) if check else None, wb)
            loss_sum = loss_sum + loss * xb.shape[0]
            for m in self.metrics:
                m.update(xp, out, tb)
            for cb in callbacks:
                cb.on_train_batch_end(b, {"size": xb.shape[0], "loss": loss})
        return loss_sum

    def train_on_batch(self, X, y) -> float:
        """One optimizer step on one batch; returns the batch loss (before the step)."""
        self._require_compiled("train_on_batch")
        Xd, yd = self._building_from(X, lambda: self._prepare_Xy(X, y))
        loss, _ = self._train_step(Xd, yd, check_at=(0, 0))
        return float(loss)

    # ------------------------------------------------------------------ inference
    def predict(self, X, batch_size: int | None = None):
        """Outputs of the network for ``X``, as an array of the model's backend (on its device).

        Use :func:`xpnn.to_numpy` to bring them to the host.
        """
        self._require_weights("predict")
        Xd = self._prepare_X(X)
        return self._predict_arrays(Xd, batch_size)

    def _predict_arrays(self, X, batch_size=None):
        n = X.shape[0]
        if _is_sparse(X):
            batch_size = batch_size or SPARSE_BLOCK
            if batch_size < 1:
                raise ValueError(f"predict: batch_size must be >= 1, got {batch_size!r}")
            parts = [self._forward(self._rows(X, i, min(i + batch_size, n)))
                     for i in range(0, n, batch_size)]
            return self.backend.xp.concat(parts, axis=0)
        if batch_size is None or batch_size >= n:
            return self._forward(X)
        if batch_size < 1:
            raise ValueError(f"predict: batch_size must be >= 1, got {batch_size!r}")
        parts = [self._forward(X[i:min(i + batch_size, n), ...])
                 for i in range(0, n, batch_size)]
        return self.backend.xp.concat(parts, axis=0)

    def evaluate(self, X, y, batch_size: int | None = None) -> dict:
        """Loss and every compiled metric on ``(X, y)``, as ``{"loss": ..., "accuracy": ...}``."""
        self._require_compiled("evaluate")
        self._require_weights("evaluate")
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer))
                                       or isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"evaluate: batch_size must be an int >= 1, got {batch_size!r}")
        return self._evaluate_arrays(*self._prepare_Xy(X, y), batch_size)

    def _evaluate_arrays(self, X, t, batch_size=None):
        xp = self.backend.xp
        n = X.shape[0]
        step = n if batch_size is None else batch_size
        if _is_sparse(X):
            step = min(step, SPARSE_BLOCK)
        metrics = [get_metric(m) for m in self.metrics]
        for m, src in zip(metrics, self.metrics, strict=True):
            if isinstance(m, Accuracy):
                m.multilabel = src.multilabel
        loss_sum = 0.0
        for start in range(0, n, step):
            stop = min(start + step, n)
            xb, tb = self._rows(X, start, stop), t[start:stop, ...]
            if self._fused:
                loss = self.loss.forward_logits(self._forward(xb, logits=True), tb)
                out = self.loss.p
            else:
                out = self._forward(xb)
                loss = self.loss.forward(out, tb)
            loss_sum = loss_sum + loss * xb.shape[0]
            for m in metrics:
                m.update(xp, out, tb)
        return {"loss": float(loss_sum) / n, **{m.name: m.result() for m in metrics}}

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list[np.ndarray]:
        """Copies of the parameters as NumPy arrays, in layer order: W1, b1, W2, b2, ..."""
        self._require_weights("get_weights")
        return [np.array(to_numpy(p.data), copy=True) for p in self.params]

    def set_weights(self, weights) -> None:
        """Replace the parameters (a list like :meth:`get_weights` returns). All shapes are
        checked before anything changes."""
        self._require_weights("set_weights")
        weights = list(weights)
        if len(weights) != len(self.params):
            raise ValueError(f"set_weights: expected {len(self.params)} arrays, got "
                             f"{len(weights)}")
        host = []
        for i, (p, w) in enumerate(zip(self.params, weights, strict=True)):
            w = np.asarray(to_numpy(w))
            if w.shape != p.shape:
                raise ValueError(f"set_weights: array {i} ({p.name} of layer "
                                 f"{self._owner_index(p)}) must have shape {p.shape}, got "
                                 f"{w.shape}")
            if not np.all(np.isfinite(w)):
                raise ValueError(f"set_weights: array {i} contains NaN or infinite values")
            host.append(w)
        for p, w in zip(self.params, host, strict=True):
            p.data[...] = self.backend.asarray(w, dtype=self.dtype)

    def _owner_index(self, param):
        return next(i for i, layer in enumerate(self.layers)
                    if any(q is param for q in layer.params))

    def _snapshot_weights(self):
        """Device-side copies of all parameters (no host transfer)."""
        return [self.backend.copy(p.data) for p in self.params]

    def _restore_weights(self, snapshot):
        for p, s in zip(self.params, snapshot, strict=True):
            p.data[...] = s

    def _snapshot_state(self):
        """Weights, optimizer state and RNG state, to rewind a training epoch."""
        opt = self.optimizer
        states = [{k: self.backend.copy(v) if hasattr(v, "shape") else v for k, v in s.items()}
                  for s in opt.state]
        return (self._snapshot_weights(), states, opt.iterations,
                self.rng.bit_generator.state)

    def _restore_state(self, saved):
        weights, states, iterations, rng_state = saved
        self._restore_weights(weights)
        self.optimizer.state, self.optimizer.iterations = states, iterations
        self.rng.bit_generator.state = rng_state

    def count_params(self) -> int:
        return sum(layer.n_params for layer in self.layers)

    # ------------------------------------------------------------------ description
    def summary(self, print_fn=print) -> str:
        """A table of layers, output shapes and parameter counts (printed and returned)."""
        rows = [("Layer (type)", "Output shape", "Param #")]
        features = self.n_features_in
        for i, layer in enumerate(self.layers):
            features = layer.output_features(features)
            rows.append((f"{i}: {type(layer).__name__}", f"(None, {features})",
                         f"{layer.n_params:,}" if self.built else "?"))
        widths = [max(len(r[c]) for r in rows) + 2 for c in range(3)]
        line = "-" * sum(widths)
        out = [f'Sequential (backend="{self.backend.name}", dtype="{self.dtype}")', line]
        for j, r in enumerate(rows):
            out.append("".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))
            if j == 0:
                out.append(line)
        out += [line, f"Total params: {self.count_params():,}" if self.built
                else "Total params: ? (built at the first fit)"]
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner}, backend={self.backend.name!r}, dtype={self.dtype!r})"

    # ------------------------------------------------------------------ moving & saving
    def to(self, backend) -> Sequential:
        """Move the model (weights, optimizer state) to another backend, in place; returns self."""
        be = get_backend(backend)
        for layer in self.layers:
            if layer.built:
                layer.bind(be)
        self.params = [p for layer in self.layers for p in layer.params]
        if self.optimizer is not None:
            self.optimizer.state = [
                {k: be.asarray(to_numpy(v)) if hasattr(v, "shape") else v for k, v in s.items()}
                for s in self.optimizer.state]
        if self.loss is not None:
            self.loss.bind(be.xp)
        self.backend = be
        return self

    def get_config(self) -> dict:
        """Architecture and training set-up as JSON-serialisable data."""
        config = {
            "format": FORMAT, "version": FORMAT_VERSION, "backend": self.backend.name,
            "dtype": self.dtype, "seed": self.seed, "n_features_in": self.n_features_in,
            "layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                       for layer in self.layers],
            "compile": None,
        }
        if self.loss is not None:
            config["compile"] = {
                "loss": type(self.loss).__name__,
                "optimizer": {"class": type(self.optimizer).__name__,
                              "config": self.optimizer.get_config()},
                "metrics": [m.name for m in self.metrics],
            }
        return config

    @classmethod
    def from_config(cls, config: dict, weights=None, backend=None, source="config"):
        """A model from :meth:`get_config` (compiled again if it was), with ``weights`` set."""
        layers = []
        for spec in config["layers"]:
            if spec["class"] not in LAYERS:
                raise ValueError(f"{source}: unknown layer class {spec['class']!r}")
            layers.append(LAYERS[spec["class"]](**spec["config"]))
        model = cls(*layers, backend=backend or config["backend"], dtype=config["dtype"],
                    seed=config["seed"])
        if weights:
            if not model.built:
                model.build(config.get("n_features_in") or layers[0].in_features)
            model.set_weights(weights)
        compiled = config.get("compile")
        if compiled:
            opt = compiled["optimizer"]
            model.compile(loss=LOSS_CLASSES[compiled["loss"]](),
                          optimizer=OPTIMIZERS[opt["class"].lower()](**opt["config"]),
                          metrics=compiled["metrics"])
        return model

    def __getstate__(self):
        """Pickle/copy support: configuration, weights, optimizer state and random-generator
        state as NumPy data; the backend is resolved again by name when unpickled."""
        opt = self.optimizer
        return {
            "config": self.get_config(),
            "weights": self.get_weights() if self.built else None,
            "optimizer_state": None if opt is None else [
                {k: np.array(to_numpy(v), copy=True) if hasattr(v, "shape") else v
                 for k, v in s.items()} for s in opt.state],
            "optimizer_iterations": None if opt is None else opt.iterations,
            "rng": self.rng.bit_generator.state,
            "extra": {k: v for k, v in self.__dict__.items() if k == "fastpath"},
        }

    def __setstate__(self, state):
        model = type(self).from_config(state["config"], state["weights"])
        self.__dict__.update(model.__dict__)
        self.__dict__.update(state["extra"])
        if self.optimizer is not None:
            be = self.backend
            self.optimizer.state = [
                {k: be.asarray(v) if isinstance(v, np.ndarray) else v for k, v in s.items()}
                for s in state["optimizer_state"]]
            self.optimizer.iterations = state["optimizer_iterations"]
        self.rng.bit_generator.state = state["rng"]

    def save(self, path) -> None:
        """Write the model to a single ``.npz`` file: the architecture as JSON plus the weights.

        No pickle is involved; read it back with :func:`xpnn.load`.
        """
        arrays = {"__xpnn__": np.array(json.dumps(self.get_config()))}
        if self.built:
            arrays.update({f"param_{i}": w for i, w in enumerate(self.get_weights())})
        np.savez(path, **arrays)


def load(path, backend=None) -> Sequential:
    """Read a model written by :meth:`Sequential.save`.

    Parameters
    ----------
    path : str or path-like
    backend : str, optional
        Backend to load onto; by default the one it was saved from.
    """
    try:
        f = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError) as exc:  # text, pickle, truncated... files
        raise ValueError(f"{path} is not an xpnn model file (not a NumPy .npz archive)") from exc
    if not isinstance(f, np.lib.npyio.NpzFile):     # a single .npy array
        raise ValueError(f"{path} is not an xpnn model file (a .npy array, not an .npz archive)")
    with f:
        if "__xpnn__" not in f.files:
            raise ValueError(f"{path} is not an xpnn model file (no '__xpnn__' entry)")
        try:
            config = json.loads(str(f["__xpnn__"]))
        except ValueError as exc:
            raise ValueError(f"{path} is not an xpnn model file (unreadable header)") from exc
        weights = [f[f"param_{i}"] for i in range(len(f.files) - 1)]
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path} is not an xpnn model file (format tag missing)")
    if config.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer xpnn (format version "
                         f"{config['version']}); upgrade xpnn to read it")
    return Sequential.from_config(config, weights, backend=backend, source=str(path))

__all__ = ["Sequential", "TrainingDivergedError", "load"]

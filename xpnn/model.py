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

import contextlib
import math
import signal
import threading

import numpy as np

from . import data, distributed, fastpath, serialization
from ._validation import check_config_in_dtype, check_dtype, check_int
from .backend import DTYPES, backend_of, get_backend, host_rng, to_numpy
from .callbacks import Callback, History
from .errors import TrainingDivergedError, diverged
from .guard import all_finite, outputs_bounded
from .layers import LAYERS, Layer
from .losses import LOSS_CLASSES, get_loss
from .metrics import Accuracy, get_metric
from .optimizers import OPTIMIZERS, get_optimizer
from .progress import check_verbose, fit_callbacks, source_steps, step_progress

FORMAT, FORMAT_VERSION = serialization.FORMAT, serialization.FORMAT_VERSION


class Sequential:
    """A linear stack of layers with a Keras-like training API.

    Parameters
    ----------
    *layers : Layer
        The layers, input to output (a single list is accepted too).
    backend : str
        ``"numpy"`` (default), ``"cupy"``, ``"torch"`` or ``"array_api_strict"``; see
        :func:`xpnn.available_backends`.
    dtype : {"float32", "float64"} or NumPy dtype
        Floating dtype of weights and computations: a name, ``np.float32``/``np.float64`` or
        a ``np.dtype`` (stored as its name, ``model.dtype == "float64"``).
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
        dtype = check_dtype(dtype, "Sequential", DTYPES)
        for i, layer in enumerate(layers):
            check_config_in_dtype(layer.get_config(), dtype, f"Sequential: layer {i} "
                                  f"({type(layer).__name__})")
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
        loss : str, Loss or Loss class
            ``"mse"``, ``"binary_crossentropy"``, ``"categorical_crossentropy"`` or
            ``"crossentropy"`` (binary after a Sigmoid or a single output, categorical
            otherwise), or a :class:`~xpnn.losses.Loss`.
        optimizer : str, Optimizer or Optimizer class
            ``"sgd"``, ``"rmsprop"``, ``"adam"``, ``"adamw"`` (default settings) or an instance.
            A class (``xpnn.Adam``, ``xpnn.MSE`` for ``loss``) is taken as its instance with
            default settings, exactly as its name would be (``xpnn.Adam`` is ``"adam"``).
        metrics : sequence of str
            Any of ``"accuracy"``, ``"mae"``, ``"r2"``.
        """
        if not self.layers:
            raise ValueError("Sequential: cannot compile a model without layers")
        last = self.layers[-1]
        loss = get_loss(loss, last_layer=next(
            (layer for layer in reversed(self.layers) if type(layer).__name__ in
             ("Sigmoid", "Softmax", "Dense")), last))
        out = next((layer for layer in reversed(self.layers)
                    if type(layer).__name__ != "Identity"), last)
        if loss.fuses_with is not None and type(out).__name__ not in ("Sigmoid", "Softmax"):
            raise ValueError(
                f"compile: {loss.name} needs probabilities, but the last layer {out!r} outputs "
                "unbounded scores: end the network with Softmax() for categorical_crossentropy "
                "(integer labels or one-hot rows) or Sigmoid() for binary_crossentropy "
                "(targets in [0, 1]); either then trains on the logits through its fused, "
                "stable form. For real-valued targets use loss='mse'")
        optimizer = get_optimizer(optimizer)
        check_config_in_dtype(optimizer.get_config(), self.dtype, "compile: optimizer")
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
    def _prepare_X(self, X, what="X", stager=None):
        """``X`` checked (numeric, 2-D, the model's width, finite after the cast) as an array of
        the model's backend and dtype. Host data goes through ``stager`` when given (CuPy: a
        pinned buffer copied on a second stream, :mod:`xpnn.staging`)."""
        be = self.backend
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
        self._check_X_shape(shape, what)
        if owner is None:
            cast = _cast_finite(host, self.dtype, what)
            return be.asarray(cast, dtype=self.dtype) if stager is None else stager.put(cast)
        xp = be.xp
        X = be.asarray(X, dtype=self.dtype)
        if owner.name != be.name:  # same library, other device (torch cpu -> cuda)
            X = be.asarray(to_numpy(X), dtype=self.dtype)
        if not bool(xp.all(xp.isfinite(X))):    # checked after the cast to the model's dtype
            bad = ~np.isfinite(np.asarray(to_numpy(X)))
            raise ValueError(f"{what} contains {data.count_and_where(bad, 'NaN or infinite')} "
                             f"once cast to {self.dtype}")
        return X

    def _prepare_y(self, y, n_samples, what="y"):
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
            _cast_finite(host, self.dtype, what)
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

    def _building_from(self, X, prepare, iterable=None):
        """Run ``prepare()`` (the data checks) and return its result. If the weights do not
        exist yet, their input width is taken from ``X`` (or from the first batch of
        ``iterable`` when ``X`` is None) for the checks and they are built only when the checks
        pass: a bad call leaves the model as it was."""
        if not self.layers:
            raise ValueError("Sequential: the model has no layers")
        if self.built:
            return prepare()
        if X is None:
            result = prepare()
            shape = result[0].peek_shape(self)
            if len(shape) != 2:
                raise ValueError(f"fit: batches of x must be 2-D (n, n_features), got {shape}")
            self.build(shape[1])
            return result
        shape = tuple(data.host_shape(X) if backend_of(X) is None else X.shape)
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

    def _prepare_w(self, w, n_samples, what="sample_weight"):
        """Per-sample weights as a checked device array of the model's dtype (N,)."""
        host = data.as_array(w, what)
        if host.dtype.kind not in "biuf":
            raise TypeError(f"{what} must be numeric, got dtype {host.dtype}")
        if host.shape != (n_samples,):
            raise ValueError(f"{what} must have shape ({n_samples},), one weight per sample, got "
                             f"shape {host.shape}")
        cast = host.astype(self.dtype)
        if not np.all(np.isfinite(cast)) or np.any(cast < 0):
            raise ValueError(f"{what} must hold finite values >= 0 in {self.dtype}")
        if not np.any(cast > 0):
            raise ValueError(f"{what} is zero for every sample")
        return self.backend.asarray(cast, dtype=self.dtype)

    # ------------------------------------------------------------------ batch sources
    #: Largest converted in-memory training set (bytes) that ``fit`` puts on the device up
    #: front; larger host arrays, and memmaps, h5py and zarr data at any size, are read one
    #: batch at a time (:mod:`xpnn.data`). Set it per model to override.
    resident_budget = data.RESIDENT_BUDGET

    def _streams(self, X) -> bool:
        """Whether host data ``X`` is read one batch at a time rather than converted up front."""
        if backend_of(X) is not None:
            return False
        if data.is_sparse(X) or data.in_file(X):
            return True                       # never densify a sparse matrix or load a file
        if not hasattr(X, "shape"):
            return False                      # lists and the like: converted up front
        if (type(X) is np.ndarray and X.dtype == np.dtype(self.dtype)
                and self.backend.family == "numpy"):
            return False                      # already the model's array: nothing to copy
        shape = data.host_shape(X)
        size = int(np.prod(shape)) * np.dtype(self.dtype).itemsize
        return size > self.resident_budget

    def _check_host_X(self, X, what="X"):
        """Shape and dtype checks of host data that is streamed (the rows are checked as read)."""
        shape = data.host_shape(X)
        if data.is_frame(X):
            data.check_frame(X, what)
        dtype = data.host_dtype(X)
        if dtype is not None and dtype.kind not in "biuf":
            raise TypeError(f"{what} must be numeric, got dtype {dtype}")
        self._check_X_shape(shape, what)
        return shape

    def _check_X_shape(self, shape, what="X"):
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
        if shape[1] == 0:
            raise ValueError(f"{what} has no features (shape {shape}): a network needs at "
                             "least one input feature")

    def _make_source(self, X, y, w=None, what="X", steps=None):
        """A batch source (:mod:`xpnn.data`) for ``(X, y, w)``, or for an iterable of batches
        when ``y`` is None."""
        if y is None and data.is_batch_iterable(X):
            if w is not None:
                raise ValueError(f"fit: give sample weights as the third item of each batch of "
                                 f"{what}, not as sample_weight")
            return data.IterableBatches(X, steps, what="data" if what == "X" else what)
        if steps is not None:
            raise ValueError("fit: steps_per_epoch applies only to a generator of batches")
        if self._streams(X):
            shape = self._check_host_X(X, what)
            t = self._prepare_y(y, shape[0], what.replace("X", "y", 1))
            wd = None if w is None else self._prepare_w(w, shape[0])
            return data.HostBatches(X, t, wd, what)
        Xd, td = self._prepare_Xy(X, y, what)
        wd = None if w is None else self._prepare_w(w, Xd.shape[0])
        return data.ArrayBatches(Xd, td, wd)

    # ------------------------------------------------------------------ forward / backward
    def _forward(self, x, training=False, logits=False):
        layers = self.layers[:-1] if logits else self.layers
        for layer in layers:
            x = layer.forward(x, training=training)
        return x

    def _train_step(self, xb, tb, wb=None):
        """One step of backpropagation on a batch; returns (loss, output) as device arrays.

        ``wb`` are per-sample weights (None: every row counts the same).
        """
        xp = self.backend.xp
        if xb.shape[0] == 0:          # data-parallel: no rows of this batch on this rank
            for p in self.params:
                p.grad = xp.zeros_like(p.data)
            loss = self._sync_gradients([p.grad for p in self.params], self._idle_batch(),
                                        0 if wb is None else xp.sum(wb))
            self.optimizer.step(self.params)
            return loss, None
        loss, out = self._backprop(xb, tb, wb)
        loss = self._sync_gradients([p.grad for p in self.params], loss,
                                    xb.shape[0] if wb is None else xp.sum(wb))
        self.optimizer.step(self.params)
        return loss, out

    def _backprop(self, xb, tb, wb=None):
        """Forward pass in training mode, the loss, and the backward pass that leaves every
        parameter's gradient in ``p.grad``; returns (loss, output). The walk shared by the
        training step and :class:`xpnn.flat.FlatObjective`."""
        loss_fn = self.loss
        if self._fused:
            z = self._forward(xb, training=True, logits=True)
            loss = loss_fn.forward_logits(z, tb, wb)
            delta = loss_fn.backward_logits()
            layers, out = self.layers[:-1], loss_fn.p
        else:
            out = self._forward(xb, training=True)
            loss = loss_fn.forward(out, tb, wb)
            delta = loss_fn.backward()
            layers = self.layers
        for layer in reversed(layers):
            delta = layer.backward(delta)
            if delta is None:   # the first layer with weights: dL/dx is not needed
                break
        return loss, out

    def _sync_gradients(self, grads, loss, n_rows):
        """The one boundary between backward and the optimizer update, on both the generic step
        (``grads`` the list of per-parameter gradients) and the fast trainers (``grads`` their
        flat gradient buffer, with two free slots at its end). ``n_rows`` is the number of rows
        of the step, or the sum of their sample weights (a 0-d array) when they carry weights.
        Returns the loss the step reports. With a single process there is nothing to combine;
        data-parallel training (:meth:`xpnn.distributed.DataParallel.sync_gradients`) sums the
        weighted gradients and losses of every rank in one allreduce here."""
        comm = self._comm
        if comm is None:
            return loss
        return comm.sync_gradients(self, grads, loss, n_rows)

    #: The :class:`xpnn.distributed.DataParallel` of the data-parallel ``fit`` running, or None.
    _comm = None
    #: The communicator of the last data-parallel ``fit`` (``save`` writes on its rank 0).
    _last_comm = None

    def _local_rows(self, lo, hi):
        """This process's rows of the batch of rows ``[lo, hi)``: all of them, or in
        data-parallel training this rank's contiguous slice (batch sources call this)."""
        comm = self._comm
        return (lo, hi) if comm is None else comm.batch(lo, hi)

    def _idle_batch(self):
        """A rank's part in a data-parallel step where its slice of the batch is empty: the
        Dropout layers draw their masks anyway (the generators stay in step across ranks);
        returns a zero loss."""
        features = self.n_features_in
        for layer in self.layers:
            if getattr(layer, "batch_slice", None) is not None:
                layer.draw_mask(layer.batch_slice[0], features)
            features = layer.output_features(features)
        be = self.backend
        return be.xp.zeros((), dtype=be.dtype(self.dtype), device=be.device)

    def _start_data_parallel(self, comm, **facts):
        """With a communicator of several ranks: check that every rank runs the same training
        (``facts``: rows, batch size...), put rank 0's weights, optimizer and generator state
        on every rank, and synchronise the steps until ``fit`` ends. Returns the
        :class:`~xpnn.distributed.DataParallel` or None."""
        comm = distributed.active(comm)
        if comm is None:
            return None
        dp = distributed.DataParallel(comm, self)
        dp.check_agreement(**facts, parameters=self.count_params(), dtype=self.dtype,
                           backend=self.backend.family,
                           optimizer=type(self.optimizer).__name__)
        dp.broadcast_state()
        self._last_comm = comm
        return dp

    def _end_data_parallel(self):
        if self._comm is not None:
            self._comm.end()
        self._comm = None

    def _weights_finite(self, trainer=None) -> bool:
        """Whether every parameter is finite (one reduction per parameter, or the fast trainer's
        own check of its flat buffer)."""
        if trainer is not None:
            return trainer.weights_finite()
        return all_finite(self.backend.xp, [p.data for p in self.params])

    # ------------------------------------------------------------------ training
    @distributed.guarded
    def fit(self, X, y=None, epochs: int = 1, batch_size: int = 32, validation_data=None,
            validation_split: float = 0.0, shuffle: bool | str = True, callbacks=(),
            verbose: int = 1,
            sample_weight=None, steps_per_epoch: int | None = None, initial_epoch: int = 0,
            comm=None, validation_steps: int | None = None):
        """Train for ``epochs`` passes over the data.

        Parameters
        ----------
        X : array-like (n_samples, n_features), or an iterable of batches
            A NumPy array (a memmap too), pandas DataFrame, list, h5py dataset, zarr array, SciPy
            sparse matrix, or an array of the model's backend. Memmaps, h5py and zarr data (and
            sparse data) always, and in-memory host data whose converted size exceeds
            ``model.resident_budget``, are read, converted and checked one batch at a time
            (:mod:`xpnn.data`); the rest is moved to the device once. With ``y=None``, ``X`` may
            instead be a re-iterable of ``(x, y)`` or ``(x, y, sample_weight)`` batches (a list, a
            ``DataLoader``), or a generator read ``steps_per_epoch`` batches per epoch; ``shuffle``
            does not apply to it.
        y : array-like
            Targets: (n_samples,) or (n_samples, n_outputs); integer labels or one-hot rows for
            categorical cross-entropy.
        epochs, batch_size : int
            ``epochs`` is the index of the last epoch to run (as in Keras): with
            ``initial_epoch=e``, ``epochs - e`` epochs run.
        validation_data : (X_val, y_val) or (X_val, y_val, w_val) or an iterable of batches
            Evaluated after every epoch; logged as ``val_loss`` and ``val_<metric>``.
        validation_split : float
            Fraction of the data (taken from the end, before shuffling) held out for validation.
        shuffle : bool or "batch"
            Reshuffle the training data every epoch. ``"batch"`` (as in Keras 2, for HDF5 and
            other chunked files): shuffle the order of blocks of ``batch_size`` consecutive
            rows, the last partial block staying last, so every batch is one contiguous read
            (see :func:`xpnn.data.batch_permutation`).
        callbacks : sequence of Callback
        verbose : {0, 1, 2, "auto"}
            0 silent; 1 (or "auto") a progress bar per epoch on stderr when it is a terminal
            (batches, rate, running loss, then the epoch's metrics; see
            :class:`xpnn.ProgressBar`), else one line per epoch; 2 one line per epoch.
        sample_weight : array-like (n_samples,), optional
            Non-negative weights: the loss of a batch is ``Σ w_n ℓ_n / Σ w_n``.
        steps_per_epoch : int, optional
            Batches per epoch when ``X`` is a generator of batches.
        validation_steps : int, optional
            Batches per validation when ``validation_data`` is an iterable of batches (a
            generator continues where the last validation stopped); without it each
            validation is one pass, so an endless generator needs it.
        initial_epoch : int
            Index of the first epoch (callbacks and logs count from it).
        comm : xpnn.distributed.Communicator, optional
            Train data-parallel over ``comm.size`` processes (from
            :func:`xpnn.distributed.init`; see :mod:`xpnn.distributed`): every rank passes the
            same data, ``batch_size`` is the global batch, each rank computes its slice of
            every batch, and every rank ends with the same weights and logs. Only rank 0
            prints. Any exception on one rank, other than TrainingDivergedError (which every
            rank raises together), aborts every rank.

        Returns
        -------
        History
            ``history.history["loss"]``, ``["val_loss"]``, ... one value per epoch.

        Notes
        -----
        On the CPU every step is checked: if the loss or any weight becomes NaN or infinite,
        ``TrainingDivergedError`` is raised and the model keeps the weights (and optimizer and
        random-generator state) from before that step. So it is when finite weights give
        non-finite outputs on the training data (``x·W`` beyond float32), checked after every
        epoch (:func:`xpnn.guard.outputs_bounded`; not for an iterable of batches, whose
        finite losses cover them). On a GPU the check runs once per epoch
        and a bad epoch is replayed with per-step checks. A ``KeyboardInterrupt`` takes effect
        between steps, so the model always holds the state after the last completed step.
        """
        self._require_compiled("fit")
        check_config_in_dtype({"lr": self.optimizer.lr}, self.dtype, "fit: optimizer")
        for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1),
                                 ("initial_epoch", initial_epoch, 0)):
            check_int(name, value, "fit", low)
        for name, value in (("steps_per_epoch", steps_per_epoch),
                            ("validation_steps", validation_steps)):
            if value is not None:
                check_int(name, value, "fit", 1)
        if not (isinstance(shuffle, (bool, np.bool_)) or (isinstance(shuffle, str)
                                                         and shuffle == "batch")):
            raise ValueError(f"fit: shuffle must be True, False or 'batch', got {shuffle!r}")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
        if validation_data is not None and validation_split:
            raise ValueError("fit: give validation_data or validation_split, not both")
        check_verbose(verbose, "fit")
        callbacks = list(callbacks)
        if epochs - initial_epoch > 1:       # a generator is used up by the first epoch
            for what, given, steps, name in (
                    ("data", X if y is None else None, steps_per_epoch, "steps_per_epoch"),
                    ("validation_data", validation_data, validation_steps, "validation_steps")):
                if steps is None and data.is_batch_iterable(given) and data.is_one_pass(given):
                    raise ValueError(
                        f"fit: {what} is a generator (one pass) but fit runs "
                        f"{epochs - initial_epoch} epochs: give {name} (batches per "
                        f"{'epoch' if what == 'data' else 'validation'}) with a generator "
                        "that never ends, or a re-iterable (a list, a DataLoader)")
        first = X
        if y is None and data.is_batch_iterable(X):
            first = None
        source, val = self._building_from(first, lambda: self._prepare_fit_data(
            X, y, sample_weight, validation_data, validation_split, callbacks,
            steps_per_epoch, validation_steps), iterable=X)

        if distributed.active(comm) is not None and not comm.is_root:
            verbose = 0                   # data-parallel: rank 0 alone shows progress
        history = History()
        callbacks = [history, *fit_callbacks(self, callbacks, verbose, epochs=epochs,
                                             steps=source_steps(source, batch_size),
                                             rows=source.n, batch_size=batch_size,
                                             validation=val is not None)]
        self._comm = self._start_data_parallel(
            comm, training_rows=source.n, validation_rows=None if val is None else val.n,
            batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch, shuffle=shuffle)
        self._callbacks = callbacks     # BackupAndRestore saves and restores their states
        for cb in callbacks:
            cb.set_model(self)
        self.stop_training = False
        self._resume_at = None
        for cb in callbacks:
            cb.on_train_begin()
        resume, self._resume_at = self._resume_at, None
        start = initial_epoch if resume is None else resume["epoch"]
        if resume is not None and "epoch_rng" not in resume:   # at an epoch's start
            resume = None
        with _interrupts_between_steps(self):
            for epoch in range(start, epochs):
                for cb in callbacks:
                    cb.on_epoch_begin(epoch)
                logs = self._train_epoch(source, batch_size, shuffle, epoch, callbacks, resume)
                resume = None
                if val is not None:
                    logs.update({f"val_{k}": v for k, v in self._evaluate_source(
                        val, batch_size=None).items()})
                self.epochs_trained += 1
                self._position = {"epoch": epoch + 1, "batch": 0}
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        for cb in callbacks:
            cb.on_train_end()
        self._end_data_parallel()
        self._callbacks = ()
        return history

    #: Epochs completed over the model's life (all ``fit`` calls; saved with the model).
    epochs_trained = 0
    _position = None
    _resume_at = None
    _interrupted = False

    def _prepare_fit_data(self, X, y, w, validation_data, validation_split, callbacks,
                          steps=None, validation_steps=None):
        """Batch sources for ``fit``: ``(train, validation or None)``."""
        source = self._make_source(X, y, w, steps=steps)
        val = None
        iterable_val = validation_data is not None and data.is_batch_iterable(validation_data)
        if validation_steps is not None and not iterable_val:
            raise ValueError("fit: validation_steps applies only to validation_data given as "
                             "an iterable of batches")
        if validation_data is not None:
            if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3) \
                    and not iterable_val:
                vw = validation_data[2] if len(validation_data) == 3 else None
                val = self._make_source(validation_data[0], validation_data[1], vw, "X_val")
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
            source, val = _split_source(source, n - n_val)
        # The epoch logs fit will write: a monitor naming anything else is refused now, before
        # an epoch changes the weights (unless a user callback listed before it may add keys).
        logged = ["loss", *(m.name for m in self.metrics)]
        if val is not None:
            logged += [f"val_{k}" for k in logged]
        adds_keys = False
        for cb in callbacks:
            monitor = getattr(cb, "monitor", None)
            if isinstance(monitor, str) and monitor not in logged and not adds_keys:
                if val is None and monitor.startswith("val_") and monitor[4:] in logged:
                    raise ValueError(f"fit: {type(cb).__name__} monitors {monitor!r}, but "
                                     "there is no validation data: pass validation_data or "
                                     "validation_split")
                raise ValueError(f"fit: {type(cb).__name__} monitor {monitor!r} is not among "
                                 f"the logged values {logged} (metrics come from "
                                 "compile(metrics=[...]))")
            adds_keys = adds_keys or (
                not type(cb).__module__.startswith("xpnn.")
                and getattr(type(cb), "on_epoch_end", None) is not Callback.on_epoch_end)
        return source, val

    def _train_epoch(self, source, batch_size, shuffle, epoch, callbacks=(), resume=None):
        """One epoch: the loss and metrics over its batches, as host floats.

        ``resume`` (a position from :meth:`_capture_position`) continues an epoch that was cut
        short: the same permutation, from the batch it had reached.
        """
        rng = self.rng
        if resume is not None:
            rng.bit_generator.state = resume["epoch_rng"]
        epoch_rng = rng.bit_generator.state
        perm = None
        if shuffle == "batch" and source.n is not None:
            perm = data.batch_permutation(rng, source.n, batch_size)
        elif shuffle and source.n is not None:
            perm = rng.permutation(source.n)
        sums = {"loss": 0.0, "weight": 0.0, "batch": 0}
        for m in self.metrics:
            m.reset()
        if resume is not None:
            rng.bit_generator.state = resume["rng"]
            sums = {"loss": resume["loss"], "weight": resume["weight"], "batch": resume["batch"]}
            # Data-parallel: the saved metric sums cover every rank's rows; rank 0 continues
            # from them and the others from zero, so the epoch-end sum over ranks is the total.
            keep = self._comm is None or self._comm.is_root
            for m, state in zip(self.metrics, resume["metrics"], strict=True):
                if keep:
                    m.set_state(self.backend, state)
                else:
                    m.reset()
        self._position = {"epoch": epoch, "epoch_rng": epoch_rng, "sums": sums}
        # On the host a check per step is cheap; on a GPU it would sync every step, so check
        # once per epoch and, if the epoch went bad, replay it with per-step checks.
        per_step = not self.backend.is_gpu or not source.replayable
        saved = (self._snapshot_state(), sums["batch"]) if source.replayable else None
        self._run_batches(source, batch_size, epoch, perm, sums, callbacks, per_step, saved)
        if sums["batch"] == 0:              # nothing trained: an iterable that is used up
            raise ValueError(data.no_batches_message(source, f"fit: in epoch {epoch}"))
        if not per_step:
            value = _host_float(sums["loss"])
            if not (math.isfinite(value) and self._weights_finite(fastpath.select(self))):
                self._restore_state(saved[0])
                sums.update(loss=0.0, weight=0.0, batch=saved[1])
                self._run_batches(source, batch_size, epoch, perm, sums, (), True, saved)
        if saved is not None and not self._outputs_finite(source):
            last = sums["batch"] - 1          # finite weights whose outputs overflow
            self._undo_step(source, batch_size, epoch, perm, saved, None, last)
            raise diverged("non-finite", epoch, last, "the outputs on the training data")
        logs = {"loss": _host_float(sums["loss"]) / _host_float(sums["weight"])}
        if self._comm is not None:
            self._comm.reduce_metrics(self.metrics)
        logs.update({m.name: m.result() for m in self.metrics})
        return logs

    def _run_batches(self, source, batch_size, epoch, perm, sums, callbacks, check, saved,
                     stop=None):
        """Train on the epoch's batches from ``sums["batch"]`` on (up to ``stop``), adding to
        ``sums`` (device scalars) and the metrics. With ``check`` every step is verified and a
        bad step undone (by replaying the epoch from ``saved`` up to it) before
        TrainingDivergedError is raised."""
        xp = self.backend.xp
        # Backend-specific fast trainer for plain MLPs (same numbers), or the generic step.
        trainer = fastpath.select(self)
        step = self._train_step if trainer is None else trainer.train_step
        start = sums["batch"]
        for b, xb, tb, wb in source.batches(self, perm, batch_size, trainer, start=start,
                                            stop=stop):
            for cb in callbacks:
                cb.on_train_batch_begin(b)
            before = None if saved is not None or not check else self._snapshot_state()
            with _quiet():     # a step that overflows: TrainingDivergedError says it all
                loss, out = step(xb, tb, wb)
            if check:
                error = self._step_problem(loss, trainer, epoch, b)
                if error is not None:
                    self._undo_step(source, batch_size, epoch, perm, saved, before, b)
                    raise error
            rows = xb.shape[0] if wb is None else xp.sum(wb)
            size = xb.shape[0]
            if self._comm is not None:    # data-parallel: the loss is the global batch's
                rows, size = self._comm.step_weight, self._comm.batch_rows
            sums["loss"] = sums["loss"] + loss * rows
            sums["weight"] = sums["weight"] + rows
            sums["batch"] = b + 1
            if out is not None:
                for m in self.metrics:
                    m.update(xp, out, tb)
            for cb in callbacks:
                cb.on_train_batch_end(b, {"size": size, "loss": loss})
            if self._interrupted:
                self._interrupted = False
                raise KeyboardInterrupt

    def _undo_step(self, source, batch_size, epoch, perm, saved, before, bad):
        """Put the model back to its state before batch ``bad`` of this epoch: restore the
        snapshot from just before the step, or replay the epoch from its snapshot up to it."""
        if before is not None:
            self._restore_state(before)
            return
        state, start = saved
        self._restore_state(state)
        if bad > start:
            sums = {"loss": 0.0, "weight": 0.0, "batch": start}
            self._run_batches(source, batch_size, epoch, perm, sums, (), False, saved, stop=bad)

    def train_on_batch(self, X, y, sample_weight=None) -> float:
        """One optimizer step on one batch; returns the batch loss (before the step).

        If the loss or any weight becomes NaN or infinite, ``TrainingDivergedError`` is raised
        and the model is left as it was before the call.
        """
        self._require_compiled("train_on_batch")
        Xd, yd = self._building_from(X, lambda: self._prepare_Xy(X, y))
        wd = None if sample_weight is None else self._prepare_w(sample_weight, Xd.shape[0])
        before = self._snapshot_state()
        with _quiet():
            loss, _ = self._train_step(Xd, yd, wd)
        error = self._step_problem(loss, None, 0, 0)
        if error is None and not self._outputs_finite(data.ArrayBatches(Xd, yd)):
            error = diverged("non-finite", 0, 0, "the outputs on the batch")
        if error is not None:
            self._restore_state(before)
            raise error
        return _host_float(loss)

    def _outputs_finite(self, source) -> bool:
        """Whether the network's outputs (inference) are finite on every row of ``source``:
        each step's finite loss covers the weights before it, this covers the last ones.
        First a bound from the weights and the data's largest ``|x|``
        (:func:`xpnn.guard.outputs_bounded`, no data read); only when it is inconclusive, a
        forward pass over the data. True for an iterable of batches (nothing to bound)."""
        m = source.max_abs(self)
        if m is None or outputs_bounded(self, m):
            return True
        xp, bad = self.backend.xp, 0
        with _quiet():
            for _, xb, _, _ in source.batches(self, None, 1024):
                if xb.shape[0] and not all_finite(xp, [self._forward(xb)]):
                    bad = 1
                    break
        if self._comm is not None:         # data-parallel: each rank checked its rows
            bad = self._comm.sum_floats(bad)[0]
        return not bad

    def _step_problem(self, loss, trainer, epoch, batch):
        """The TrainingDivergedError for a step whose loss or weights are not finite, or None
        (the check every step passes through, generic or fast)."""
        value = _host_float(loss)
        if not math.isfinite(value):
            return diverged(value, epoch, batch, "loss")
        if not self._weights_finite(trainer):
            return diverged("non-finite", epoch, batch, "a weight")
        return None

    def _capture_position(self) -> dict:
        """Where training stands, as JSON-able data, for an exact resume: the epoch, the batch
        reached within it, the random generator's state at the epoch's start (which gives its
        permutation) and now, and the epoch's running sums. In data-parallel training every
        rank calls this at the same step: the metrics' sums are those of all ranks' rows."""
        pos = self._position
        if pos is None or "sums" not in pos:
            epoch = self.epochs_trained if pos is None else pos["epoch"]
            return {"epoch": int(epoch), "batch": 0}
        sums = pos["sums"]
        metrics = [m.get_state() for m in self.metrics]
        if self._comm is not None:      # data-parallel: each rank holds its rows' sums
            metrics = self._comm.sum_metric_states(metrics)
        return {"epoch": int(pos["epoch"]), "batch": int(sums["batch"]),
                "epoch_rng": pos["epoch_rng"], "rng": self.rng.bit_generator.state,
                "loss": _host_float(sums["loss"]), "weight": _host_float(sums["weight"]),
                "metrics": metrics}

    # ------------------------------------------------------------------ inference
    def predict(self, X, batch_size: int | None = None, verbose: int = 0,
                steps: int | None = None):
        """Outputs of the network for ``X``, as an array of the model's backend (on its device).

        Memmaps, h5py and zarr data, and host data larger than ``model.resident_budget``, are
        read and converted ``batch_size`` rows at a time (default 1024 then), into one
        preallocated result. ``X`` may also be an iterable of batches, as ``fit`` takes (a
        ``torch.utils.data.DataLoader``, a generator, a list of ``(x, y)`` pairs): each item
        is ``x`` or a tuple whose first element is ``x`` (targets are ignored), ``steps``
        batches of it (default: until it ends), and the outputs are concatenated in order.
        Use :func:`xpnn.to_numpy` to bring the outputs to
        the host. ``verbose``: 0 silent, 1 a bar over the batches on a terminal (else a line at
        the end), 2 the line.
        """
        self._require_weights("predict")
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer))
                                       or isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"predict: batch_size must be >= 1, got {batch_size!r}")
        if steps is not None:
            check_int("steps", steps, "predict", 1)
        if data.is_batch_iterable(X):
            source = data.IterableBatches(X, steps, what="X", targets=False)
            progress = step_progress(verbose, steps, "predict")
            parts = []
            for _, x, _, _ in source.batches(self, None, None):
                parts.append(self._forward(x))
                if progress is not None:
                    progress.update()
            if not parts:
                raise ValueError("predict: X yielded no batches")
            if progress is not None:
                progress.close()
            return self.backend.xp.concat(parts, axis=0)
        if steps is not None:
            raise ValueError("predict: steps applies only to an iterable of batches")
        if self._streams(X):
            self._check_host_X(X)
            step = batch_size or 1024
            source = data.HostBatches(X, None, None, "X")
            progress = step_progress(verbose, source_steps(source, step), "predict")
            out = None
            for b, x, _, _ in source.batches(self, None, step):
                y = self._forward(x)
                if out is None:                # one result array, filled batch by batch
                    out = self.backend.zeros((source.n, y.shape[1]), self.dtype)
                out[b * step:b * step + y.shape[0], ...] = y
                if progress is not None:
                    progress.update()
        else:
            Xd = self._prepare_X(X)
            n = Xd.shape[0]
            progress = step_progress(verbose, 1 if batch_size is None or batch_size >= n
                                     else -(-n // batch_size), "predict")
            out = self._predict_arrays(Xd, batch_size, progress)
        if progress is not None:
            progress.close()
        return out

    def _predict_arrays(self, X, batch_size=None, progress=None):
        n = X.shape[0]
        if batch_size is None or batch_size >= n:
            out = self._forward(X)
            if progress is not None:
                progress.update()
            return out
        parts = []
        for i in range(0, n, batch_size):
            parts.append(self._forward(X[i:min(i + batch_size, n), ...]))
            if progress is not None:
                progress.update()
        return self.backend.xp.concat(parts, axis=0)

    def evaluate(self, X, y=None, batch_size: int | None = None, sample_weight=None,
                 verbose: int = 0, steps: int | None = None) -> dict:
        """Loss and every compiled metric on ``(X, y)``, as ``{"loss": ..., "accuracy": ...}``.

        ``X`` may be anything ``fit`` takes, an iterable of batches included (``steps``: how
        many of its batches, needed for an endless generator). ``verbose``: 0 silent, 1 a bar
        over the batches on a terminal (else a line with the results), 2 the line.
        """
        self._require_compiled("evaluate")
        self._require_weights("evaluate")
        for name, value in (("batch_size", batch_size), ("steps", steps)):
            if value is not None:
                check_int(name, value, "evaluate", 1)
        if steps is not None and not (y is None and data.is_batch_iterable(X)):
            raise ValueError("evaluate: steps applies only to an iterable of batches")
        check_verbose(verbose, "evaluate")
        return self._evaluate_source(self._make_source(X, y, sample_weight, steps=steps),
                                     batch_size, verbose)

    def _evaluate_arrays(self, X, t, batch_size=None):
        return self._evaluate_source(data.ArrayBatches(X, t), batch_size)

    def _evaluate_source(self, source, batch_size=None, verbose=0):
        xp = self.backend.xp
        if batch_size is None:
            batch_size = source.n if isinstance(source, data.ArrayBatches) else 1024
        progress = step_progress(verbose, source_steps(source, batch_size or 1), "evaluate")
        metrics = [get_metric(m) for m in self.metrics]
        for m, src in zip(metrics, self.metrics, strict=True):
            if isinstance(m, Accuracy):
                m.multilabel = src.multilabel
        loss_sum, total, seen = 0.0, 0.0, 0
        for _, xb, tb, wb in source.batches(self, None, batch_size or 1):
            seen += 1
            if xb.shape[0] == 0:           # data-parallel: none of this batch on this rank
                continue
            if self._fused:
                loss = self.loss.forward_logits(self._forward(xb, logits=True), tb, wb)
                out = self.loss.p
            else:
                out = self._forward(xb)
                loss = self.loss.forward(out, tb, wb)
            rows = xb.shape[0] if wb is None else xp.sum(wb)
            loss_sum = loss_sum + loss * rows
            total = total + rows
            for m in metrics:
                m.update(xp, out, tb)
            if progress is not None:
                progress.update()
        if seen == 0:                      # an iterable that is used up
            raise ValueError(data.no_batches_message(source, "evaluate"))
        loss_sum, total = _host_float(loss_sum), _host_float(total)
        if self._comm is not None:       # data-parallel: every rank evaluated its shard
            loss_sum, total = self._comm.sum_floats(loss_sum, total)
            self._comm.reduce_metrics(metrics)
        result = {"loss": loss_sum / total, **{m.name: m.result() for m in metrics}}
        if progress is not None:
            progress.close(result)
        return result

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
            if w.dtype.kind not in "biuf":
                raise TypeError(f"set_weights: array {i} ({p.name} of layer "
                                f"{self._owner_index(p)}) must hold real numbers, got dtype "
                                f"{w.dtype}")
            host.append(_cast_finite(w, self.dtype, f"set_weights: array {i}"))
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
        """Pickle/copy support: the state :meth:`save` writes (configuration, weights, optimizer
        state, random-generator state, epochs trained) as JSON data and NumPy arrays; the
        backend is resolved again by name when unpickled."""
        config, arrays = serialization.state_of(self)
        return {"xpnn": config, "arrays": arrays,
                "extra": {k: v for k, v in self.__dict__.items() if k == "fastpath"}}

    def __setstate__(self, state):
        if "xpnn" not in state:            # pickled with the earlier layout
            config = dict(state["config"], version=1)
            arrays = {f"param_{i}": w for i, w in enumerate(state["weights"] or ())}
            payload = serialization.from_state(config, arrays, "pickled model")
            self.__dict__.update(serialization.build(payload, type(self)).__dict__)
            self.__dict__.update(state["extra"])
            if self.optimizer is not None:
                self.optimizer.state = [
                    {k: self.backend.asarray(v) if isinstance(v, np.ndarray) else v
                     for k, v in s.items()} for s in state["optimizer_state"]]
                self.optimizer.iterations = state["optimizer_iterations"]
            self.rng.bit_generator.state = state["rng"]
            return
        payload = serialization.from_state(state["xpnn"], state["arrays"], "pickled model")
        self.__dict__.update(serialization.build(payload, type(self)).__dict__)
        self.__dict__.update(state["extra"])

    def export(self, path, format: str = "onnx", comm=None, **options):
        """Write the trained network for inference in another runtime; returns the path.

        ``format="onnx"``: an ONNX graph (opset 17 by default) with input ``"x"`` of shape
        (batch, n_features) and output ``"y"``, in the model's dtype, Dropout left out; see
        :func:`xpnn.export.export_onnx` for ``options``. Needs the ``onnx`` package
        (``pip install "xpnn[onnx]"``). After a data-parallel ``fit`` (or given ``comm``),
        rank 0 alone writes, as :meth:`save`.
        """
        from .export import export

        return self._write_once(comm, export, self, path, format=format, **options)

    def save(self, path, comm=None) -> str:
        """Write the complete model to a single ``.npz`` file (``.npz`` is appended when
        missing) and return the path written: architecture, compile settings, weights, the
        optimizer's state (moments, momentum buffers, step counts, current lr), the random
        generator's state and the epochs trained, with a checksum. The file is written
        atomically.

        No pickle is involved; read it back with :func:`xpnn.load`. Format:
        :mod:`xpnn.serialization`. After a data-parallel ``fit(comm=...)`` (or given
        ``comm``) only rank 0 writes, and every rank returns once the file is complete: every
        rank must call ``save`` then.
        """
        return self._write_once(comm, serialization.save, self, path)

    def _write_once(self, comm, write, *args, **kwargs):
        """``write(*args, **kwargs)`` (which writes a file and returns its path): in one process
        here; after a data-parallel ``fit(comm=...)`` (or given ``comm``) on rank 0 alone, every
        rank returning once the file is complete, with rank 0's result. A failure on rank 0
        aborts every rank."""
        comm = distributed.active(comm if comm is not None else self._last_comm)
        if comm is None:
            return write(*args, **kwargs)
        result = None
        if comm.is_root:
            result = distributed.or_abort(comm, lambda: write(*args, **kwargs))
        comm.barrier(write.__name__)
        return comm.broadcast(result)


# NumPy's floating-point warnings silenced inside a training step: a step that overflows is
# caught by the finiteness check, and TrainingDivergedError says what happened.
def _quiet():
    return np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")


def _cast_finite(host: np.ndarray, dtype: str, what: str) -> np.ndarray:
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


def _host_float(x) -> float:
    """A device scalar (or a Python number) as a Python float."""
    return float(x)


def _split_source(source, cut):
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


@contextlib.contextmanager
def _interrupts_between_steps(model):
    """Let Ctrl-C (SIGINT) take effect only between training steps: the handler records it and
    the loop raises KeyboardInterrupt after the step in progress has been applied in full. A
    second Ctrl-C before that interrupts at once. (Main thread only; elsewhere a no-op.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if model._interrupted:
            raise KeyboardInterrupt
        model._interrupted = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except (ValueError, OSError):      # no signals here (e.g. an embedded interpreter)
        yield
        return
    model._interrupted = False
    try:
        yield
        if model._interrupted:
            raise KeyboardInterrupt
    finally:
        model._interrupted = False
        signal.signal(signal.SIGINT, previous)


def load(path, backend=None) -> Sequential:
    """Read a model written by :meth:`Sequential.save`, ready to continue training.

    ``fit`` on the loaded model continues exactly where the saved one stood: same weights,
    optimizer moments and step counts, learning rate, and random generator (the next shuffles
    and dropout masks).

    Parameters
    ----------
    path : str or path-like
        The file; ``"model"`` finds ``"model.npz"`` when there is no ``"model"`` (as
        :meth:`Sequential.save` names it).
    backend : str, optional
        Backend to load onto; by default the one it was saved from.

    Raises
    ------
    ValueError
        If the file is not a valid xpnn model file (damaged, truncated, of another format, not
        a regular file, or describing an invalid model); the message names the file and the
        problem. An unknown ``backend`` is named as the argument, before the file is read.
    FileNotFoundError
        If there is no such file.
    """
    if backend is not None:
        try:
            get_backend(backend)
        except ValueError as exc:
            raise ValueError(f"load: backend={backend!r} is not a backend xpnn knows ({exc})"
                             ) from None
    path = serialization.find(path)
    return serialization.build(serialization.read(path), Sequential, backend=backend)

__all__ = ["Sequential", "TrainingDivergedError", "load"]

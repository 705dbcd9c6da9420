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

import numpy as np

from . import data, distributed, inputs, serialization, sources, threads, training
from ._validation import check_config_in_dtype, check_dtype, check_int
from .backend import DTYPES, get_backend, host_rng, to_numpy
from .callbacks import History
from .errors import TrainingDivergedError
from .layers import LAYERS, Layer
from .layers.ensemble import check_members, mean_of_members, repeat_rows
from .losses import LOSS_CLASSES, get_loss
from .metrics import Accuracy, get_metric
from .optimizers import OPTIMIZERS, get_optimizer
from .progress import check_verbose, fit_callbacks, source_steps, step_progress
from .training import TrainingRun

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
    Learn XOR:

    >>> import numpy as np
    >>> from xpnn import Adam, Dense, Sequential, Sigmoid, Tanh
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype="float32")
    >>> y = np.array([0, 1, 1, 0], dtype="float32")
    >>> model = Sequential(Dense(2, 8), Tanh(), Dense(8, 1), Sigmoid(), seed=0)
    >>> model = model.compile(loss="binary_crossentropy", optimizer=Adam(0.05),
    ...                       metrics=["accuracy"])
    >>> history = model.fit(X, y, epochs=300, batch_size=4, verbose=0)
    >>> model.predict(X).shape
    (4, 1)
    >>> model.evaluate(X, y)["accuracy"]
    1.0
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
        #: The communicator of the last data-parallel ``fit`` (``save`` writes on its rank 0).
        self._last_comm = None
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
        the first layer left ``in_features`` open).

        Parameters
        ----------
        n_features_in : int
            Number of input features (columns of ``X``).

        Returns
        -------
        Sequential
            ``self``, built.
        """
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
        check_members(self.layers)
        # An ensemble ends in EnsembleMean: the output layer is the one before it.
        ensemble = self.layers[-1] if getattr(self.layers[-1], "averages_members", False) \
            and len(self.layers) > 1 else None
        last = self.layers[-1] if ensemble is None else self.layers[-2]
        loss = get_loss(loss, last_layer=next(
            (layer for layer in reversed(self.layers) if type(layer).__name__ in
             ("Sigmoid", "Softmax", "Dense")), last))
        out = next((layer for layer in reversed(self.layers)
                    if type(layer).__name__ != "Identity"
                    and not getattr(layer, "averages_members", False)), last)
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
        self._members = 1 if ensemble is None else ensemble.k
        self._repeat = 1 if ensemble is None or not all(    # EnsembleView(shared_batches=False):
            getattr(layer, "shared_batches", True) for layer in self.layers) else ensemble.k
        self._logits_end = -1 if ensemble is None else -2
        return self

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

    # ------------------------------------------------------------------ batch sources
    #: Largest converted in-memory training set (bytes) that ``fit`` puts on the device up
    #: front; larger host arrays, and memmaps, h5py and zarr data at any size, are read one
    #: batch at a time (:mod:`xpnn.data`). Set it per model to override.
    resident_budget = data.RESIDENT_BUDGET

    # ------------------------------------------------------------------ forward / backward
    #: Ensemble members k (an ensemble ends in EnsembleMean: targets are repeated k times in
    #: training) and where the layers before the fused output activation end.
    #: Targets are repeated ``_repeat`` times (k, or 1 when each member has its own batches).
    _members, _repeat, _logits_end = 1, 1, -1

    def _forward(self, x, training=False, logits=False):
        layers = self.layers[:self._logits_end] if logits else self.layers
        for layer in layers:
            x = layer.forward(x, training=training)
        return x

    def _backprop(self, xb, tb, wb=None):
        """Forward pass in training mode, the loss, and the backward pass that leaves every
        parameter's gradient in ``p.grad``; returns (loss, output). The walk shared by the
        training step and :class:`xpnn.flat.FlatObjective`."""
        loss_fn = self.loss
        k = self._repeat
        if k > 1:        # an ensemble: each member's rows get the targets (and weights)
            xp = self.backend.xp
            tb, wb = repeat_rows(xp, tb, k), None if wb is None else repeat_rows(xp, wb, k)
        if self._fused:
            z = self._forward(xb, training=True, logits=True)
            loss = loss_fn.forward_logits(z, tb, wb)
            delta = loss_fn.backward_logits()
            layers, out = self.layers[:self._logits_end], loss_fn.p
        else:
            out = self._forward(xb, training=True)
            loss = loss_fn.forward(out, tb, wb)
            delta = loss_fn.backward()
            layers = self.layers
        for layer in reversed(layers):
            delta = layer.backward(delta)
            if delta is None:   # the first layer with weights: dL/dx is not needed
                break
        return loss, out if k == 1 else mean_of_members(self.backend.xp, out, k)

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
        initial_epoch : int
            Index of the first epoch (callbacks and logs count from it).
        comm : xpnn.distributed.Communicator, optional
            Train data-parallel over ``comm.size`` processes (from
            :func:`xpnn.distributed.init`; see :mod:`xpnn.distributed`): every rank passes the
            same data, ``batch_size`` is the global batch, each rank computes its slice of
            every batch, and every rank ends with the same weights and logs. Only rank 0
            prints. Any exception on one rank, other than TrainingDivergedError (which every
            rank raises together), aborts every rank.
        validation_steps : int, optional
            Batches per validation when ``validation_data`` is an iterable of batches (a
            generator continues where the last validation stopped); without it each
            validation is one pass, so an endless generator needs it.

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
        source, val = sources.building_from(self, first, lambda: sources.fit_sources(
            self, X, y, sample_weight, validation_data, validation_split, callbacks,
            steps_per_epoch, validation_steps))

        if distributed.active(comm) is not None and not comm.is_root:
            verbose = 0                   # data-parallel: rank 0 alone shows progress
        history = History()
        callbacks = [history, *fit_callbacks(self, callbacks, verbose, epochs=epochs,
                                             steps=source_steps(source, batch_size),
                                             rows=source.n, batch_size=batch_size,
                                             validation=val is not None)]
        run = TrainingRun(self, callbacks, comm, training_rows=source.n,
                          validation_rows=None if val is None else val.n,
                          batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch,
                          shuffle=shuffle)
        if run.data_parallel is not None:
            self._last_comm = comm
        run.fit(source, val, batch_size, shuffle, epochs, initial_epoch)
        return history

    #: Epochs completed over the model's life (all ``fit`` calls; saved with the model).
    epochs_trained = 0
    #: BLAS threads for this model's ``fit``/``predict``/``evaluate`` (None: chosen for the
    #: work and the machine's load, see ``xpnn.threads``).
    n_threads = None

    def train_on_batch(self, X, y, sample_weight=None) -> float:
        """One optimizer step on one batch; returns the batch loss (before the step).

        If the loss or any weight becomes NaN or infinite, ``TrainingDivergedError`` is raised
        and the model is left as it was before the call.

        Parameters
        ----------
        X : array-like (batch, n_features)
            The batch's inputs.
        y : array-like (batch,) or (batch, n_outputs)
            Its targets.
        sample_weight : array-like (batch,), optional
            Non-negative weights of the rows.

        Returns
        -------
        float
            The batch loss computed by the forward pass, before the update.
        """
        self._require_compiled("train_on_batch")
        Xd, yd = sources.building_from(self, X, lambda: inputs.prepare_Xy(self, X, y))
        wd = None if sample_weight is None else inputs.prepare_w(self, sample_weight,
                                                                 Xd.shape[0])
        return TrainingRun(self).train_on_batch(Xd, yd, wd)

    # ------------------------------------------------------------------ inference
    @threads.inference
    def predict(self, X, batch_size: int | None = None, verbose: int = 0,
                steps: int | None = None):
        """Outputs of the network for ``X``, as an array of the model's backend (on its device).

        Memmaps, h5py and zarr data, and host data larger than ``model.resident_budget``, are
        read and converted ``batch_size`` rows at a time (default 1024 then), into one
        preallocated result. ``X`` may also be an iterable of batches, as ``fit`` takes (a
        ``torch.utils.data.DataLoader``, a generator, a list of ``(x, y)`` pairs): each item
        is ``x`` or a tuple whose first element is ``x`` (targets are ignored), ``steps``
        batches of it (default: until it ends), and the outputs are concatenated in order.
        Use :func:`xpnn.to_numpy` to bring the outputs to the host.

        Parameters
        ----------
        X : array-like (n_samples, n_features), or an iterable of batches
            The inputs, as ``fit`` takes them.
        batch_size : int, optional
            Rows per forward pass (default: all at once for resident data, 1024 for data read
            batch by batch).
        verbose : {0, 1, 2}
            0 silent, 1 a bar over the batches on a terminal (else a line at the end), 2 the
            line.
        steps : int, optional
            Batches to read when ``X`` is an iterable of batches (default: until it ends).

        Returns
        -------
        array (n_samples, n_outputs)
            The last layer's outputs (probabilities after Softmax/Sigmoid), of the model's
            backend and dtype.
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
        if sources.streams(self, X):
            sources.check_host_X(self, X)
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
            Xd = inputs.prepare_X(self, X)
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

        Parameters
        ----------
        X : array-like (n_samples, n_features), or an iterable of batches
            Anything ``fit`` takes.
        y : array-like, optional
            Targets (None when ``X`` yields ``(x, y)`` batches).
        batch_size : int, optional
            Rows per forward pass.
        sample_weight : array-like (n_samples,), optional
            Non-negative weights: the loss is ``Σ w_n ℓ_n / Σ w_n``.
        verbose : {0, 1, 2}
            0 silent, 1 a bar over the batches on a terminal (else a line with the results), 2
            the line.
        steps : int, optional
            Batches to read when ``X`` is an iterable of batches (needed for an endless
            generator).

        Returns
        -------
        dict[str, float]
            ``{"loss": ..., <metric>: ...}`` over all the rows.
        """
        self._require_compiled("evaluate")
        self._require_weights("evaluate")
        for name, value in (("batch_size", batch_size), ("steps", steps)):
            if value is not None:
                check_int(name, value, "evaluate", 1)
        if steps is not None and not (y is None and data.is_batch_iterable(X)):
            raise ValueError("evaluate: steps applies only to an iterable of batches")
        check_verbose(verbose, "evaluate")
        return training.evaluate(self, sources.make_source(self, X, y, sample_weight,
                                                           steps=steps), batch_size, verbose)

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list[np.ndarray]:
        """Copies of the parameters as NumPy arrays, in layer order: W1, b1, W2, b2, ..."""
        self._require_weights("get_weights")
        return [np.array(to_numpy(p.data), copy=True) for p in self.params]

    def set_weights(self, weights) -> None:
        """Replace the parameters. All shapes are checked before anything changes.

        Parameters
        ----------
        weights : sequence of array-like
            One array per parameter, in the order and shapes :meth:`get_weights` returns
            (W1, b1, W2, b2, ...), of any backend; finite real values.
        """
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
            host.append(inputs.cast_finite(w, self.dtype, f"set_weights: array {i}"))
        for p, w in zip(self.params, host, strict=True):
            p.data[...] = self.backend.asarray(w, dtype=self.dtype)

    def _owner_index(self, param):
        return next(i for i, layer in enumerate(self.layers)
                    if any(q is param for q in layer.params))

    def count_params(self) -> int:
        """Number of trainable scalars.

        Returns
        -------
        int
            The sum of every layer's parameter sizes.
        """
        return sum(layer.n_params for layer in self.layers)

    # ------------------------------------------------------------------ description
    def summary(self, print_fn=print) -> str:
        """A table of layers, output shapes and parameter counts (printed and returned).

        Parameters
        ----------
        print_fn : callable or None
            Called with the table's text; None prints nothing.

        Returns
        -------
        str
            The table.
        """
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
        """Move the model (weights, optimizer state) to another backend, in place.

        Parameters
        ----------
        backend : str or Backend
            ``"numpy"``, ``"cupy"``, ``"torch"``, ``"array_api_strict"`` or a backend object.

        Returns
        -------
        Sequential
            ``self``.
        """
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
            if self.loss.get_config():           # e.g. label_smoothing
                config["compile"]["loss_config"] = self.loss.get_config()
        return config

    @classmethod
    def from_config(cls, config: dict, weights=None, backend=None, source="config"):
        """A model from :meth:`get_config` (compiled again if it was), with ``weights`` set.

        Parameters
        ----------
        config : dict
            What :meth:`get_config` returned.
        weights : sequence of array-like, optional
            Set with :meth:`set_weights` (the model is built first).
        backend : str, optional
            Backend of the new model (default: the one in ``config``).
        source : str
            Where ``config`` came from, named in error messages (a file name).

        Returns
        -------
        Sequential
        """
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
            model.compile(loss=LOSS_CLASSES[compiled["loss"]](**compiled.get("loss_config", {})),
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

        Parameters
        ----------
        path : str or os.PathLike
            File to write.
        format : {"onnx"}
            The format.
        comm : xpnn.distributed.Communicator, optional
            Write from rank 0 only (default: the communicator of the last data-parallel
            ``fit``, if any).
        **options
            Passed to the writer: ``opset``, ``input_name``, ``output_name`` for ONNX.

        Returns
        -------
        str
            The path written.
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

        Parameters
        ----------
        path : str or os.PathLike
            File to write.
        comm : xpnn.distributed.Communicator, optional
            Write from rank 0 only (default: the communicator of the last data-parallel
            ``fit``, if any).

        Returns
        -------
        str
            The path written (with ``.npz`` appended when it was missing), on every rank.
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

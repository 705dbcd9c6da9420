"""Training callbacks: :class:`History`, :class:`EarlyStopping`, :class:`LearningRateScheduler`,
:class:`WeightDecayScheduler`, :class:`DropoutScheduler`, :class:`ReduceLROnPlateau` (and
:class:`xpnn.ProgressBar` in :mod:`xpnn.progress`).

``fit`` calls ``on_train_begin()``; for every epoch ``on_epoch_begin(epoch)``, then for every
batch ``on_train_batch_begin(batch)`` and ``on_train_batch_end(batch, logs)`` with
``logs = {"size": rows, "loss": batch loss}`` (the loss is an array of the model's backend,
0-d: reading it with ``float`` costs a device synchronisation on a GPU), then
``on_epoch_end(epoch, logs)`` with ``logs = {"loss": ..., "accuracy": ..., "val_loss": ...}``;
finally ``on_train_end()``. Setting ``model.stop_training = True`` ends training after the
current epoch.

A callback whose behaviour depends on what it has seen (counters, best values) returns it from
``get_state()`` as JSON-able data and takes it back with ``set_state(state)``, so that a
checkpoint can save it and a resumed ``fit`` continue where it stopped
(:class:`~xpnn.BackupAndRestore` stores them all; arrays are allowed too).
"""

from __future__ import annotations

import inspect
import math
import weakref

from ._validation import check_int, check_real
from .state import restore_weights, snapshot_weights


class Callback:
    """Base class; ``self.model`` is set by ``fit``, and ``self.run`` (the
    :class:`~xpnn.training.TrainingRun`) while ``fit`` runs."""

    model = None
    run = None

    def set_model(self, model):
        """Attach the model being trained (``fit`` calls it before ``on_train_begin``).

        Parameters
        ----------
        model : Sequential
            The model; the hooks read it as ``self.model``.
        """
        self.model = model

    def set_run(self, run):
        """Attach the run this callback takes part in (None once it has ended).

        Parameters
        ----------
        run : xpnn.training.TrainingRun or None
            The run of the current ``fit``, read as ``self.run`` by the hooks; None when the
            run ends.
        """
        self.run = run

    def on_train_begin(self, logs=None):
        """Called once when training starts, before the first epoch.

        Parameters
        ----------
        logs : dict or None
            Unused (None); kept for Keras's signature.
        """

    def on_epoch_begin(self, epoch, logs=None):
        """Called at the start of every epoch.

        Parameters
        ----------
        epoch : int
            Index of the epoch (0-based; the first one is ``fit``'s ``initial_epoch``).
        logs : dict or None
            Unused (None); kept for Keras's signature.
        """

    def on_train_batch_begin(self, batch, logs=None):
        """Called before every training step.

        Parameters
        ----------
        batch : int
            Index of the batch within the epoch (0-based).
        logs : dict or None
            Unused (None); kept for Keras's signature.
        """

    def on_train_batch_end(self, batch, logs=None):
        """Called after every training step.

        Parameters
        ----------
        batch : int
            Index of the batch within the epoch (0-based).
        logs : dict
            ``{"size": rows, "loss": batch loss}``; the loss is a 0-d array of the model's
            backend (``float(loss)`` synchronises with a GPU).
        """

    def on_epoch_end(self, epoch, logs=None):
        """Called at the end of every epoch, after validation.

        Parameters
        ----------
        epoch : int
            Index of the epoch (0-based).
        logs : dict[str, float]
            The epoch's mean loss and metrics, and their ``val_`` counterparts when there is
            validation data, e.g. ``{"loss": ..., "accuracy": ..., "val_loss": ...}``.
        """

    def on_train_end(self, logs=None):
        """Called once when training ends: after the last epoch, or the one that set
        ``model.stop_training`` (not when ``fit`` raises).

        Parameters
        ----------
        logs : dict or None
            Unused (None); kept for Keras's signature.
        """

    def get_state(self) -> dict:
        """What this callback must remember across an interruption: a dict of JSON values
        and arrays (default: nothing)."""
        return {}

    def set_state(self, state: dict) -> None:
        """Take back what :meth:`get_state` returned (called after ``on_train_begin``).

        Parameters
        ----------
        state : dict
            A dict returned by :meth:`get_state` (possibly after a round trip through a
            checkpoint file).
        """


class History(Callback):
    """Per-epoch logs of one ``fit``: ``history.history["loss"]``, ``["val_loss"]``, ...

    It becomes ``model.history`` when its first epoch ends (or when ``fit`` ends): a ``fit``
    that raises before an epoch completed leaves the model's previous History.

    Attributes
    ----------
    history : dict[str, list[float]]
        One list per logged quantity, one entry per epoch run, and ``"lr"``: the learning
        rate each epoch trained with (as Keras records it), to plot a schedule.
    epoch : list[int]
        Epoch indices (0-based) that ran.
    """

    # The model keeps its History (``model.history``): a weak reference back keeps that from
    # being a reference cycle, so a deleted model is freed at once, without the cycle
    # collector.
    _model_ref = None

    @property
    def model(self):
        """The model trained (None before ``fit``, or once that model was freed)."""
        return None if self._model_ref is None else self._model_ref()

    @model.setter
    def model(self, model):
        self._model_ref = None if model is None else weakref.ref(model)

    def __getstate__(self):
        """Pickle/copy without the model (a weak reference cannot be pickled)."""
        state = dict(self.__dict__)
        state.pop("_model_ref", None)
        return state

    def on_train_begin(self, logs=None):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:     # the rate this epoch trained with (schedules, plateaus)
            self.history.setdefault("lr", []).append(float(optimizer.lr))
        self._publish()

    def on_train_end(self, logs=None):
        self._publish()

    def _publish(self):
        """Become ``model.history``: once an epoch has ended (a ``fit`` that fails before
        that, e.g. on a bad learning-rate schedule, leaves the previous History in place)."""
        if self.model is not None:
            self.model.history = self

    def get_state(self):
        return {"history": {k: list(v) for k, v in self.history.items()},
                "epoch": list(self.epoch)}

    def set_state(self, state):
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.epoch = list(state["epoch"])

    def __getitem__(self, key):
        return self.history[key]

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights=True`` the model ends training with the weights of its best epoch,
    whether training stopped early or ran all its epochs (as Keras 3 does).

    Parameters
    ----------
    monitor : str
        A key of the epoch logs, e.g. ``"val_loss"``, ``"loss"``, ``"val_accuracy"``.
    patience : int
        Epochs without improvement to tolerate before stopping.
    min_delta : float
        Smallest change that counts as an improvement.
    mode : {"auto", "min", "max"}
        Whether lower or higher is better; ``"auto"`` picks ``"max"`` for accuracy and r2,
        ``"min"`` otherwise.
    restore_best_weights : bool
        Put back the best epoch's weights when training ends.

    Attributes
    ----------
    best : float
        Best monitored value seen.
    best_epoch : int
        Epoch (0-based) where it was seen.
    stopped_epoch : int or None
        Epoch after which training stopped early (None if it ran to the end).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True):
        patience = check_int("patience", patience, "EarlyStopping", 0)
        min_delta = check_real("min_delta", min_delta, "EarlyStopping")
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"EarlyStopping: monitor must be the name of a logged value, e.g. "
                             f"'val_loss', got {monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(float(min_delta))
        if mode == "auto":
            mode = "max" if monitor.split("val_")[-1] in ("accuracy", "acc", "r2") else "min"
        self.mode = mode
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping: monitor {self.monitor!r} is not among the logged "
                           f"values {sorted(logs)}; pass validation data to monitor 'val_*'")
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = snapshot_weights(self.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            restore_weights(self.model, self.best_weights)

    def get_state(self):
        return {"wait": self.wait, "best": self.best, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "best_weights": self.best_weights}

    def set_state(self, state):
        model = self.model
        weights = state["best_weights"]
        if weights is not None:
            shapes = [p.shape for p in model.params]
            if [tuple(w.shape) for w in weights] != shapes:
                raise ValueError(f"EarlyStopping: saved best weights of shapes "
                                 f"{[tuple(w.shape) for w in weights]} do not fit this model "
                                 f"({shapes})")
            weights = [model.backend.asarray(w, dtype=model.dtype) for w in weights]
        self.wait, self.best = int(state["wait"]), float(state["best"])
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]
        self.best_weights = weights


class _Scheduler(Callback):
    """Set one hyperparameter from ``schedule`` at the start of every epoch, or of every
    step: the machinery of :class:`LearningRateScheduler`, :class:`WeightDecayScheduler` and
    :class:`DropoutScheduler`, which say what they set (``_read`` / ``_write``)."""

    #: What is scheduled, for messages.
    _what = "value"
    #: The largest value allowed, and whether it is excluded.
    _high, _high_open = math.inf, False
    #: Called again when a run replays an epoch's steps (a GPU epoch that diverged, replayed
    #: with a check per step): each step must train with the value it had.
    _sets_step_values = True

    def __init__(self, schedule, update_freq="epoch"):
        name = type(self).__name__
        if not callable(schedule):
            raise TypeError(f"{name}: schedule must be callable, got {schedule!r}")
        if update_freq not in ("epoch", "batch"):
            raise ValueError(f"{name}: update_freq must be 'epoch' or 'batch', got "
                             f"{update_freq!r}")
        self.schedule = schedule
        self.update_freq = update_freq
        self._with_lr = _takes_lr(schedule)
        self._epoch, self._lr_before = None, None

    def _read(self, model) -> float:
        raise NotImplementedError

    def _write(self, model, value: float) -> None:
        raise NotImplementedError

    def on_train_begin(self, logs=None):
        self._epoch, self._lr_before = None, None
        self._read(self.model)             # a model without the hyperparameter fails here

    def on_epoch_begin(self, epoch, logs=None):
        """Set the value of ``epoch`` (with ``update_freq="batch"``: of its first step).

        Parameters
        ----------
        epoch : int
            Index of the epoch (0-based).
        logs : dict or None
            Unused.

        Raises
        ------
        ValueError
            Before the epoch changes anything, when the schedule returns a value out of
            range (not a finite number >= 0; a dropout rate also below 1).
        """
        if epoch != self._epoch:
            self._epoch, self._lr_before = epoch, self._read(self.model)
        self._apply(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        """With ``update_freq="batch"``, set the value of the fractional epoch
        ``epoch + batch / steps_per_epoch`` before the step.

        Parameters
        ----------
        batch : int
            Index of the batch within the epoch (0-based).
        logs : dict or None
            Unused.
        """
        if self.update_freq != "batch" or self._epoch is None:
            return
        steps = getattr(self.run, "steps_per_epoch", None)
        if not steps:
            raise ValueError(f"{type(self).__name__}: update_freq='batch' needs the number of "
                             "batches per epoch, unknown for an iterable without a length; "
                             "use update_freq='epoch'")
        self._apply(self._epoch + batch / steps if batch else self._epoch)

    def _apply(self, epoch):
        value = (self.schedule(epoch, self._lr_before) if self._with_lr
                 else self.schedule(epoch))
        value = float(value)
        high_ok = value < self._high if self._high_open else value <= self._high
        if not (math.isfinite(value) and value >= 0 and high_ok):
            bound = f" and < {self._high:g}" if self._high_open else ""
            raise ValueError(f"{type(self).__name__}: schedule({epoch}) returned {value!r}; "
                             f"a {self._what} must be a finite number >= 0{bound}")
        self._write(self.model, value)

    def get_state(self):
        return {"epoch": self._epoch, "lr_before": self._lr_before}

    def set_state(self, state):
        self._epoch, self._lr_before = state["epoch"], state["lr_before"]


class LearningRateScheduler(_Scheduler):
    """Set the optimizer's rate from ``schedule`` at the start of every epoch (or step).

    ``schedule`` is an :mod:`xpnn.schedules` object or any function of the epoch,
    ``lr = schedule(epoch)``, or of the epoch and the current rate, ``lr = schedule(epoch, lr)``
    (Keras's form); which one is read from the function's signature.

    With ``update_freq="epoch"`` the schedule is applied once per epoch. With
    ``update_freq="batch"`` it is also applied before every step, at the fractional epoch
    ``epoch + batch / steps_per_epoch`` (as RealMLP's schedules, or ``torch.optim``
    schedulers stepped every batch), so a schedule of ``epochs`` epochs spans the same
    training either way. (pytabkit counts the rows seen rather than the batches: the two
    differ only when the last batch of an epoch is short.) ``lr`` is the rate in force
    before the epoch began, also when the start of an epoch is repeated (a run resumed by
    :class:`~xpnn.BackupAndRestore`); the values are a function of the epoch and batch
    alone, so a resumed run trains with the same rates.

    Parameters
    ----------
    schedule : xpnn.schedules.Schedule or callable
        ``schedule(epoch) -> lr`` or ``schedule(epoch, lr) -> lr``, with the 0-based epoch
        (a float inside an epoch with ``update_freq="batch"``).
    update_freq : {"epoch", "batch"}
        Apply the schedule at the start of every epoch, or before every step.
    """

    _what = "learning rate"

    def _read(self, model):
        return model.optimizer.lr

    def _write(self, model, value):
        model.optimizer.lr = value


class WeightDecayScheduler(_Scheduler):
    """Set the optimizer's ``weight_decay`` from ``schedule`` at the start of every epoch (or
    step), as :class:`LearningRateScheduler` does the rate.

    With :class:`~xpnn.AdamW` the decay of a step is ``θ ← θ (1 - lr · λ)`` with
    ``λ = schedule(epoch)`` (times each parameter's ``wd_factor``); with Adam, SGD and
    RMSprop ``λ θ`` is added to the gradient. RealMLP multiplies its weight decay by
    :class:`~xpnn.schedules.FlatCosineDecay` (``wd_sched="flat_cos"``)::

        WeightDecayScheduler(FlatCosineDecay(0.02, epochs), update_freq="batch")

    Parameters
    ----------
    schedule : xpnn.schedules.Schedule or callable
        ``schedule(epoch) -> λ`` or ``schedule(epoch, λ) -> λ`` (``λ`` the value before the
        epoch began).
    update_freq : {"epoch", "batch"}
        Apply the schedule at the start of every epoch, or before every step, at the
        fractional epoch ``epoch + batch / steps_per_epoch``.
    """

    _what = "weight decay"

    def _read(self, model):
        opt = model.optimizer
        if not hasattr(opt, "weight_decay"):
            raise ValueError(f"WeightDecayScheduler: the optimizer {type(opt).__name__} has no "
                             "weight_decay to schedule")
        return opt.weight_decay

    def _write(self, model, value):
        model.optimizer.weight_decay = value


class DropoutScheduler(_Scheduler):
    """Set the rate ``p`` of every :class:`~xpnn.Dropout` layer of the model from
    ``schedule`` at the start of every epoch (or step).

    RealMLP multiplies its dropout rate by :class:`~xpnn.schedules.FlatCosineDecay`
    (``p_drop_sched="flat_cos"``): a constant rate for half of training, then a cosine down
    to no dropout::

        DropoutScheduler(FlatCosineDecay(0.15, epochs), update_freq="batch")

    The rate only acts while training (inference never drops units). After ``fit`` the
    layers keep the last rate set.

    Parameters
    ----------
    schedule : xpnn.schedules.Schedule or callable
        ``schedule(epoch) -> p`` or ``schedule(epoch, p) -> p`` (``p`` the first Dropout
        layer's rate before the epoch began), in [0, 1).
    update_freq : {"epoch", "batch"}
        Apply the schedule at the start of every epoch, or before every step, at the
        fractional epoch ``epoch + batch / steps_per_epoch``.
    """

    _what = "dropout rate"
    _high, _high_open = 1.0, True

    @staticmethod
    def _layers(model):
        from .layers import Dropout

        layers = [layer for layer in model.layers if isinstance(layer, Dropout)]
        if not layers:
            raise ValueError("DropoutScheduler: the model has no Dropout layer")
        return layers

    def _read(self, model):
        return self._layers(model)[0].p

    def _write(self, model, value):
        for layer in self._layers(model):
            layer.p = value


def _takes_lr(schedule) -> bool:
    """Whether ``schedule`` is called as ``schedule(epoch, lr)`` (it accepts two positional
    arguments, as Keras always passes) rather than ``schedule(epoch)``."""
    from .schedules import Schedule

    if isinstance(schedule, Schedule):
        return False
    try:
        params = inspect.signature(schedule).parameters.values()
    except (TypeError, ValueError):  # no signature to read: Keras's form
        return True
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) >= 2


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving (Keras's
    ``ReduceLROnPlateau``, same rule and defaults).

    After every epoch: if the monitored value beat the best one by more than ``min_delta``, it
    becomes the best and the count of bad epochs restarts at 0. Otherwise, outside a cool-down,
    the count grows; when it reaches ``patience`` and ``lr > min_lr``, the rate becomes
    ``max(lr · factor, min_lr)``, the count restarts and a cool-down of ``cooldown`` epochs
    begins, during which epochs are not counted.

    The rate it lowers is ``model.optimizer.lr``; with an optimizer whose ``lr`` is a schedule,
    the schedule sets the rate again at every epoch: use one or the other.

    Parameters
    ----------
    monitor : str
        A key of the epoch logs (``"val_loss"``, ``"loss"``, ``"val_accuracy"``...).
    factor : float
        In (0, 1).
    patience : int
        Epochs without improvement before a reduction.
    min_delta : float
        Smallest change counted as an improvement.
    cooldown : int
        Epochs to wait after a reduction before counting again.
    min_lr : float
        Lower bound of the rate.
    mode : {"auto", "min", "max"}
        Whether lower or higher is better (``"auto"``: higher for accuracy and r2).
    verbose : int
        1: print a line at each reduction.

    Attributes
    ----------
    best : float
        Best monitored value seen.
    wait : int
        Epochs without improvement so far.
    cooldown_counter : int
        Epochs of cool-down left.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0,
                 mode: str = "auto", verbose: int = 0):
        name = "ReduceLROnPlateau"
        if not isinstance(monitor, str):
            raise TypeError(f"{name}: monitor must be a str, got {monitor!r}")
        factor = check_real("factor", factor, name, 0.0, 1.0, low_open=True, high_open=True)
        patience = check_int("patience", patience, name, low=0)
        cooldown = check_int("cooldown", cooldown, name, low=0)
        min_delta = check_real("min_delta", min_delta, name, low=0.0)
        min_lr = check_real("min_lr", min_lr, name, low=0.0)
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{name}: mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = patience
        self.min_delta = float(min_delta)
        self.cooldown = cooldown
        self.min_lr = float(min_lr)
        if mode == "auto":
            mode = "max" if monitor.split("val_")[-1] in ("accuracy", "acc", "r2") else "min"
        self.mode = mode
        self.verbose = verbose
        self._reset()
        self._restored = None

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, logs=None):
        self._reset()
        if self._restored is not None:      # set_state before fit: resume, do not restart
            self._apply(self._restored)
            self._restored = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"ReduceLROnPlateau: monitor {self.monitor!r} is not among the "
                             f"logged values {sorted(logs)}")
        current = float(logs[self.monitor])
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                opt = self.model.optimizer
                if opt.lr > self.min_lr:
                    opt.lr = max(opt.lr * self.factor, self.min_lr)
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate "
                              f"to {opt.lr:.6g}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    def get_state(self) -> dict:
        """``{"best", "wait", "cooldown_counter"}``; an infinite ``best`` (nothing seen yet)
        is ``None``."""
        best = self.best if math.isfinite(self.best) else None
        return {"best": best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state`'s data, now and at the next ``on_train_begin`` (which
        otherwise starts afresh).

        Parameters
        ----------
        state : dict
            ``{"best", "wait", "cooldown_counter"}`` as :meth:`get_state` returns it.
        """
        self._apply(state)
        self._restored = dict(state)

    def on_train_end(self, logs=None):
        self._restored = None     # a state given during fit (BackupAndRestore) is not replayed

    def _apply(self, state):
        self._reset()
        if state.get("best") is not None:
            self.best = float(state["best"])
        self.wait = int(state.get("wait", 0))
        self.cooldown_counter = int(state.get("cooldown_counter", 0))

    def get_config(self) -> dict:
        """Constructor arguments, JSON-serialisable."""
        return {"monitor": self.monitor, "factor": self.factor, "patience": self.patience,
                "min_delta": self.min_delta, "cooldown": self.cooldown, "min_lr": self.min_lr,
                "mode": self.mode, "verbose": self.verbose}


class OptimizerSchedule(Callback):
    """Set ``optimizer.lr = optimizer.schedule(epoch)`` at the start of every epoch: what
    ``fit`` does for an optimizer built with a schedule as its ``lr``."""

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        if getattr(opt, "schedule", None) is not None:
            opt.lr = opt.schedule(epoch)

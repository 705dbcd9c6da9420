"""Training callbacks: :class:`History`, :class:`EarlyStopping`, :class:`LearningRateScheduler`.

``fit`` calls ``on_train_begin()``; for every epoch ``on_epoch_begin(epoch)``, then for every
batch ``on_train_batch_begin(batch)`` and ``on_train_batch_end(batch, logs)`` with
``logs = {"size": rows, "loss": batch loss}`` (the loss is an array of the model's backend,
0-d: reading it with ``float`` costs a device synchronisation on a GPU), then
``on_epoch_end(epoch, logs)`` with ``logs = {"loss": ..., "accuracy": ..., "val_loss": ...}``;
finally ``on_train_end()``. Setting ``model.stop_training = True`` ends training after the
current epoch.
"""

from __future__ import annotations

import math
import weakref

from ._validation import check_int, check_real


class Callback:
    """Base class; ``self.model`` is set by ``fit``.

    The callback holds the model through a weak reference: the model keeps its
    :class:`History`, and a strong reference back would make a cycle that keeps a deleted
    model's memory until Python's cycle collector runs.
    """

    _model_ref = None

    @property
    def model(self):
        """The model being trained (None before ``fit``, or once the model was freed)."""
        return None if self._model_ref is None else self._model_ref()

    @model.setter
    def model(self, model):
        self._model_ref = None if model is None else weakref.ref(model)

    def set_model(self, model):
        self.model = model

    def __getstate__(self):
        """Pickle/copy without the model (a weak reference cannot be pickled)."""
        state = dict(self.__dict__)
        state.pop("_model_ref", None)
        return state

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class History(Callback):
    """Per-epoch logs of one ``fit``: ``history.history["loss"]``, ``["val_loss"]``, ...

    Attributes
    ----------
    history : dict[str, list[float]]
        One list per logged quantity, one entry per epoch run.
    epoch : list[int]
        Epoch indices (0-based) that ran.
    """

    def on_train_begin(self, logs=None):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

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
                self.best_weights = self.model._snapshot_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model._restore_weights(self.best_weights)


class LearningRateScheduler(Callback):
    """Set ``optimizer.lr = schedule(epoch, lr)`` at the start of every epoch."""

    def __init__(self, schedule):
        if not callable(schedule):
            raise ValueError(f"LearningRateScheduler: schedule must be callable (epoch, lr) -> "
                             f"lr, got {schedule!r}")
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        """Raises ValueError, before the epoch changes anything, when the schedule returns
        anything but a finite number > 0."""
        opt = self.model.optimizer
        lr = self.schedule(epoch, opt.lr)
        try:
            opt.lr = lr
        except ValueError:
            raise ValueError(f"LearningRateScheduler: the schedule returned lr={lr!r} for epoch "
                             f"{epoch + 1}; a learning rate must be a finite number > 0") from None

"""Training callbacks: :class:`History`, :class:`EarlyStopping`, :class:`LearningRateScheduler`.

``fit`` calls ``on_train_begin()``; for every epoch ``on_epoch_begin(epoch)``, then for every
batch ``on_train_batch_begin(batch)`` and ``on_train_batch_end(batch, logs)`` with
``logs = {"size": rows, "loss": batch loss}`` (the loss is an array of the model's backend,
0-d: reading it with ``float`` costs a device synchronisation on a GPU), then
``on_epoch_end(epoch, logs)`` with ``logs = {"loss": ..., "accuracy": ..., "val_loss": ...}``;
finally ``on_train_end()``. Setting ``model.stop_training = True`` ends training after the
current epoch.

A callback with state that matters for resuming (a best value, a wait count) returns it from
``get_state()`` (JSON values and arrays) and takes it back in ``set_state(state)``;
:class:`~xpnn.BackupAndRestore` stores and restores these.
"""

from __future__ import annotations

import math


class Callback:
    """Base class; ``self.model`` is set by ``fit``."""

    model = None

    def set_model(self, model):
        self.model = model

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

    def get_state(self) -> dict:
        """What this callback must remember across an interruption: a dict of JSON values
        and arrays (default: nothing)."""
        return {}

    def set_state(self, state: dict) -> None:
        """Take back what :meth:`get_state` returned (called after ``on_train_begin``)."""


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
        if not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
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


class LearningRateScheduler(Callback):
    """Set ``optimizer.lr = schedule(epoch, lr)`` at the start of every epoch.

    ``lr`` is the rate in force before the epoch began, also when the start of an epoch is
    repeated (a run resumed by :class:`~xpnn.BackupAndRestore`): the schedule is applied once
    per epoch.
    """

    def __init__(self, schedule):
        self.schedule = schedule
        self._epoch, self._lr_before = None, None

    def on_train_begin(self, logs=None):
        self._epoch, self._lr_before = None, None

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        if epoch != self._epoch:
            self._epoch, self._lr_before = epoch, opt.lr
        opt.lr = float(self.schedule(epoch, self._lr_before))

    def get_state(self):
        return {"epoch": self._epoch, "lr_before": self._lr_before}

    def set_state(self, state):
        self._epoch, self._lr_before = state["epoch"], state["lr_before"]

"""The training run (xpnn.training): its callback list, and that nothing of a run stays on the
model once ``fit`` or ``train_on_batch`` has returned or raised."""

from __future__ import annotations

import numpy as np
import pytest
from _models import classifier

import xpnn
from xpnn.position import Position
from xpnn.training import CallbackList, TrainingRun


class _Recorder(xpnn.Callback):
    def __init__(self, log, name):
        self.log, self.name = log, name

    def on_train_begin(self, logs=None):
        self.log.append((self.name, "train_begin", None))

    def on_epoch_begin(self, epoch, logs=None):
        self.log.append((self.name, "epoch_begin", epoch))

    def on_train_batch_begin(self, batch, logs=None):
        self.log.append((self.name, "batch_begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.log.append((self.name, "batch_end", batch))

    def on_epoch_end(self, epoch, logs=None):
        self.log.append((self.name, "epoch_end", epoch))

    def on_train_end(self, logs=None):
        self.log.append((self.name, "train_end", None))


def test_callback_list_dispatches_each_hook_to_every_callback_in_order():
    log = []
    a, b = _Recorder(log, "a"), _Recorder(log, "b")
    model = classifier(k=2)
    callbacks = CallbackList([a, b], model=model)
    assert list(callbacks) == [a, b] and len(callbacks) == 2
    assert a.model is model and b.model is model
    callbacks.on_train_begin()
    callbacks.on_epoch_begin(3)
    callbacks.on_train_batch_begin(0)
    callbacks.on_train_batch_end(0, {"loss": 1.0})
    callbacks.on_epoch_end(3, {"loss": 1.0})
    callbacks.on_train_end()
    hooks = ["train_begin", "epoch_begin", "batch_begin", "batch_end", "epoch_end", "train_end"]
    assert [(n, h) for n, h, _ in log] == [(n, h) for h in hooks for n in "ab"]
    assert [e for n, h, e in log if h in ("epoch_begin", "epoch_end")] == [3, 3, 3, 3]


def test_fit_calls_every_hook_through_the_run():
    log = []
    model = classifier(k=2)
    X, y = _data()
    model.fit(X, y, epochs=2, batch_size=25, verbose=0, callbacks=[_Recorder(log, "r")])
    hooks = [h for _, h, _ in log]
    assert hooks[0] == "train_begin" and hooks[-1] == "train_end"
    assert hooks.count("epoch_begin") == 2 and hooks.count("batch_end") == 8


def _data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, (X[:, 0] > 0).astype(int)


def _run_state(model):
    """Everything on the model that points at a run or its parts."""
    found = []
    for key, value in vars(model).items():
        if isinstance(value, (TrainingRun, CallbackList)) or key in (
                "_comm", "_callbacks", "_resume_at", "_interrupted", "_position", "run"):
            found.append(key)
    for layer in model.layers:
        if getattr(layer, "batch_slice", None) is not None:
            found.append(f"{type(layer).__name__}.batch_slice")
    return found


class _Spy(xpnn.Callback):
    """Keeps the run it was given, and may fail at a chosen epoch end."""

    def __init__(self, fail_at=None):
        self.fail_at, self.seen = fail_at, None

    def on_train_begin(self, logs=None):
        self.seen = self.run

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.fail_at:
            raise RuntimeError("stop here")


@pytest.mark.parametrize("fast", [True, False])
def test_nothing_of_a_run_stays_on_the_model_after_fit_returns(fast):
    model = classifier(k=2, dropout=0.2)
    model.fastpath = fast
    X, y = _data()
    before = set(vars(model))
    spy = _Spy()
    model.fit(X, y, epochs=2, batch_size=32, verbose=0, callbacks=[spy],
              validation_split=0.2)
    assert isinstance(spy.seen, TrainingRun)
    assert spy.run is None                       # the callback forgot the run
    assert _run_state(model) == []
    assert set(vars(model)) - before <= {"history", "_fastpath_trainer", "epochs_trained"}
    assert model.history.run is None


def test_nothing_of_a_run_stays_on_the_model_after_fit_raises():
    model = classifier(k=2, dropout=0.2)
    X, y = _data()
    model.fit(X, y, epochs=1, batch_size=32, verbose=0)
    before = set(vars(model))
    spy = _Spy(fail_at=1)
    with pytest.raises(RuntimeError, match="stop here"):
        model.fit(X, y, epochs=3, batch_size=32, verbose=0, callbacks=[spy])
    assert spy.run is None and _run_state(model) == []
    assert set(vars(model)) == before


def test_nothing_of_a_run_stays_after_a_diverged_step_or_train_on_batch():
    model = classifier(k=2)
    X, y = _data()
    before = set(vars(model))
    model.train_on_batch(X, y)
    assert _run_state(model) == [] and set(vars(model)) == before
    model.optimizer = xpnn.SGD(1e38)              # the first step overflows the weights
    weights = model.get_weights()
    with pytest.raises(xpnn.TrainingDivergedError):
        model.fit(X * 1e6, y, epochs=1, batch_size=100, verbose=0)
    assert _run_state(model) == [] and set(vars(model)) - before <= {"history",
                                                                       "_fastpath_trainer"}
    for a, b in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)       # the step was undone


def test_run_interface_outside_data_parallel_training():
    model = classifier(k=2)
    run = TrainingRun(model)
    assert run.local_rows(3, 9) == (3, 9)
    assert run.writes_files and run.data_parallel is None
    loss = object()
    assert run.sync_gradients([], loss, 4) is loss        # one process: nothing to combine
    position = run.capture_position()
    assert position == Position(model.epochs_trained)
    run.close()

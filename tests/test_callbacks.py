"""The callbacks of xpnn.callbacks, in ``fit``."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from _models import assert_weights_equal, blobs, mlp

import xpnn

small_classifier = partial(mlp, dropout=0.2)     # 4 → 8 → 3


class WeightRecorder(xpnn.Callback):
    """Keeps a copy of the weights at the end of every epoch."""

    def on_train_begin(self, logs=None):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


class Scripted(xpnn.Callback):
    """Writes a prescribed value into the logs under ``key`` at every epoch end (must be listed
    before EarlyStopping), so the monitored sequence is known exactly."""

    def __init__(self, key, values):
        self.key, self.values = key, values

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


# ------------------------------------------------------------------ EarlyStopping
def fit_scripted(values, epochs=None, **early):
    """Fit with a monitored value that follows ``values``; return model, stopper, recorder."""
    X, y = blobs(n=24)
    model = small_classifier(dtype="float64")
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01))
    stopper = xpnn.EarlyStopping(monitor="score", **early)
    recorder = WeightRecorder()
    history = model.fit(X, y, epochs=epochs or len(values), batch_size=8, verbose=0,
                        callbacks=[Scripted("score", values), recorder, stopper])
    return model, stopper, recorder, history


def test_early_stopping_stops_after_patience_and_restores_best():
    values = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 1.0, 0.5]
    model, stopper, recorder, history = fit_scripted(values, patience=3)
    # best at epoch 2; epochs 3, 4, 5 do not improve -> stop after epoch 5
    assert history.epoch == [0, 1, 2, 3, 4, 5]
    assert stopper.best == 3.0 and stopper.best_epoch == 2 and stopper.stopped_epoch == 5
    assert len(recorder.weights) == 6
    assert_weights_equal(model.get_weights(), recorder.weights[2])
    assert not np.array_equal(recorder.weights[2][0], recorder.weights[5][0])


def test_early_stopping_patience_zero_stops_at_first_non_improvement():
    model, stopper, recorder, history = fit_scripted([3.0, 2.0, 2.5, 1.0], patience=0)
    assert history.epoch == [0, 1, 2] and stopper.best_epoch == 1
    assert_weights_equal(model.get_weights(), recorder.weights[1])


def test_early_stopping_restores_best_when_all_epochs_ran():
    values = [3.0, 2.0, 1.0, 1.5, 1.2]
    model, stopper, recorder, history = fit_scripted(values, patience=10)
    assert len(history.epoch) == 5 and stopper.stopped_epoch is None
    assert stopper.best_epoch == 2
    assert_weights_equal(model.get_weights(), recorder.weights[2])


def test_early_stopping_without_restore_keeps_last_weights():
    model, stopper, recorder, _ = fit_scripted([3.0, 2.0, 2.5, 2.6], patience=2,
                                               restore_best_weights=False)
    assert stopper.stopped_epoch == 3
    assert_weights_equal(model.get_weights(), recorder.weights[-1])


def test_early_stopping_min_delta():
    values = [1.0, 0.95, 0.92, 0.5, 0.1]
    _, stopper, recorder, history = fit_scripted(values, patience=2, min_delta=0.1)
    # 0.95 and 0.92 improve on 1.0 by less than 0.1: no improvement -> stop after epoch 2
    assert history.epoch == [0, 1, 2] and stopper.best_epoch == 0 and stopper.best == 1.0
    _, stopper, _, history = fit_scripted(values, patience=2)
    assert len(history.epoch) == 5 and stopper.best_epoch == 4


def test_early_stopping_mode_max_for_accuracy():
    stopper = xpnn.EarlyStopping(monitor="val_accuracy")
    assert stopper.mode == "max"
    assert xpnn.EarlyStopping(monitor="val_loss").mode == "min"
    model, stopper, recorder, history = fit_scripted([0.5, 0.7, 0.6, 0.65], patience=2,
                                                     mode="max")
    assert stopper.best == 0.7 and stopper.best_epoch == 1 and len(history.epoch) == 4
    assert_weights_equal(model.get_weights(), recorder.weights[1])


def test_early_stopping_on_real_validation_loss():
    X, y = blobs(n=60)
    model = small_classifier(dtype="float64")
    model.compile(loss="crossentropy", optimizer=xpnn.SGD(0.3, momentum=0.9))
    recorder = WeightRecorder()
    stopper = xpnn.EarlyStopping(monitor="val_loss", patience=2)
    history = model.fit(X[:40], y[:40], epochs=30, batch_size=8, verbose=0,
                        validation_data=(X[40:], y[40:]), callbacks=[recorder, stopper])
    best = int(np.argmin(history["val_loss"]))
    assert stopper.best_epoch == best
    assert_weights_equal(model.get_weights(), recorder.weights[best])
    assert model.evaluate(X[40:], y[40:])["loss"] == pytest.approx(history["val_loss"][best],
                                                                  rel=1e-12)


def test_early_stopping_missing_monitor_is_a_clear_error():
    model = small_classifier()
    model.compile(loss="crossentropy")
    w0 = model.get_weights()
    with pytest.raises(ValueError, match="monitors 'val_loss', but there is no validation data"):
        model.fit(*blobs(), epochs=3, verbose=0, callbacks=[xpnn.EarlyStopping()])
    assert_weights_equal(model.get_weights(), w0)  # raised before any training
    with pytest.raises(ValueError, match="monitor 'accuracy' is not among the logged values"):
        model.fit(*blobs(), epochs=3, verbose=0,
                  callbacks=[xpnn.EarlyStopping(monitor="accuracy")])
    with pytest.raises(ValueError, match="patience"):
        xpnn.EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="mode"):
        xpnn.EarlyStopping(mode="best")


def test_fit_calls_the_per_batch_hooks_that_do_something():
    """The loop calls each callback's per-batch hooks that it defines (on the class or the
    instance), in the callbacks' order, with one logs dict per batch; Callback's own, which do
    nothing, are left out."""
    from xpnn.training import CallbackList

    calls = []

    class Ends(xpnn.Callback):
        def on_train_batch_end(self, batch, logs=None):
            calls.append(("end", batch, sorted(logs)))

    class Begins(xpnn.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            calls.append(("begin", batch))

    quiet_cb, patched = xpnn.Callback(), xpnn.Callback()
    patched.on_train_batch_end = lambda batch, logs=None: calls.append(("patched", batch))
    cbs = CallbackList([quiet_cb, Ends(), Begins(), patched])
    begin, end = cbs.batch_hooks()
    assert [h.__self__ for h in begin] == [cbs.callbacks[2]]
    assert len(end) == 2 and end[0].__self__ is cbs.callbacks[1]

    X, y = blobs(40)
    model = mlp()
    model.compile(loss="crossentropy", optimizer="adam")
    model.fit(X, y, epochs=1, batch_size=20, verbose=0,
              callbacks=[quiet_cb, Ends(), Begins(), patched])
    assert calls == [("begin", 0), ("end", 0, ["loss", "size"]), ("patched", 0),
                     ("begin", 1), ("end", 1, ["loss", "size"]), ("patched", 1)]

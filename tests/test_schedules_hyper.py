"""RealMLP's schedules (CosLog, FlatCosineDecay) against their formulas and pytabkit's
functions, and the callbacks that schedule the learning rate, the weight decay and the dropout
rate per epoch or per step: the values the steps train with, on every backend and the fast
path, a run stopped anywhere and resumed, and a GPU epoch replayed after a divergence, training
with the same values."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from _models import Crash, CrashAt, assert_weights_equal, blobs, mlp

import xpnn
from xpnn.schedules import CosLog, FlatCosineDecay, from_config

X, Y = blobs(90, spread=1.5)


def _pytabkit_scheduling():
    """pytabkit's ``models/training/scheduling.py`` (NumPy only), loaded without the package
    (whose import pulls in torch)."""
    spec = importlib.util.find_spec("pytabkit")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pytabkit is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models/training/scheduling.py"
    if not path.exists():
        pytest.skip("pytabkit has no models/training/scheduling.py")
    module_spec = importlib.util.spec_from_file_location("_pytabkit_scheduling", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


TIMES = np.concatenate([np.linspace(0.0, 1.0, 97), [1 / 15, 3 / 15, 7 / 15, 0.5, 0.4999]])


# ---------------------------------------------------------------------- the schedules
def test_coslog_formula():
    s = CosLog(0.2, epochs=48)
    for t in TIMES:
        expected = 0.2 * 0.5 * (1 - math.cos(2 * math.pi * math.log2(1 + 15 * t)))
        assert s(48 * t) == pytest.approx(expected, abs=1e-15)
    ends = [s(48 * (2 ** i - 1) / 15) for i in range(5)]       # t = 0 and each cycle's end
    np.testing.assert_allclose(ends, 0.0, atol=1e-15)
    peaks = [s(48 * (2 ** (i + 0.5) - 1) / 15) for i in range(4)]
    np.testing.assert_allclose(peaks, 0.2, rtol=1e-12)
    assert CosLog(1.0, 10, cycles=1)(5) == pytest.approx(
        0.5 * (1 - math.cos(2 * math.pi * math.log2(1.5))))
    assert s(60) == s(48)                                       # after the end: stays at 0


def test_flat_cosine_formula():
    s = FlatCosineDecay(0.15, epochs=48)
    for t in TIMES:
        expected = 0.15 if t < 0.5 else 0.15 * 0.5 * (1 + math.cos(math.pi * (t - 0.5) / 0.5))
        assert s(48 * t) == pytest.approx(expected, abs=1e-15)
    other = FlatCosineDecay(1.0, 10, flat=0.2, final=0.1)
    assert other(1.9) == 1.0 and other(10) == pytest.approx(0.1)
    assert other(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_the_same_values_as_pytabkit():
    sched = _pytabkit_scheduling()
    coslog4 = sched.get_schedule("coslog4")
    flat_cos = sched.get_schedule("flat_cos")
    ours_coslog, ours_flat = CosLog(1.0, epochs=256), FlatCosineDecay(1.0, epochs=256)
    for t in TIMES:
        assert ours_coslog(256 * t) == pytest.approx(coslog4.call_time_(t), abs=1e-12)
        assert ours_flat(256 * t) == pytest.approx(flat_cos.call_time_(t), abs=1e-12)


def test_fractional_epochs_and_configs():
    s = CosLog(0.2, epochs=10, cycles=3)
    assert from_config(s.to_config()) == s
    f = FlatCosineDecay(0.02, epochs=10, flat=0.25, final=0.001)
    assert from_config(f.to_config()) == f
    assert xpnn.schedules.CosineDecay(1.0, 4)(1.5) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 1.5 / 4)))
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        s(-1)
    with pytest.raises(ValueError, match="epoch must be a finite number >= 0"):
        s(-0.5)
    with pytest.raises(ValueError, match="flat"):
        FlatCosineDecay(0.1, 10, flat=1.0)
    with pytest.raises(ValueError, match="peak"):
        CosLog(0.0, 10)


# ---------------------------------------------------------------------- the callbacks
class _Seen(xpnn.Callback):
    """The learning rate, weight decay and dropout rate each step trains with."""

    def on_train_begin(self, logs=None):
        self.values = []

    def on_train_batch_begin(self, batch, logs=None):
        opt = self.model.optimizer
        self.values.append((opt.lr, opt.weight_decay, self.model.layers[2].p))


def _model(backend="numpy", fast=True, lr=0.01, weight_decay=0.05, p=0.2, seed=0):
    model = mlp(backend, seed=seed, hidden=16, dropout=p)
    model.fastpath = fast
    return model.compile("crossentropy", xpnn.AdamW(lr, weight_decay=weight_decay))


def _schedulers(epochs, update_freq="batch"):
    return [xpnn.LearningRateScheduler(CosLog(0.01, epochs), update_freq=update_freq),
            xpnn.WeightDecayScheduler(FlatCosineDecay(0.05, epochs), update_freq=update_freq),
            xpnn.DropoutScheduler(FlatCosineDecay(0.2, epochs), update_freq=update_freq)]


@pytest.mark.parametrize("update_freq", ["batch", "epoch"])
def test_each_step_trains_with_the_scheduled_values(update_freq):
    seen = _Seen()
    model = _model()
    model.fit(X, Y, epochs=3, batch_size=32, verbose=0,
              callbacks=[*_schedulers(3, update_freq), seen])
    steps = 3                                                    # 90 rows / 32
    expected = []
    for e in range(3):
        for b in range(steps):
            t = e + b / steps if update_freq == "batch" else e
            expected.append((CosLog(0.01, 3)(t), FlatCosineDecay(0.05, 3)(t),
                             FlatCosineDecay(0.2, 3)(t)))
    assert seen.values == pytest.approx(expected)
    assert model.layers[2].p == expected[-1][2]


def _fit_weights(callbacks, **model_args):
    model = _model(**model_args)
    model.fit(X, Y, epochs=2, batch_size=32, verbose=0, callbacks=callbacks)
    return model.get_weights()


@pytest.mark.parametrize("fast", [True, False])
def test_the_scheduled_values_are_the_ones_the_step_uses(fast):
    """A schedule that sets the weight decay (dropout rate) to 0 trains exactly like a model
    built with 0, and not like the model it was set on."""
    for scheduler, built_with in [
            (xpnn.WeightDecayScheduler(lambda epoch: 0.0), {"weight_decay": 0.0}),
            (xpnn.DropoutScheduler(lambda epoch: 0.0, update_freq="batch"), {"p": 0.0})]:
        scheduled = _fit_weights([scheduler], fast=fast)
        assert_weights_equal(scheduled, _fit_weights([], fast=fast, **built_with))
        unscheduled = _fit_weights([], fast=fast)
        assert any(not np.array_equal(a, b) for a, b in zip(scheduled, unscheduled, strict=True))


def test_fast_path_and_generic_step_agree():
    model = _model()
    assert xpnn.fastpath.explain(model) is None                 # schedulers keep the fast path
    fast = _fit_weights(_schedulers(2))
    generic = _fit_weights(_schedulers(2), fast=False)
    for a, b in zip(fast, generic, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_every_backend(backend):
    reference = _fit_weights(_schedulers(2), fast=False)
    model = _model(backend)
    seen = _Seen()
    model.fit(X, Y, epochs=2, batch_size=32, verbose=0, callbacks=[*_schedulers(2), seen])
    assert seen.values[4] == pytest.approx((CosLog(0.01, 2)(4 / 3), FlatCosineDecay(0.05, 2)(
        4 / 3), FlatCosineDecay(0.2, 2)(4 / 3)))
    for a, b in zip(model.get_weights(), reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_stopped_anywhere_and_resumed_trains_with_the_same_values(tmp_path):
    def run(backup, crash_at=None):
        model, seen = _model(), _Seen()
        callbacks = [xpnn.BackupAndRestore(backup, save_freq=2), *_schedulers(4), seen]
        if crash_at is not None:
            callbacks.append(CrashAt(crash_at))
        model.fit(X, Y, epochs=4, batch_size=32, verbose=0, callbacks=callbacks)
        return model, seen

    reference, ref_seen = run(tmp_path / "ref")
    rng = np.random.default_rng(3)
    crashes = 0
    while True:
        try:
            model, seen = run(tmp_path / "b", int(rng.integers(1, 8)))
        except Crash:
            crashes += 1
            continue
        break
    assert crashes >= 2
    assert_weights_equal(model.get_weights(), reference.get_weights())
    n = len(seen.values)                                  # the steps of the last (resumed) run
    assert seen.values == ref_seen.values[-n:]
    assert model.optimizer.weight_decay == reference.optimizer.weight_decay


@pytest.mark.filterwarnings("ignore::RuntimeWarning")           # the overflow is the point
@pytest.mark.parametrize("fast", [True, False])
def test_a_replayed_epoch_trains_with_the_same_values(monkeypatch, fast):
    """On a GPU an epoch is checked once at its end and, when it went bad, replayed step by
    step up to the bad batch: the replayed steps get their scheduled values again, so the
    weights kept are those of the host's run, which checks every step."""
    from xpnn.backend import Backend

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ [1.0, 2.0, -1.0]
    X[24:32] *= 1e30                                  # the 4th batch of the first epoch overflows

    def run():
        model = xpnn.Sequential(xpnn.Dense(3, 8), xpnn.ReLU(), xpnn.Dropout(0.3),
                                xpnn.Dense(8, 1), seed=0)
        model.fastpath = fast
        model.compile("mse", xpnn.AdamW(0.01, weight_decay=0.1))
        callbacks = [xpnn.LearningRateScheduler(CosLog(0.05, 3), update_freq="batch"),
                     xpnn.WeightDecayScheduler(lambda e: 0.1 * (1 + e), update_freq="batch"),
                     xpnn.DropoutScheduler(lambda e: 0.1 * e, update_freq="batch")]
        with pytest.raises(xpnn.TrainingDivergedError, match="at epoch 1, batch 4"):
            model.fit(X, y, epochs=3, batch_size=8, shuffle=False, verbose=0,
                      callbacks=callbacks)
        return model.get_weights()

    host = run()
    monkeypatch.setattr(Backend, "is_gpu", property(lambda self: True))
    assert_weights_equal(run(), host)


def test_replayed_steps_call_the_schedulers_only():
    model = _model()
    schedulers = _schedulers(2)
    run = xpnn.training.TrainingRun(model, [xpnn.History(), *schedulers, _Seen()])
    try:
        assert list(run._replayed()) == schedulers
    finally:
        run.close()


def test_bad_values_and_settings_raise():
    with pytest.raises(ValueError, match="update_freq must be 'epoch' or 'batch'"):
        xpnn.DropoutScheduler(lambda e: 0.1, update_freq="step")
    with pytest.raises(TypeError, match="schedule must be callable"):
        xpnn.WeightDecayScheduler(0.1)
    model = _model()
    with pytest.raises(ValueError, match=r"DropoutScheduler: schedule\(0\) returned 1.0; a "
                                         r"dropout rate must be a finite number >= 0 and < 1"):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[xpnn.DropoutScheduler(lambda e: 1.0)])
    with pytest.raises(ValueError, match="weight decay must be a finite number >= 0"):
        model.fit(X, Y, epochs=1, verbose=0,
                  callbacks=[xpnn.WeightDecayScheduler(lambda e: float("nan"))])
    no_dropout = mlp(hidden=16).compile("crossentropy", "adam")
    with pytest.raises(ValueError, match="DropoutScheduler: the model has no Dropout layer"):
        no_dropout.fit(X, Y, epochs=1, verbose=0,
                       callbacks=[xpnn.DropoutScheduler(lambda e: 0.1)])
    batches = [(X[i:i + 30], Y[i:i + 30]) for i in range(0, 90, 30)]

    def generate():
        yield from batches

    class Batches:                          # re-iterable, no length: batches per epoch unknown
        def __iter__(self):
            return generate()

    with pytest.raises(ValueError, match="update_freq='batch' needs the number of batches"):
        model.fit(Batches(), epochs=1, verbose=0,
                  callbacks=[xpnn.LearningRateScheduler(CosLog(0.01, 1), update_freq="batch")])

"""Learning-rate schedules against their formulas (and torch.optim.lr_scheduler), schedules as
an optimizer's lr, LearningRateScheduler's two signatures, ReduceLROnPlateau on scripted
validation losses."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import xpnn
from xpnn.schedules import Constant, CosineDecay, ExponentialDecay, StepDecay, Warmup, from_config

EPOCHS = range(40)


def test_step_decay_formula():
    s = StepDecay(0.1, step_size=7, gamma=0.5)
    assert [s(e) for e in EPOCHS] == [0.1 * 0.5 ** (e // 7) for e in EPOCHS]


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay_formula(staircase):
    s = ExponentialDecay(0.2, rate=0.9, decay_epochs=3, staircase=staircase)
    expected = [0.2 * 0.9 ** (math.floor(e / 3) if staircase else e / 3) for e in EPOCHS]
    np.testing.assert_allclose([s(e) for e in EPOCHS], expected, rtol=1e-15)


def test_cosine_decay_formula_and_end_points():
    s = CosineDecay(0.3, epochs=20, final=0.01)
    expected = [0.01 + 0.145 * (1 + math.cos(math.pi * min(e, 20) / 20)) for e in EPOCHS]
    np.testing.assert_allclose([s(e) for e in EPOCHS], expected, rtol=1e-14)
    assert s(0) == 0.3 and s(20) == pytest.approx(0.01) and s(39) == pytest.approx(0.01)
    assert all(a >= b for a, b in zip([s(e) for e in EPOCHS], [s(e) for e in EPOCHS][1:],
                                      strict=False))


def test_warmup_formula():
    s = Warmup(CosineDecay(1.0, epochs=10), epochs=4, start=0.2)
    got = [s(e) for e in range(20)]
    expected = [0.2 + 0.8 * (e + 1) / 5 for e in range(4)] + [CosineDecay(1.0, 10)(e - 4)
                                                              for e in range(4, 20)]
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    assert Warmup(0.5, epochs=1)(0) == 0.25 and Warmup(0.5, epochs=1)(5) == 0.5


def test_schedules_match_torch_lr_scheduler():
    torch = pytest.importorskip("torch")
    sched = torch.optim.lr_scheduler
    cases = [
        (StepDecay(0.1, 5, gamma=0.3), lambda o: sched.StepLR(o, step_size=5, gamma=0.3)),
        (ExponentialDecay(0.1, 0.8), lambda o: sched.ExponentialLR(o, gamma=0.8)),
        (CosineDecay(0.1, 25, final=0.001),
         lambda o: sched.CosineAnnealingLR(o, T_max=25, eta_min=0.001)),
    ]
    for ours, make in cases:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        theirs = make(opt)
        rates = []
        for _ in range(26):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            theirs.step()
        np.testing.assert_allclose([ours(e) for e in range(26)], rates, rtol=1e-12,
                                   err_msg=repr(ours))


@pytest.mark.parametrize("schedule", [
    Constant(0.01), StepDecay(0.1, 3), ExponentialDecay(0.1, 0.5, 2, True),
    CosineDecay(0.1, 9, 0.001), Warmup(CosineDecay(0.1, 9), 3, start=0.01),
    Warmup(Warmup(StepDecay(1.0, 2), 2), 1)])
def test_configs_round_trip_through_json(schedule):
    again = from_config(json.loads(json.dumps(schedule.to_config())))
    assert again == schedule and type(again) is type(schedule)
    assert [again(e) for e in range(15)] == [schedule(e) for e in range(15)]


@pytest.mark.parametrize("make, message", [
    (lambda: CosineDecay(0.1, 0), "epochs must be an int >= 1"),
    (lambda: CosineDecay(-0.1, 5), "initial must be a finite number > 0"),
    (lambda: StepDecay(0.1, 2.5), "step_size must be an int"),
    (lambda: ExponentialDecay(0.1, 0.0), "rate must be a finite number > 0"),
    (lambda: Warmup("cosine", 3), "schedule must be an xpnn.schedules.Schedule"),
    (lambda: CosineDecay(0.1, 5)(-1), "epoch must be an int >= 0"),
    (lambda: from_config({"class": "Cyclic"}), "not a schedule configuration"),
    (lambda: xpnn.Adam(lambda epoch: 0.1), "LearningRateScheduler"),
])
def test_bad_arguments_are_named(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def _data(n=64):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3))
    return X, X @ np.array([1.0, -2.0, 0.5])


class _Rates(xpnn.Callback):
    """The rate each epoch trains with (read at the start of the epoch)."""

    def on_train_begin(self, logs=None):
        self.rates = []

    def on_epoch_begin(self, epoch, logs=None):
        self.rates.append(self.model.optimizer.lr)


def _model(optimizer):
    m = xpnn.Sequential(xpnn.Dense(3, 4), xpnn.Tanh(), xpnn.Dense(4, 1), seed=0)
    return m.compile("mse", optimizer)


@pytest.mark.parametrize("opt", [xpnn.Adam, xpnn.SGD, xpnn.RMSprop, xpnn.AdamW])
def test_schedule_as_optimizer_lr(opt, tmp_path):
    schedule = Warmup(CosineDecay(0.05, 6), 2)
    model = _model(opt(lr=schedule))
    assert model.optimizer.lr == schedule(0)
    rates = _Rates()
    model.fit(*_data(), epochs=8, batch_size=16, callbacks=[rates], verbose=0)
    assert rates.rates == [schedule(e) for e in range(8)]
    config = model.get_config()["compile"]["optimizer"]["config"]
    assert config["lr"] == schedule.to_config()
    model.save(tmp_path / "m.npz")
    again = xpnn.load(tmp_path / "m.npz")
    assert again.optimizer.schedule == schedule
    rates2 = _Rates()
    again.fit(*_data(), epochs=3, verbose=0, callbacks=[rates2])
    assert rates2.rates == [schedule(e) for e in range(3)]


def test_same_training_as_the_callback():
    """lr=schedule and LearningRateScheduler(schedule) train identically."""
    schedule = StepDecay(0.05, 2, gamma=0.5)
    a, b = _model(xpnn.Adam(schedule)), _model(xpnn.Adam(0.05))
    a.fit(*_data(), epochs=5, batch_size=16, verbose=0)
    b.fit(*_data(), epochs=5, batch_size=16, verbose=0,
          callbacks=[xpnn.LearningRateScheduler(schedule)])
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("fn, expected", [
    (lambda epoch: 0.1 / (epoch + 1), [0.1, 0.05, 0.1 / 3]),
    (lambda epoch, lr: lr * 0.5, [0.05, 0.025, 0.0125]),       # Keras's form
    (CosineDecay(0.1, 2), [0.1, 0.05, 0.0]),
])
def test_learning_rate_scheduler_signatures(fn, expected):
    rates = _Rates()
    model = _model(xpnn.SGD(0.1))
    model.fit(*_data(), epochs=3, verbose=0,
              callbacks=[xpnn.LearningRateScheduler(fn), rates])
    np.testing.assert_allclose(rates.rates, expected, rtol=1e-15, atol=1e-18)


def test_learning_rate_scheduler_rejects_bad_rates():
    model = _model(xpnn.SGD(0.1))
    with pytest.raises(ValueError, match=r"schedule\(0\) returned nan"):
        model.fit(*_data(), epochs=1, verbose=0,
                  callbacks=[xpnn.LearningRateScheduler(lambda e: float("nan"))])
    with pytest.raises(TypeError, match="must be callable"):
        xpnn.LearningRateScheduler(0.1)


# --------------------------------------------------------------------------- ReduceLROnPlateau
class _Optimizer:
    lr = 1.0


class _Model:
    optimizer = _Optimizer()


def _drive(cb, values, lr=1.0):
    """Feed ``values`` as the epochs' val_loss; the rate after each epoch."""
    model = _Model()
    model.optimizer = _Optimizer()
    model.optimizer.lr = lr
    cb.set_model(model)
    cb.on_train_begin()
    rates = []
    for epoch, v in enumerate(values):
        cb.on_epoch_end(epoch, {"val_loss": v, "val_accuracy": -v})
        rates.append(model.optimizer.lr)
    return rates


# Traced by hand with Keras's rule (patience 2, factor 0.5, cooldown 1, min_delta 0.01,
# min_lr 0.2): improvements at epochs 0, 1, 4, 5; reductions after epochs 3, 7 and 9 (the last
# one clipped at min_lr); at epoch 11 the rate is already min_lr and stays.
VALUES = [1.0, 0.9, 0.895, 0.9, 0.88, 0.7, 0.71, 0.72, 0.73, 0.74, 0.75, 0.76]
RATES = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2]


def test_reduce_lr_on_plateau_scripted_sequence():
    cb = xpnn.ReduceLROnPlateau(factor=0.5, patience=2, min_delta=0.01, cooldown=1, min_lr=0.2)
    assert _drive(cb, VALUES) == RATES
    assert cb.best == 0.7 and cb.wait == 2 and cb.cooldown_counter == 0


def test_reduce_lr_on_plateau_defaults_and_max_mode():
    cb = xpnn.ReduceLROnPlateau()
    assert (cb.monitor, cb.factor, cb.patience, cb.min_delta, cb.cooldown, cb.min_lr) == (
        "val_loss", 0.1, 10, 1e-4, 0, 0.0)
    # 0.99995 is within min_delta of 1.0: no progress; 0.5 at epoch 11 is, then 10 plateaus.
    rates = _drive(cb, [1.0] + [0.99995] * 10 + [0.5] * 11)
    assert rates[:10] == [1.0] * 10 and rates[10] == pytest.approx(0.1)
    assert rates[20] == pytest.approx(0.1) and rates[21] == pytest.approx(0.01)
    acc = xpnn.ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1)
    assert acc.mode == "max"
    # val_accuracy = -val_loss: falling losses are rising accuracies.
    assert _drive(acc, [3.0, 2.0, 2.5, 1.0, 1.5]) == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_reduce_lr_on_plateau_state_resumes_exactly():
    whole = xpnn.ReduceLROnPlateau(factor=0.5, patience=2, min_delta=0.01, cooldown=1,
                                   min_lr=0.2)
    first = xpnn.ReduceLROnPlateau(factor=0.5, patience=2, min_delta=0.01, cooldown=1,
                                   min_lr=0.2)
    head = _drive(first, VALUES[:7])
    state = json.loads(json.dumps(first.get_state()))
    second = xpnn.ReduceLROnPlateau(factor=0.5, patience=2, min_delta=0.01, cooldown=1,
                                    min_lr=0.2)
    second.set_state(state)                     # before fit: on_train_begin keeps it
    tail = _drive(second, VALUES[7:], lr=head[-1])
    assert head + tail == _drive(whole, VALUES)
    fresh = xpnn.ReduceLROnPlateau()
    assert json.dumps(fresh.get_state()) == '{"best": null, "wait": 0, "cooldown_counter": 0}'
    assert xpnn.Callback().get_state() == {}


def test_reduce_lr_on_plateau_in_fit():
    model = _model(xpnn.SGD(0.01))
    cb = xpnn.ReduceLROnPlateau(monitor="loss", patience=1, min_delta=100.0)  # never improves
    model.fit(*_data(), epochs=3, verbose=0, callbacks=[cb])
    assert model.optimizer.lr == pytest.approx(0.01 * 0.1 ** 2)
    with pytest.raises(ValueError, match="no validation data"):
        model.fit(*_data(), epochs=1, verbose=0, callbacks=[xpnn.ReduceLROnPlateau()])


@pytest.mark.parametrize("kwargs, message", [
    ({"factor": 1.0}, "factor must be in"), ({"patience": -1}, "patience must be an int"),
    ({"min_lr": -1e-3}, "min_lr must be a finite number >= 0"), ({"mode": "up"}, "mode must be"),
])
def test_reduce_lr_on_plateau_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        xpnn.ReduceLROnPlateau(**kwargs)


def test_schedules_and_plateau_accept_numpy_scalars():
    import numpy as np

    cb = xpnn.ReduceLROnPlateau(factor=np.float32(0.5), patience=np.int64(2))
    assert (cb.factor, cb.patience) == (0.5, 2) and type(cb.patience) is int
    assert xpnn.schedules.CosineDecay(np.float64(0.1), np.int64(10))(0) == pytest.approx(0.1)

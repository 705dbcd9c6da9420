"""Hostile and broken input: values beyond the model's dtype, non-finite or mistyped
hyperparameters, misspelt monitors, losses that do not fit the network, interrupted steps,
reference cycles, damaged IDX files. Each must raise a clear error and leave the model as it
was, or be handled so that nothing goes wrong silently."""

from __future__ import annotations

import gc
import gzip
import struct
import tracemalloc
import weakref

import numpy as np
import pytest
from _models import classifier
from test_errors import assert_same, snapshot, unchanged

import xpnn
from xpnn import (
    SGD,
    Adam,
    AdamW,
    Dense,
    Dropout,
    LeakyReLU,
    ReLU,
    RMSprop,
    Sequential,
    Softmax,
    fastpath,
)
from xpnn.backend import to_numpy
from xpnn.guard import all_finite, finite_flag


@pytest.fixture
def trained():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, size=30)
    model = classifier(hidden=6)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    return model, X, y


# ------------------------------------------------------------------ values beyond float32
BEYOND = r"contains 1 value \(at .*\) beyond the float32 range \(largest magnitude 1e\+300"


def test_x_beyond_float32_is_refused_after_the_cast(trained):
    model, X, y = trained
    Xbad = X.copy()
    Xbad[2, 3] = 1e300                       # finite in float64, inf in float32
    for call in (lambda: model.fit(Xbad, y, verbose=0), lambda: model.predict(Xbad),
                 lambda: model.evaluate(Xbad, y), lambda: model.train_on_batch(Xbad, y)):
        with unchanged(model), pytest.raises(ValueError, match="X " + BEYOND):
            call()
    with unchanged(model), pytest.raises(ValueError, match="X_val " + BEYOND):
        model.fit(X, y, validation_data=(Xbad, y), verbose=0)
    wide = Sequential(Dense(4, 3), Softmax(), dtype="float64", seed=0)
    assert np.all(np.isfinite(to_numpy(wide.predict(Xbad))))     # fine in float64


def test_y_beyond_float32_is_refused(trained):
    _, X, _ = trained
    reg = Sequential(Dense(4, 1), seed=0).compile(loss="mse", optimizer="sgd")
    y = np.arange(30.0)
    y[7] = -1e300
    with unchanged(reg), pytest.raises(ValueError, match="y " + BEYOND):
        reg.fit(X, y, verbose=0)
    with unchanged(reg), pytest.raises(ValueError, match="y " + BEYOND):
        reg.evaluate(X, y)


def test_backend_array_beyond_float32_is_refused(backend):
    model = Sequential(Dense(2, 1), backend=backend, seed=0)
    X = model.backend.asarray(np.array([[1.0, 1e300]]), "float64")
    with unchanged(model), pytest.raises(ValueError, match=r"X contains (1 NaN or infinite value "
                                                           r".*float32|1 value .*beyond)"):
        model.predict(X)


def test_set_weights_beyond_float32_strings_and_complex(trained):
    model, _, _ = trained
    good = model.get_weights()
    big = [w.astype(np.float64) for w in good]
    big[1][0] = 1e300
    with unchanged(model), pytest.raises(ValueError, match="set_weights: array 1 " + BEYOND):
        model.set_weights(big)
    text = [w.copy() for w in good]
    text[2] = np.full(good[2].shape, "0.5")
    with unchanged(model), pytest.raises(TypeError, match=r"set_weights: array 2 \(W of layer "
                                                          r"2\) must hold real numbers, got "
                                                          r"dtype <U3"):
        model.set_weights(text)
    cplx = [w.copy() for w in good]
    cplx[0] = good[0] + 1j
    with unchanged(model), pytest.raises(TypeError, match="array 0 .*real numbers.*complex"):
        model.set_weights(cplx)


def test_classifier_predict_refuses_values_beyond_float32():
    sklearn = pytest.importorskip("sklearn")
    del sklearn
    from xpnn.sklearn import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0,
                        dtype="float32")
    with pytest.warns(Warning):
        clf.fit(X, X[:, 0] > 0)
    Xbad = X.copy()
    Xbad[1, 1] = 1e300
    for call in (clf.predict, clf.predict_proba):
        with pytest.raises(ValueError, match="X " + BEYOND):
            call(Xbad)


# ------------------------------------------------------------------ hyperparameters
@pytest.mark.parametrize("make,message", [
    (lambda: Adam(lr=np.inf), "Adam: lr must be a finite number >= 0, got inf"),
    (lambda: Adam(eps=np.inf), "Adam: eps must be a finite number > 0, got inf"),
    (lambda: Adam(lr=np.nan), "Adam: lr must be a finite number >= 0, got nan"),
    (lambda: AdamW(weight_decay=np.inf), "AdamW: weight_decay must be a finite number >= 0"),
    (lambda: RMSprop(lr=np.inf), "RMSprop: lr must be a finite number >= 0, got inf"),
    (lambda: RMSprop(rho=np.nan), r"RMSprop: rho must be in \[0, 1\), got nan"),
    (lambda: RMSprop(momentum=1.0), r"RMSprop: momentum must be in \[0, 1\), got 1.0"),
    (lambda: SGD(lr=True), "SGD: lr must be a finite number >= 0, got True"),
    (lambda: SGD(lr="0.1"), "SGD: lr must be a finite number >= 0, got '0.1'"),
    (lambda: SGD(0.1, momentum=np.nan), r"SGD: momentum must be in \[0, 1\)"),
    (lambda: SGD(0.1, momentum=0.9, nesterov="yes"), "nesterov must be True or False"),
    (lambda: Adam(beta1=-0.1), r"Adam: beta1 must be in \[0, 1\), got -0.1"),
    (lambda: Adam(beta2=1.0), r"Adam: beta2 must be in \[0, 1\), got 1.0"),
    (lambda: Dense(3, 2, weight_decay=np.inf), "Dense: weight_decay must be a finite number "
                                               ">= 0, got inf"),
    (lambda: Dense(3, 2, weight_decay=True), "Dense: weight_decay must be a finite number"),
    (lambda: Dense(2.0, 3), "Dense: in_features must be an int >= 1, got 2.0"),
    (lambda: Dense(3, True), "Dense: out_features must be an int >= 1, got True"),
    (lambda: LeakyReLU(np.nan), "LeakyReLU: negative_slope must be a finite number, got nan"),
    (lambda: LeakyReLU(np.inf), "LeakyReLU: negative_slope must be a finite number, got inf"),
    (lambda: Dropout(np.nan), r"Dropout: p must be in \[0, 1\), got nan"),
    (lambda: Dropout(True), r"Dropout: p must be in \[0, 1\), got True"),
    (lambda: xpnn.EarlyStopping(patience=2.0), "EarlyStopping: patience must be an int >= 0"),
    (lambda: xpnn.EarlyStopping(patience=True), "EarlyStopping: patience must be an int >= 0"),
    (lambda: xpnn.EarlyStopping(min_delta=np.nan), "EarlyStopping: min_delta must be a finite"),
    (lambda: xpnn.EarlyStopping(monitor=None), "EarlyStopping: monitor must be the name"),
])
def test_bad_hyperparameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_setting_a_bad_learning_rate_later_is_refused():
    opt = Adam(0.01)
    for bad in (np.inf, np.nan, -1.0, True, "0.1"):
        with pytest.raises(ValueError, match="Adam: lr must be a finite number >= 0"):
            opt.lr = bad
    assert opt.lr == 0.01
    opt.lr = np.float32(0.0)                   # a schedule may end at 0
    assert opt.lr == 0.0 and type(opt.lr) is float
    assert Adam(lr=0).lr == 0.0                # as torch.optim: one rule, lr >= 0
    with pytest.raises(ValueError, match="Adam: lr must be a finite number >= 0, got -0.1"):
        Adam(lr=-0.1)


def test_numpy_scalars_are_accepted_as_plain_python_numbers():
    opt = Adam(lr=np.float32(1e-3), beta1=np.float64(0.8), eps=np.float32(1e-7))
    assert type(opt.lr) is float and type(opt.beta1) is float and type(opt.eps) is float
    assert opt.lr == pytest.approx(1e-3) and opt.beta1 == 0.8
    sgd = SGD(np.float64(0.1), momentum=np.float32(0.5), nesterov=np.bool_(True))
    assert sgd.nesterov is True and type(sgd.momentum) is float
    dense = Dense(np.int64(4), np.int32(3), weight_decay=np.float32(0.5))
    assert type(dense.in_features) is int and dense.out_features == 3
    assert type(dense.weight_decay) is float
    early = xpnn.EarlyStopping(patience=np.int64(3))
    assert early.patience == 3 and type(early.patience) is int
    assert type(Dropout(np.float32(0.25)).p) is float
    assert LeakyReLU(np.float64(0.2)).negative_slope == 0.2
    model = Sequential(Dense(np.int64(4), 3), Softmax(), seed=0)
    model.compile(loss="crossentropy", optimizer=opt)
    model.fit(np.zeros((6, 4)), np.arange(6) % 3, epochs=1, verbose=0)
    import json

    json.dumps(model.get_config())            # hyperparameters stay JSON-serialisable


@pytest.mark.parametrize("bad", [np.nan, -0.1, np.inf])
def test_scheduler_returning_a_bad_lr_raises_at_that_epoch(bad):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    model = Sequential(Dense(3, 4), ReLU(), Dense(4, 2), Softmax(), seed=0)
    model.compile(loss="crossentropy", optimizer=SGD(0.1))
    recorded = []

    class Recorder(xpnn.Callback):
        def on_epoch_end(self, epoch, logs=None):
            recorded.append(self.model.get_weights())

    schedule = xpnn.LearningRateScheduler(lambda epoch, lr: 0.1 if epoch < 2 else bad)
    with pytest.raises(ValueError, match=rf"schedule\(2\) returned {bad!r}; a learning rate "
                                         r"must be a finite number >= 0"):
        model.fit(X, y, epochs=5, batch_size=5, verbose=0, callbacks=[schedule, Recorder()])
    assert len(recorded) == 2                 # two epochs ran, the third never started
    for a, b in zip(model.get_weights(), recorded[-1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.lr == 0.1


# ------------------------------------------------------------------ monitors and losses
@pytest.mark.parametrize("monitor,metrics,validation", [
    ("val_acc", ["accuracy"], True),           # Keras 1 spelling
    ("val_accuracy", [], True),                # metric not compiled
    ("accuracy", [], False),
    ("los", [], False),
])
def test_misspelt_monitor_is_refused_before_training(trained, monitor, metrics, validation):
    model, X, y = trained
    model.compile(loss="crossentropy", optimizer=model.optimizer, metrics=metrics)
    logged = ["loss", *metrics]
    if validation:
        logged += [f"val_{k}" for k in logged]
    kwargs = {"validation_split": 0.2} if validation else {}
    with unchanged(model), pytest.raises(
            ValueError, match=rf"EarlyStopping monitor '{monitor}' is not among the logged "
                              rf"values {logged!r}".replace("[", r"\[")):
        model.fit(X, y, epochs=3, verbose=0, callbacks=[xpnn.EarlyStopping(monitor=monitor)],
                  **kwargs)


def test_monitor_on_validation_values_needs_validation_data(trained):
    model, X, y = trained
    with unchanged(model), pytest.raises(ValueError, match="monitors 'val_accuracy', but there "
                                                           "is no validation data"):
        model.fit(X, y, epochs=2, verbose=0,
                  callbacks=[xpnn.EarlyStopping(monitor="val_accuracy")])
    history = model.fit(X, y, epochs=2, verbose=0, validation_split=0.2,
                        callbacks=[xpnn.EarlyStopping(monitor="val_accuracy", patience=5)])
    assert len(history["val_accuracy"]) == 2


@pytest.mark.parametrize("layers", [
    lambda: [Dense(4, 3)],
    lambda: [Dense(4, 1)],
    lambda: [Dense(4, 3), Softmax(), Dense(3, 3)],
    lambda: [Dense(4, 3), ReLU()],
])
@pytest.mark.parametrize("loss", ["crossentropy", "binary_crossentropy",
                                  "categorical_crossentropy", xpnn.CategoricalCrossEntropy()])
def test_crossentropy_without_a_probability_output_is_refused(layers, loss):
    model = Sequential(*layers(), seed=0)
    with pytest.raises(ValueError, match=r"compile: \w+_crossentropy needs probabilities, but "
                                         r"the last layer .* outputs unbounded scores: end the "
                                         r"network with Softmax\(\) for "
                                         r"categorical_crossentropy .* Sigmoid\(\) for "
                                         "binary_crossentropy"):
        model.compile(loss=loss)
    assert model.loss is None and model.optimizer is None
    model.compile(loss="mse")                  # a regression loss is fine


# ------------------------------------------------------------------ empty features
@pytest.mark.parametrize("init", ["he", "glorot"])
def test_lazy_dense_with_zero_features_is_a_clear_error(init):
    model = Sequential(Dense(None, 3, init=init), Softmax(), seed=0)
    model.compile(loss="crossentropy")
    X = np.zeros((5, 0))
    for call in (lambda: model.fit(X, np.zeros(5, int), verbose=0),
                 lambda: model.train_on_batch(X, np.zeros(5, int))):
        with unchanged(model), pytest.raises(ValueError, match=r"X has no features \(shape "
                                                               r"\(5, 0\)\)"):
            call()
    assert not model.built and model.n_features_in is None
    with pytest.raises(ValueError, match="at least one feature"):
        model.build(0)


# ------------------------------------------------------------------ ReLU on extreme values
def test_relu_and_leaky_relu_select_instead_of_multiplying():
    be = xpnn.get_backend("numpy")
    x = be.asarray(np.array([[-np.inf, -1.0, 0.0, 2.0, np.inf, np.nan]]), "float64")
    relu, leaky, flat = ReLU(), LeakyReLU(0.1), LeakyReLU(0.0)
    for layer in (relu, leaky, flat):
        layer.build(be, "float64", np.random.default_rng(0), 6)
    np.testing.assert_array_equal(to_numpy(relu.forward(x, training=True)),
                                  [[0.0, 0.0, 0.0, 2.0, np.inf, np.nan]])
    np.testing.assert_array_equal(to_numpy(leaky.forward(x, training=True)),
                                  [[-np.inf, -0.1, 0.0, 2.0, np.inf, np.nan]])
    np.testing.assert_array_equal(to_numpy(flat.forward(x, training=True)),
                                  [[0.0, 0.0, 0.0, 2.0, np.inf, np.nan]])
    delta = be.asarray(np.ones((1, 6)), "float64")
    np.testing.assert_array_equal(to_numpy(relu.backward(delta)), [[0, 0, 0, 1, 1, 0]])
    np.testing.assert_array_equal(to_numpy(leaky.backward(delta)),
                                  [[0.1, 0.1, 0.1, 1, 1, 0.1]])


@pytest.mark.parametrize("act", [ReLU, lambda: LeakyReLU(0.2)])
def test_fast_and_generic_paths_agree_on_overflowing_activations(act):
    """Inputs near the float32 limit make a pre-activation -inf: both paths must give the same
    outputs and loss (finite after a ReLU), where ``-inf · 0`` used to give NaN on the generic
    path while the fast one gave 0."""
    X = np.array([[-3e38, -3e38], [1.0, 2.0], [-1.0, 0.5]])
    y = np.array([0, 1, 0])

    def make(fast):
        model = Sequential(Dense(2, 2), act(), Dense(2, 2), Softmax(), seed=0)
        model.set_weights([np.array([[4.0, 0.5], [4.0, 0.5]]), np.zeros(2),
                           np.array([[1.0, -1.0], [0.5, 0.5]]), np.zeros(2)])
        model.fastpath = fast
        return model.compile(loss="crossentropy", optimizer=SGD(1e-3))

    generic, fast = make(False), make(True)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = to_numpy(generic.predict(X))
        reference = generic.evaluate(X, y)["loss"]
        trainer = fastpath.select(fast)
        assert trainer is not None
        loss, out = trainer.train_step(fast.backend.asarray(X, "float32"),
                                       fast.backend.asarray(y, "int64"))
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-6)
    np.testing.assert_allclose(float(loss), reference, rtol=1e-6)
    if act is ReLU:
        assert np.all(np.isfinite(expected)) and np.isfinite(reference)


# ------------------------------------------------------------------ finiteness flags
def test_guard_all_finite(backend):
    be = xpnn.get_backend(backend)
    good = [be.asarray(np.ones((2, 3)), "float32"), be.asarray(np.zeros(4), "float32")]
    assert all_finite(be.xp, good) is True
    assert all_finite(be.xp, []) is True
    for value in (np.nan, np.inf, -np.inf):
        host = np.zeros(4)
        host[2] = value
        bad = [*good, be.asarray(host, "float32")]
        assert all_finite(be.xp, bad) is False
        assert not bool(finite_flag(be.xp, bad))


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd", "sgd_momentum"])
@pytest.mark.parametrize("threads", [1, 3])
def test_fast_update_reports_finiteness(kernels, opt, threads, monkeypatch):
    """The trainer's update says whether the new weights are all finite, whichever kernels
    and however many threads; the flag is computed in the update (not by a later check)."""
    from xpnn.fastpath import numpy_mlp

    if kernels == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("XPNN_NUMBA", "1" if kernels == "numba" else "0")
    monkeypatch.setattr(numpy_mlp, "BLOCK", 64)             # several blocks per thread
    make = {"adam": lambda: Adam(0.01), "adamw": lambda: AdamW(0.01),
            "sgd": lambda: SGD(0.1), "sgd_momentum": lambda: SGD(0.1, momentum=0.9)}[opt]
    model = Sequential(Dense(20, 30), ReLU(), Dense(30, 3), Softmax(), seed=0)
    model.compile(loss="crossentropy", optimizer=make())
    trainer = fastpath.select(model)
    assert trainer.kernels == kernels
    trainer.threads = threads
    for p in model.params:
        p.grad[...] = 0.01
    assert trainer.update() is True and trainer.last_update_finite is True
    assert all_finite(np, [p.data for p in model.params])
    last = model.params[-2].grad                        # the last W: in the last thread's part
    last[-1, -1] = np.inf if opt != "adam" else np.nan
    with np.errstate(invalid="ignore", over="ignore"):
        assert trainer.update() is False
    assert trainer.last_update_finite is False
    assert not all_finite(np, [p.data for p in model.params])
    assert trainer.weights_finite() is False                 # the update's own finding
    trainer.last_update_finite = True
    assert trainer.weights_finite() is True                  # ... used as is, no second pass
    assert trainer.attach() and trainer.last_update_finite is None
    assert trainer.weights_finite() is False                 # unknown: the buffer is checked


def test_numba_update_kernels_flag_any_position():
    nk = pytest.importorskip("xpnn.fastpath.numba_kernels")
    if not nk.available():
        pytest.skip("numba kernels unavailable")
    c = np.float32
    for position in (0, 7, 99):
        for value in (np.inf, -np.inf, np.nan):
            p, g, m, v = (np.zeros(100, np.float32) for _ in range(4))
            g[position] = value
            with np.errstate(invalid="ignore"):
                assert not nk.adam_update(p, g, m, v, c(.9), c(.999), c(.1), c(.001), c(1e-8),
                                          c(1e-3), c(0), c(1))
                assert not nk.sgd_update(np.zeros(100, np.float32), g, m, c(0.1), c(0), c(0),
                                         False, False)
    p, g, m, v = (np.ones(100, np.float32) for _ in range(4))
    assert nk.adam_update(p, g, m, v, c(.9), c(.999), c(.1), c(.001), c(1e-8), c(1e-3), c(0),
                          c(1))
    assert nk.sgd_update(p, g, m, c(0.1), c(0.9), c(0), True, True)
    g[:] = 1e30            # g² overflows: v is inf but θ stays finite, as on the generic path
    with np.errstate(over="ignore"):
        assert nk.adam_update(p, g, m, v, c(.9), c(.999), c(.1), c(.001), c(1e-8), c(1e-3),
                              c(0), c(1))
    assert np.all(np.isinf(v)) and np.all(np.isfinite(p))


# ------------------------------------------------------------------ interrupted steps
class _InterruptOnce(dict):
    """A per-parameter state whose first real write of ``key`` (a step count above 0, a
    momentum buffer) raises KeyboardInterrupt: Ctrl-C in the middle of recording a step."""

    def __init__(self, state, key):
        super().__init__(state)
        self.key, self.armed = key, True

    def __setitem__(self, key, value):
        if key == self.key and self.armed and not (key == "step" and value == 0):
            self.armed = False
            raise KeyboardInterrupt
        super().__setitem__(key, value)


def _interrupt_data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 5)), rng.integers(0, 3, 64)


def _interrupt_model(opt):
    model = Sequential(Dense(5, 8), ReLU(), Dense(8, 3), Softmax(), dtype="float64", seed=0)
    return model.compile(loss="crossentropy",
                         optimizer=Adam(0.01) if opt == "adam" else SGD(0.1, momentum=0.9))


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_interrupt_in_the_step_bookkeeping_is_repaired(opt):
    """Ctrl-C landing while the fast trainer records a step in the per-parameter state: the
    next select completes the record, the fast path keeps applying, and training continues
    exactly as if nothing had happened."""
    X, y = _interrupt_data()
    reference = _interrupt_model(opt)
    reference.fit(X[:16], y[:16], epochs=1, batch_size=16, shuffle=False, verbose=0)
    reference.fit(X, y, epochs=2, batch_size=16, shuffle=False, verbose=0)

    model = _interrupt_model(opt)
    trainer = fastpath.select(model)
    key = "step" if opt == "adam" else "momentum_buffer"
    model.optimizer.state[2] = _InterruptOnce(model.optimizer.state[2], key)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X[:16], y[:16], epochs=1, batch_size=16, shuffle=False, verbose=0)
    states = model.optimizer.state
    if opt == "adam":
        assert [s["step"] for s in states] == [1, 1, 0, 0]          # half recorded
    else:
        assert ["momentum_buffer" in s for s in states] == [True, True, False, False]
    assert fastpath.explain(model) is None
    assert fastpath.select(model) is trainer
    model.fit(X, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    assert model._fastpath_trainer is trainer
    assert model.optimizer.iterations == reference.optimizer.iterations
    for a, b in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_explain_tells_why_select_returns_none():
    X, y = _interrupt_data()
    model = _interrupt_model("adam")
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert fastpath.explain(model) is None and fastpath.select(model) is not None
    model.optimizer.state[0]["step"] += 3     # not what an interrupted record leaves
    assert fastpath.select(model) is None
    assert "step counts differ" in fastpath.explain(model)
    before = snapshot(model)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)      # trains on the generic path
    assert not np.array_equal(before["weights"][0], model.get_weights()[0])
    model.optimizer.reset()
    assert fastpath.explain(model) is None and fastpath.select(model) is not None

    sgd = _interrupt_model("sgd")
    sgd.fit(X, y, epochs=1, batch_size=16, verbose=0)
    sgd.optimizer.state[1]["momentum_buffer"] = np.zeros(3, np.float32)   # wrong dtype
    assert fastpath.select(sgd) is None
    assert "momentum buffer of parameter 1 is not a float64 array" in fastpath.explain(sgd)
    sgd.optimizer.state[1]["momentum_buffer"] = None
    sgd.optimizer.state[1].pop("momentum_buffer")
    assert fastpath.select(sgd) is None
    assert "only some parameters have a momentum buffer" in fastpath.explain(sgd)


# ------------------------------------------------------------------ memory
@pytest.mark.parametrize("fast", [True, False], ids=["fastpath", "generic"])
def test_deleted_model_is_freed_without_the_cycle_collector(fast):
    X, y = _interrupt_data()
    gc.collect()
    gc.disable()
    try:
        model = Sequential(Dense(5, 8), ReLU(), Dropout(0.1), Dense(8, 3), Softmax(), seed=0)
        model.fastpath = fast
        model.compile(loss="crossentropy", optimizer="adam", metrics=["accuracy"])
        model.fit(X, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0,
                  callbacks=[xpnn.EarlyStopping(monitor="val_loss")])
        model.train_on_batch(X, y)
        model.predict(X)
        assert (getattr(model, "_fastpath_trainer", None) is not None) == fast
        ref = weakref.ref(model)
        del model
        assert ref() is None
    finally:
        gc.enable()


def test_history_holds_the_model_weakly_and_still_pickles():
    import pickle

    X, y = _interrupt_data()
    model = _interrupt_model("adam")
    stopper = xpnn.EarlyStopping(monitor="loss", patience=3)
    history = model.fit(X, y, epochs=2, verbose=0, callbacks=[stopper])
    assert model.history is history and history.model is model and stopper.model is model
    again = pickle.loads(pickle.dumps(history))
    assert again.model is None and again.history == history.history
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert stopper.model is not None          # a user's callback keeps what it was given
    del stopper
    gc.collect()
    assert ref() is None and history.model is None


def test_deleted_estimator_frees_its_network():
    pytest.importorskip("sklearn")
    from xpnn.sklearn import MLPClassifier

    X, y = _interrupt_data()
    gc.collect()
    gc.disable()
    try:
        clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=2, random_state=0)
        with pytest.warns(Warning):
            clf.fit(X, y)
        ref = weakref.ref(clf.model_)
        del clf
        assert ref() is None
    finally:
        gc.enable()


# ------------------------------------------------------------------ scikit-learn refits
@pytest.mark.parametrize("warm_start", [False, True])
def test_estimator_keeps_its_fit_when_a_refit_fails(warm_start):
    pytest.importorskip("sklearn")
    import warnings

    from xpnn.sklearn import MLPClassifier, MLPRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ [1.0, -2.0, 0.5]
    ybad = y.copy()
    ybad[4] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = MLPRegressor(hidden_layer_sizes=(5,), max_iter=4, random_state=0,
                           warm_start=warm_start, dtype="float32").fit(X, y)
        clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=4, random_state=0,
                            warm_start=warm_start, dtype="float32").fit(X, y > 0)
    for est, bad_calls in (
            (reg, [lambda: reg.fit(X, ybad), lambda: reg.partial_fit(X, ybad),
                   lambda: reg.partial_fit(X, np.c_[y, y])]),
            (clf, [lambda: clf.partial_fit(X, np.full(40, 7)),
                   lambda: clf.fit(X[:, :2] * 1e300, y > 0)])):
        before = (dict(est.__dict__), [w.copy() for w in est.coefs_], est.predict(X),
                  snapshot(est.model_))
        for call in bad_calls:
            with pytest.raises(ValueError):
                call()
            assert est.__dict__.keys() == before[0].keys()
            assert est.n_iter_ == before[0]["n_iter_"]
            assert est.n_features_in_ == 3 and est.model_ is before[0]["_model"]
            assert est.loss_curve_ == before[0]["loss_curve_"]
            for a, b in zip(est.coefs_, before[1], strict=True):
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(est.predict(X), before[2])
            after = snapshot(est.model_)
            after["rng"] = before[3]["rng"]
            assert_same(after, before[3])


def test_regressor_names_y_beyond_float32():
    pytest.importorskip("sklearn")
    from xpnn.sklearn import MLPRegressor

    X = np.random.default_rng(0).normal(size=(20, 2))
    y = X[:, 0].copy()
    y[0] = 1e300
    with pytest.raises(ValueError, match="y " + BEYOND):
        MLPRegressor(hidden_layer_sizes=(3,), max_iter=2, dtype="float32").fit(X, y)


# ------------------------------------------------------------------ IDX files
def _gz(path, payload):
    path.write_bytes(gzip.compress(payload, mtime=0))
    return path


def test_idx_header_announcing_more_than_the_file_holds(tmp_path):
    from xpnn.datasets import IDXFormatError, load_idx_images, read_idx

    huge = bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 4000, 4000) + bytes(1000)
    path = _gz(tmp_path / "huge.gz", huge)
    tracemalloc.start()
    try:
        with pytest.raises(IDXFormatError, match=r"header announces shape \(60000, 4000, 4000\) "
                                                 r"\(960000000000 data bytes\), more than a "
                                                 r"\d+-byte gzip file can hold"):
            load_idx_images(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    # a plausible size that the stream does not deliver: truncated, read no further
    short = bytes([0, 0, 8, 1]) + struct.pack(">I", 5000) + bytes(100)
    with pytest.raises(IDXFormatError, match=r"truncated: header announces shape \(5000,\)"):
        read_idx(_gz(tmp_path / "short.gz", short))
    extra = bytes([0, 0, 8, 1]) + struct.pack(">I", 4) + bytes(5)
    with pytest.raises(IDXFormatError, match="unexpected bytes after the 4 data bytes"):
        read_idx(_gz(tmp_path / "extra.gz", extra))
    raw = tmp_path / "raw.idx"
    raw.write_bytes(huge[:20])
    with pytest.raises(IDXFormatError, match="truncated"):
        read_idx(raw)
    for cut in (3, 9):                          # the header itself is cut
        with pytest.raises(IDXFormatError, match="too short|truncated header"):
            read_idx(_gz(tmp_path / f"cut{cut}.gz", huge[:cut]))

"""Every bad input raises the right error, with a message that says what is wrong, and leaves
the model exactly as it was (weights, optimizer state, random generator)."""

from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import pytest
from _models import classifier

import xpnn
from xpnn.backend import Backend, to_numpy


def snapshot(model):
    """Everything a failed call must not touch, as host copies."""
    opt = model.optimizer
    return {
        "built": model.built,
        "n_features_in": model.n_features_in,
        "weights": model.get_weights() if model.built else None,
        "rng": model.rng.bit_generator.state,
        "optimizer": None if opt is None else (
            opt.iterations, opt.lr,
            [{k: to_numpy(v).copy() if hasattr(v, "shape") else v for k, v in s.items()}
             for s in opt.state]),
    }


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key == "weights" and a[key] is not None:
            for x, y in zip(a[key], b[key], strict=True):
                np.testing.assert_array_equal(x, y)
        elif key == "optimizer" and a[key] is not None:
            assert a[key][:2] == b[key][:2]
            for sa, sb in zip(a[key][2], b[key][2], strict=True):
                assert sa.keys() == sb.keys()
                for k in sa:
                    np.testing.assert_array_equal(sa[k], sb[k])
        else:
            assert a[key] == b[key], key


@contextmanager
def unchanged(model):
    before = snapshot(model)
    yield
    assert_same(snapshot(model), before)


@pytest.fixture
def trained():
    """A compiled classifier (4 features, 3 classes) with Adam state from one epoch."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, size=30)
    model = classifier(hidden=6)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    return model, X, y


# ------------------------------------------------------------------ X and y
def test_feature_mismatch_names_the_layer_and_shapes(trained):
    model, X, y = trained
    bad = np.zeros((7, 5))
    pattern = (r"X has 5 features but layer 0 \(Dense\(in_features=4, out_features=6.*\)\) "
               r"expects 4: got X of shape \(7, 5\), expected \(n_samples, 4\)")
    for call in (lambda: model.fit(bad, y[:7], verbose=0), lambda: model.predict(bad),
                 lambda: model.evaluate(bad, y[:7]), lambda: model.train_on_batch(bad, y[:7])):
        with unchanged(model), pytest.raises(ValueError, match=pattern):
            call()
    with unchanged(model), pytest.raises(ValueError, match="X_val has 5 features"):
        model.fit(X, y, validation_data=(bad, y[:7]), verbose=0)


def test_feature_mismatch_after_leading_activation():
    model = xpnn.Sequential(xpnn.Dropout(0.1), xpnn.Dense(3, 2))
    with pytest.raises(ValueError, match=r"layer 1 \(Dense\(in_features=3.*expects 3"):
        model.predict(np.zeros((2, 4)))


def test_x_must_be_two_dimensional(trained):
    model, X, y = trained
    with unchanged(model), pytest.raises(ValueError, match=r"2-D.*got shape \(4,\).*reshape"):
        model.predict(np.zeros(4))
    with unchanged(model), pytest.raises(ValueError, match="no samples"):
        model.predict(np.zeros((0, 4)))
    with unchanged(model), pytest.raises(TypeError, match="numeric"):
        model.predict(np.array([["a", "b", "c", "d"]]))


def test_consecutive_layer_mismatch_names_both_layers():
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\(in_features=5.*\)\) expects 5 input "
                                         r"features but layer 0 \(Dense\(.*\)\) outputs 4"):
        xpnn.Sequential(xpnn.Dense(3, 4), xpnn.ReLU(), xpnn.Dense(5, 2))
    with pytest.raises(ValueError, match=r"layer 3 \(Dense\(in_features=3.*expects 3 input "
                                         r"features but layer 1 \(Dense\(.*\)\) outputs 2"):
        xpnn.Sequential(xpnn.Dropout(0.1), xpnn.Dense(4, 2), xpnn.Tanh(), xpnn.Dense(3, 1))
    with pytest.raises(TypeError, match="layer 1 must be an xpnn Layer, got str"):
        xpnn.Sequential(xpnn.Dense(3, 4), "relu")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_x_or_y(trained, value):
    model, X, y = trained
    Xbad = X.copy()
    Xbad[3, 1] = value
    for call in (lambda: model.fit(Xbad, y, verbose=0), lambda: model.predict(Xbad),
                 lambda: model.evaluate(Xbad, y), lambda: model.train_on_batch(Xbad, y)):
        with unchanged(model), pytest.raises(ValueError, match="X contains 1 NaN or infinite"):
            call()
    reg = xpnn.Sequential(xpnn.Dense(4, 1), seed=0).compile(loss="mse", optimizer="sgd")
    ybad = np.arange(30.0)
    ybad[5] = value
    with unchanged(reg), pytest.raises(ValueError, match="y contains 1 NaN or infinite"):
        reg.fit(X, ybad, verbose=0)
    with unchanged(reg), pytest.raises(ValueError, match="y_val contains 1 NaN"):
        reg.fit(X, np.arange(30.0), validation_data=(X, ybad), verbose=0)


def test_non_finite_backend_x(backend):
    model = xpnn.Sequential(xpnn.Dense(2, 1), backend=backend, seed=0)
    X = model.backend.asarray(np.array([[1.0, np.nan]]), "float32")
    with unchanged(model), pytest.raises(ValueError, match="X contains (1 )?NaN or infinite"):
        model.predict(X)


def test_labels_outside_the_output_range(trained):
    model, X, y = trained
    for labels, shown in ((np.full(30, 3), "3..3"), (np.full(30, -1), "-1..-1")):
        with unchanged(model), pytest.raises(
                ValueError, match=rf"labels must lie in 0\.\.2 for a model with 3 outputs, "
                                  rf"got labels in {shown}"):
            model.fit(X, labels, verbose=0)
    with unchanged(model), pytest.raises(ValueError, match="class labels must be integers"):
        model.fit(X, np.full(30, 0.5), verbose=0)
    with unchanged(model), pytest.raises(TypeError, match="numeric.*LabelEncoder"):
        model.fit(X, np.array(["a", "b", "c"] * 10), verbose=0)
    with unchanged(model), pytest.raises(ValueError, match="one-hot targets must lie in"):
        model.fit(X, np.full((30, 3), 2.0), verbose=0)
    binary = xpnn.Sequential(xpnn.Dense(4, 1), xpnn.Sigmoid(), seed=0)
    binary.compile(loss="crossentropy", optimizer="adam")
    with unchanged(binary), pytest.raises(ValueError, match=r"targets must lie in \[0, 1\]"):
        binary.fit(X, np.full(30, 2.0), verbose=0)


def test_y_of_the_wrong_shape_for_the_loss(trained):
    model, X, y = trained
    with unchanged(model), pytest.raises(ValueError, match=r"shape \(n_samples, 3\).*got shape "
                                                           r"\(30, 2\)"):
        model.fit(X, np.zeros((30, 2)), verbose=0)
    reg = xpnn.Sequential(xpnn.Dense(4, 2), seed=0).compile(loss="mse", optimizer="sgd")
    with unchanged(reg), pytest.raises(ValueError, match=r"mse: y must have shape "
                                                         r"\(n_samples, 2\).*got shape \(30,\)"):
        reg.fit(X, np.zeros(30), verbose=0)
    one = xpnn.Sequential(xpnn.Dense(4, 1), xpnn.Softmax(), seed=0)
    one.compile(loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="needs at least 2 outputs"):
        one.fit(X, y, verbose=0)


def test_wrong_number_of_samples(trained):
    model, X, y = trained
    with unchanged(model), pytest.raises(ValueError, match=r"y has 29 samples but X has 30"):
        model.fit(X, y[:29], verbose=0)
    with unchanged(model), pytest.raises(ValueError, match=r"y has 29 samples but X has 30"):
        model.evaluate(X, y[:29])
    with unchanged(model), pytest.raises(ValueError, match=r"y_val has 3 samples but X_val has 4"):
        model.fit(X, y, validation_data=(X[:4], y[:3]), verbose=0)
    with unchanged(model), pytest.raises(TypeError, match="y is required"):
        model.fit(X, None, verbose=0)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_batch_size_must_be_a_positive_int(trained, bad):
    model, X, y = trained
    with unchanged(model), pytest.raises(ValueError, match=r"batch_size must be an int >= 1"):
        model.fit(X, y, batch_size=bad, verbose=0)
    with unchanged(model), pytest.raises(ValueError, match=r"batch_size must be an int >= 1"):
        model.evaluate(X, y, batch_size=bad)


@pytest.mark.parametrize("bad", [0, -3])
def test_predict_batch_size_must_be_positive(trained, bad):
    model, X, _ = trained
    with pytest.raises(ValueError, match="predict: batch_size must be >= 1"):
        model.predict(X, batch_size=bad)


def test_bad_fit_arguments(trained):
    model, X, y = trained
    with unchanged(model), pytest.raises(ValueError, match="epochs must be an int >= 0"):
        model.fit(X, y, epochs=-1, verbose=0)
    for split in (-0.1, 1.0):
        with unchanged(model), pytest.raises(ValueError, match=r"validation_split must be in"):
            model.fit(X, y, validation_split=split, verbose=0)
    with unchanged(model), pytest.raises(ValueError, match="leaves an empty split"):
        model.fit(X, y, validation_split=0.01, verbose=0)
    with unchanged(model), pytest.raises(ValueError, match="not both"):
        model.fit(X, y, validation_split=0.2, validation_data=(X, y), verbose=0)
    with unchanged(model), pytest.raises(ValueError, match=r"tuple \(X_val, y_val\)"):
        model.fit(X, y, validation_data=X, verbose=0)


# ------------------------------------------------------------------ names
def test_unknown_names_list_the_valid_ones():
    model = xpnn.Sequential(xpnn.Dense(2, 1))
    with pytest.raises(ValueError, match="unknown loss 'hinge'; valid names are: .*binary_"
                                         "crossentropy.*crossentropy.*mse"):
        model.compile(loss="hinge")
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'; valid names are: sgd, "
                                         "rmsprop, adam, adamw"):
        model.compile(loss="mse", optimizer="adagrad")
    with pytest.raises(ValueError, match="unknown metric 'f1'; valid names are: accuracy.*mae"
                                         ".*r2"):
        model.compile(loss="mse", metrics=["f1"])
    with pytest.raises(ValueError, match="unknown backend 'jax'; valid backends are numpy, "
                                         "torch, cupy, array_api_strict"):
        xpnn.Sequential(xpnn.Dense(2, 1), backend="jax")
    with pytest.raises(ValueError, match=r"dtype must be one of \('float32', 'float64'\)"):
        xpnn.Sequential(xpnn.Dense(2, 1), dtype="float16")
    assert model.loss is None and model.optimizer is None      # nothing half-compiled


def test_bad_hyperparameters():
    cases = [
        (lambda: xpnn.SGD(lr=-0.5), "SGD: lr must be a finite number >= 0, got -0.5"),
        (lambda: xpnn.SGD(0.1, nesterov=True), "nesterov momentum needs momentum > 0"),
        (lambda: xpnn.SGD(0.1, momentum=1.0), r"momentum must be in \[0, 1\)"),
        (lambda: xpnn.Adam(beta1=1.0), r"Adam: beta1 must be in \[0, 1\)"),
        (lambda: xpnn.AdamW(weight_decay=-1), "AdamW: weight_decay must be a finite number >= 0"),
        (lambda: xpnn.RMSprop(eps=0), "RMSprop: eps must be a finite number > 0"),
        (lambda: xpnn.Dropout(1.0), r"Dropout: p must be in \[0, 1\)"),
        (lambda: xpnn.Dense(0, 3), "Dense: in_features must be an int >= 1, got 0"),
        (lambda: xpnn.Dense(2, None), "out_features is required"),
        (lambda: xpnn.Dense(2, 3, init="zeros"), "init must be one of"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()


# ------------------------------------------------------------------ state of the model
def test_fit_before_compile():
    model = xpnn.Sequential(xpnn.Dense(2, 1), seed=0)
    for call in (lambda: model.fit(np.zeros((2, 2)), np.zeros(2)),
                 lambda: model.evaluate(np.zeros((2, 2)), np.zeros(2)),
                 lambda: model.train_on_batch(np.zeros((2, 2)), np.zeros(2))):
        with unchanged(model), pytest.raises(RuntimeError, match=r"call compile\(loss=.*\) "
                                                                 r"first"):
            call()


def test_predict_before_any_weights_exist():
    model = xpnn.Sequential(xpnn.Dense(None, 2), xpnn.Softmax(), seed=0)
    model.compile(loss="crossentropy")
    for call in (lambda: model.predict(np.zeros((1, 3))), model.get_weights,
                 lambda: model.evaluate(np.zeros((1, 3)), [0]),
                 lambda: model.set_weights([])):
        with pytest.raises(ValueError, match="no weights yet; call fit"):
            call()
    with pytest.raises(ValueError, match="no layers"):
        xpnn.Sequential().predict(np.zeros((1, 3)))


def test_failed_first_fit_leaves_a_lazy_model_unbuilt():
    model = xpnn.Sequential(xpnn.Dense(None, 2), xpnn.Softmax(), seed=0)
    model.compile(loss="crossentropy")
    with unchanged(model), pytest.raises(ValueError, match="labels must lie in 0..1"):
        model.fit(np.zeros((3, 5)), [0, 1, 2], verbose=0)
    with unchanged(model), pytest.raises(ValueError, match="X_val has 4 features but layer 0"):
        model.fit(np.zeros((3, 5)), [0, 1, 1], validation_data=(np.zeros((2, 4)), [0, 1]),
                  verbose=0)
    with unchanged(model), pytest.raises(ValueError, match="X contains 1 NaN"):
        model.train_on_batch(np.array([[np.nan, 1.0]]), [0])
    assert not model.built and model.n_features_in is None
    model.fit(np.zeros((3, 6)), [0, 1, 1], verbose=0)             # and it still works after
    assert model.n_features_in == 6


def test_set_weights_checks_everything_before_changing_anything(trained):
    model, _, _ = trained
    good = model.get_weights()
    wrong_shape = [w.copy() for w in good]
    wrong_shape[2] = np.zeros((3, 6))
    with unchanged(model), pytest.raises(ValueError, match=r"array 2 \(W of layer 2\) must have "
                                                           r"shape \(6, 3\), got \(3, 6\)"):
        model.set_weights([w + 1 for w in good[:2]] + wrong_shape[2:])
    with unchanged(model), pytest.raises(ValueError, match="expected 4 arrays, got 3"):
        model.set_weights(good[:3])
    with_nan = [w.copy() for w in good]
    with_nan[3][0] = np.nan
    with unchanged(model), pytest.raises(ValueError, match="array 3 contains 1 NaN"):
        model.set_weights([w + 1 for w in good[:3]] + with_nan[3:])


def test_array_of_another_backend_is_rejected(backend):
    if backend == "numpy":
        pytest.skip("NumPy arrays are host data, accepted by every backend")
    model = xpnn.Sequential(xpnn.Dense(2, 2), xpnn.Softmax(), seed=0)
    model.compile(loss="crossentropy")
    X = xpnn.get_backend(backend).asarray(np.zeros((3, 2)), "float32")
    message = (rf"X is a {backend} array but the model's backend is numpy: convert it with "
               rf"xpnn.to_numpy\(X\) or move the model with model.to\('{backend}'\)")
    for call in (lambda: model.predict(X), lambda: model.fit(X, [0, 1, 1], verbose=0),
                 lambda: model.evaluate(X, [0, 1, 1])):
        with unchanged(model), pytest.raises(TypeError, match=message):
            call()
    with unchanged(model), pytest.raises(TypeError, match=rf"X_val is a {backend} array"):
        model.fit(np.zeros((3, 2)), [0, 1, 1], validation_data=(X, [0, 1, 1]), verbose=0)
    other = xpnn.Sequential(xpnn.Dense(2, 2), backend=backend, seed=0)
    other.predict(np.zeros((3, 2)))                                # host data is fine


# ------------------------------------------------------------------ files
def test_loading_files_that_are_not_xpnn_models(tmp_path):
    np.savez(tmp_path / "random.npz", a=np.arange(3), b=np.eye(2))
    (tmp_path / "notes.txt").write_text("these are not weights\n")
    np.save(tmp_path / "array.npy", np.zeros(3))
    np.savez(tmp_path / "fake.npz", __xpnn__=np.array('{"format": "other"}'))
    np.savez(tmp_path / "broken.npz", __xpnn__=np.array("{not json"))
    (tmp_path / "empty.npz").write_bytes(b"")
    cases = {"random.npz": "no '__xpnn__' entry", "notes.txt": "not a NumPy .npz archive",
             "array.npy": "not an .npz archive", "fake.npz": "format tag missing",
             "broken.npz": "unreadable header", "empty.npz": "not a NumPy .npz archive"}
    for name, reason in cases.items():
        with pytest.raises(ValueError, match=f"is not an xpnn model file.*{reason}"):
            xpnn.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        xpnn.load(tmp_path / "missing.npz")


def test_loading_a_file_from_a_newer_version(tmp_path):
    model = xpnn.Sequential(xpnn.Dense(2, 1))
    config = model.get_config()
    config["version"] = 99
    np.savez(tmp_path / "future.npz", __xpnn__=np.array(json.dumps(config)))
    with pytest.raises(ValueError, match="newer xpnn"):
        xpnn.load(tmp_path / "future.npz")


# ------------------------------------------------------------------ divergence
overflow_ok = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # overflow is the point


def regression_model(optimizer, dtype="float32"):
    model = xpnn.Sequential(xpnn.Dense(3, 8), xpnn.ReLU(), xpnn.Dense(8, 1), dtype=dtype, seed=0)
    model.compile(loss="mse", optimizer=optimizer)
    return model


def blow_up_data():
    """40 samples; batch 4 of 5 (rows 24..31, batch_size 8) is scaled to 1e30: its float32
    squared error overflows."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ [1.0, 2.0, -1.0]
    X[24:32] *= 1e30
    return X, y


@pytest.fixture(params=["host-check", "gpu-replay"])
def check_mode(request, monkeypatch):
    """Run the divergence tests with the per-batch host check, and with the GPU strategy
    (one check per epoch, then a replay with checks) forced on by faking ``is_gpu``."""
    if request.param == "gpu-replay":
        monkeypatch.setattr(Backend, "is_gpu", property(lambda self: True))
    return request.param


@overflow_ok
@pytest.mark.parametrize("fastpath", [True, False], ids=["fastpath", "generic"])
def test_divergence_stops_before_the_bad_batch(check_mode, fastpath):
    X, y = blow_up_data()
    model = regression_model(xpnn.Adam(0.01))
    model.fastpath = fastpath
    assert model.backend.is_gpu == (check_mode == "gpu-replay")
    with pytest.raises(xpnn.TrainingDivergedError,
                       match=r"loss became inf at epoch 1, batch 4: training stopped and the "
                             r"weights from before this step were kept"):
        model.fit(X, y, epochs=3, batch_size=8, shuffle=False, verbose=0)

    reference = regression_model(xpnn.Adam(0.01))          # the three good batches only
    reference.fastpath = fastpath
    reference.fit(X[:24], y[:24], epochs=1, batch_size=8, shuffle=False, verbose=0)
    expected = snapshot(reference)
    got = snapshot(model)
    got["rng"] = expected["rng"]
    assert_same(got, expected)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@overflow_ok
def test_divergence_in_a_later_epoch(check_mode):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(16, 3))
    y = X @ [1.0, 2.0, -1.0]
    # (a rate whose first step leaves finite outputs; at 1e30 they overflow at once, and
    # epoch 1 is refused: test_hostile.py)
    model = regression_model(xpnn.SGD(1e15))
    with pytest.raises(xpnn.TrainingDivergedError, match=r"at epoch 2, batch 1"):
        model.fit(X, y, epochs=5, batch_size=16, verbose=0)
    reference = regression_model(xpnn.SGD(1e15))
    reference.fit(X, y, epochs=1, batch_size=16, verbose=0)
    for got, exp in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, exp)
    assert model.optimizer.iterations == 1


def test_gpu_strategy_gives_the_same_run_when_nothing_diverges(monkeypatch):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 3))
    y = X @ [1.0, 2.0, -1.0]
    host = regression_model(xpnn.Adam(0.01))
    host_history = host.fit(X, y, epochs=3, batch_size=8, verbose=0)
    monkeypatch.setattr(Backend, "is_gpu", property(lambda self: True))
    gpu = regression_model(xpnn.Adam(0.01))
    gpu_history = gpu.fit(X, y, epochs=3, batch_size=8, verbose=0)
    assert gpu_history.history == host_history.history
    for a, b in zip(gpu.get_weights(), host.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@overflow_ok
def test_train_on_batch_divergence():
    X, y = blow_up_data()
    model = regression_model(xpnn.SGD(0.01))
    model.train_on_batch(X[:8], y[:8])
    with unchanged(model), pytest.raises(xpnn.TrainingDivergedError, match="loss became inf"):
        model.train_on_batch(X[24:32], y[24:32])
    assert issubclass(xpnn.TrainingDivergedError, FloatingPointError)

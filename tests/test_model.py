"""The Sequential API: learning XOR, saving and loading, moving between backends, weights,
summary, History, validation, evaluate/predict/train_on_batch, lazy building, EarlyStopping."""

from __future__ import annotations

import copy
import pickle
from functools import partial

import numpy as np
import pytest
from _models import assert_weights_equal, blobs, mlp

import xpnn
from xpnn.backend import backend_of, get_backend, to_numpy

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0])


small_classifier = partial(mlp, dropout=0.2)     # 4 → 8 → 3


def regression(n=50, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, X @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=n)


# ------------------------------------------------------------------ learning
@pytest.mark.parametrize("loss", ["crossentropy", "mse"])
def test_xor_is_learned(backend, loss):
    model = xpnn.Sequential(xpnn.Dense(2, 8), xpnn.Tanh(), xpnn.Dense(8, 1), xpnn.Sigmoid(),
                            backend=backend, seed=0)
    model.compile(loss=loss, optimizer=xpnn.Adam(0.05), metrics=["accuracy"])
    history = model.fit(XOR_X, XOR_Y, epochs=400, batch_size=4, verbose=0)
    assert history["accuracy"][-1] == 1.0
    pred = to_numpy(model.predict(XOR_X)).ravel()
    np.testing.assert_array_equal(pred > 0.5, XOR_Y.astype(bool))
    assert model.evaluate(XOR_X, XOR_Y)["accuracy"] == 1.0
    assert history["loss"][-1] < 0.05 * history["loss"][0]


def test_crossentropy_alias_resolves_from_last_layer():
    binary = xpnn.Sequential(xpnn.Dense(2, 1), xpnn.Sigmoid()).compile(loss="crossentropy")
    assert isinstance(binary.loss, xpnn.BinaryCrossEntropy) and binary._fused
    multi = xpnn.Sequential(xpnn.Dense(2, 3), xpnn.Softmax()).compile(loss="crossentropy")
    assert isinstance(multi.loss, xpnn.CategoricalCrossEntropy) and multi._fused
    unfused = xpnn.Sequential(xpnn.Dense(2, 3), xpnn.Softmax()).compile(loss="mse")
    assert not unfused._fused


# ------------------------------------------------------------------ save / load / to
def test_save_load_round_trip_is_exact(tmp_path, backend):
    X, y = blobs()
    model = small_classifier(backend)
    model.compile(loss="crossentropy", optimizer=xpnn.RMSprop(0.003, momentum=0.5),
                  metrics=["accuracy", "mae"])
    model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)

    loaded = xpnn.load(path)
    assert loaded.backend.name == model.backend.name and loaded.dtype == "float32"
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert [layer.get_config() for layer in loaded.layers] == \
        [layer.get_config() for layer in model.layers]
    assert_weights_equal(loaded.get_weights(), model.get_weights())
    np.testing.assert_array_equal(to_numpy(loaded.predict(X)), to_numpy(model.predict(X)))
    assert type(loaded.loss) is type(model.loss)
    assert type(loaded.optimizer) is xpnn.RMSprop
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert [m.name for m in loaded.metrics] == ["accuracy", "mae"]
    assert loaded._fused
    assert loaded.evaluate(X, y) == model.evaluate(X, y)
    assert loaded.get_config() == model.get_config()


@pytest.mark.parametrize("clone", ["pickle", "deepcopy"])
def test_pickled_model_continues_training_identically(backend, clone):
    """A pickled (or deep-copied) model carries weights, optimizer moments and RNG state: both
    copies then train to the same weights, and the copy is independent of the original."""
    X, y = blobs()
    model = small_classifier(backend=backend, dtype="float64")
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01), metrics=["accuracy"])
    model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    twin = pickle.loads(pickle.dumps(model)) if clone == "pickle" else copy.deepcopy(model)
    assert twin.backend.name == model.backend.name and twin.metrics[0].name == "accuracy"
    assert_weights_equal(twin.get_weights(), model.get_weights())
    model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    assert not np.array_equal(twin.get_weights()[0], model.get_weights()[0])  # independent
    twin.fit(X, y, epochs=2, batch_size=16, verbose=0)
    assert_weights_equal(twin.get_weights(), model.get_weights())


def test_load_onto_another_backend(tmp_path, backend):
    X, y = blobs()
    model = small_classifier("numpy", dtype="float64")
    model.compile(loss="crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(X, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = xpnn.load(tmp_path / "m.npz", backend=backend)
    assert loaded.backend.name == backend and loaded.dtype == "float64"
    assert all(get_backend(backend).owns(p.data) for p in loaded.params)
    assert_weights_equal(loaded.get_weights(), model.get_weights())
    np.testing.assert_allclose(to_numpy(loaded.predict(X)), to_numpy(model.predict(X)),
                               rtol=1e-12, atol=1e-14)
    loaded.fit(X, y, epochs=1, verbose=0)            # and it trains there


def test_save_uncompiled_and_unbuilt(tmp_path):
    model = xpnn.Sequential(xpnn.Dense(None, 3), xpnn.Tanh(), xpnn.Dense(3, 1), seed=4)
    model.save(tmp_path / "lazy.npz")
    loaded = xpnn.load(tmp_path / "lazy.npz")
    assert not loaded.built and loaded.loss is None
    compiled = xpnn.Sequential(xpnn.Dense(2, 3), xpnn.Tanh(), xpnn.Dense(3, 1), seed=4)
    compiled.save(tmp_path / "uncompiled.npz")
    loaded = xpnn.load(tmp_path / "uncompiled.npz")
    assert loaded.loss is None
    assert_weights_equal(loaded.get_weights(), compiled.get_weights())


def test_to_moves_model_and_optimizer_state(backend):
    """numpy for 2 epochs then ``backend`` for 2 more equals 4 epochs on numpy: the optimizer's
    moments and the shuffling generator travel with the model."""
    X, y = blobs()
    moved = small_classifier(dtype="float64")
    moved.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01), metrics=["accuracy"])
    moved.fit(X, y, epochs=2, batch_size=16, verbose=0)
    before = to_numpy(moved.predict(X))
    state_before = [{k: to_numpy(v).copy() if hasattr(v, "shape") else v for k, v in s.items()}
                    for s in moved.optimizer.state]

    assert moved.to(backend) is moved
    be = get_backend(backend)
    assert moved.backend is be
    assert all(be.owns(p.data) for p in moved.params)
    assert all(be.owns(layer.W.data) for layer in moved.layers if isinstance(layer, xpnn.Dense))
    for s, s0 in zip(moved.optimizer.state, state_before, strict=True):
        assert s.keys() == s0.keys() and s["step"] == s0["step"]
        for key in ("exp_avg", "exp_avg_sq"):
            assert be.owns(s[key])
            np.testing.assert_array_equal(to_numpy(s[key]), s0[key])
    np.testing.assert_allclose(to_numpy(moved.predict(X)), before, rtol=1e-12, atol=1e-14)
    assert be.owns(moved.predict(X))
    moved.fit(X, y, epochs=2, batch_size=16, verbose=0)

    reference = small_classifier(dtype="float64")
    reference.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01), metrics=["accuracy"])
    reference.fit(X, y, epochs=4, batch_size=16, verbose=0)
    for got, exp in zip(moved.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-10)
    moved.to("numpy")
    np.testing.assert_allclose(moved.get_weights()[0], reference.get_weights()[0], rtol=1e-10)


def test_to_before_building_and_compiling():
    model = xpnn.Sequential(xpnn.Dense(None, 3), xpnn.Softmax(), seed=0).to("numpy")
    model.compile(loss="crossentropy")
    model.fit(*blobs(), epochs=1, verbose=0)
    assert model.built


# ------------------------------------------------------------------ weights & description
def test_get_and_set_weights(backend):
    model = small_classifier(backend)
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(4, 8), (8,), (8, 3), (3,)]
    assert all(isinstance(w, np.ndarray) and w.dtype == np.float32 for w in weights)
    weights[0][...] = 0.0                                 # a copy: the model is untouched
    assert np.any(model.get_weights()[0] != 0.0)

    rng = np.random.default_rng(1)
    new = [rng.normal(size=w.shape) for w in weights]
    identities = [p.data for p in model.params]
    model.set_weights(new)
    for got, exp in zip(model.get_weights(), new, strict=True):
        np.testing.assert_array_equal(got, exp.astype(np.float32))
    assert all(p.data is a for p, a in zip(model.params, identities, strict=True))
    X = rng.normal(size=(5, 4))
    h = np.maximum(X @ new[0] + new[1], 0) @ new[2] + new[3]
    expected = np.exp(h - h.max(axis=1, keepdims=True))
    np.testing.assert_allclose(to_numpy(model.predict(X)),
                               expected / expected.sum(axis=1, keepdims=True), rtol=1e-4,
                               atol=1e-6)


def test_set_weights_from_another_backend_array(backend):
    model = small_classifier("numpy")
    src = small_classifier(backend, seed=3)
    model.set_weights([p.data for p in src.params])
    assert_weights_equal(model.get_weights(), src.get_weights())


def test_summary():
    model = xpnn.Sequential(xpnn.Dense(4, 8), xpnn.ReLU(), xpnn.Dense(8, 3), xpnn.Softmax())
    lines = []
    text = model.summary(print_fn=lines.append)
    assert lines == [text]
    for piece in ('backend="numpy"', 'dtype="float32"', "0: Dense", "(None, 8)", "1: ReLU",
                  "2: Dense", "(None, 3)", "3: Softmax", "Total params: 67"):
        assert piece in text, piece
    assert model.count_params() == 4 * 8 + 8 + 8 * 3 + 3
    assert "Dense(in_features=4" in repr(model)
    lazy = xpnn.Sequential(xpnn.Dense(None, 2))
    assert "Total params: ?" in lazy.summary(print_fn=None)


# ------------------------------------------------------------------ fit / evaluate / predict
def test_history_keys_and_lengths():
    X, y = blobs()
    model = small_classifier()
    model.compile(loss="crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0)
    assert isinstance(history, xpnn.History) and model.history is history
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert history.epoch == [0, 1, 2]
    assert all(len(v) == 3 for v in history.history.values())
    assert all(isinstance(v, float) for vals in history.history.values() for v in vals)
    assert all(0.0 <= a <= 1.0 for a in history["accuracy"] + history["val_accuracy"])

    Xr, yr = regression()
    reg = xpnn.Sequential(xpnn.Dense(3, 8), xpnn.Tanh(), xpnn.Dense(8, 1), seed=0)
    reg.compile(loss="mse", optimizer=xpnn.Adam(0.01), metrics=["r2", "mae"])
    history = reg.fit(Xr, yr, epochs=2, validation_data=(Xr[:10], yr[:10]), verbose=0)
    assert set(history.history) == {"loss", "r2", "mae", "val_loss", "val_r2", "val_mae", "lr"}
    assert history["val_loss"][-1] == pytest.approx(reg.evaluate(Xr[:10], yr[:10])["loss"])


def test_verbose_prints_one_line_per_epoch(capsys):
    model = small_classifier()
    model.compile(loss="crossentropy", metrics=["accuracy"])
    model.fit(*blobs(), epochs=2, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and "accuracy" in lines[0]


def test_validation_split_holds_out_the_last_fraction():
    X, y = blobs(n=40)
    model = small_classifier(dtype="float64")
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01), metrics=["accuracy"])
    history = model.fit(X, y, epochs=1, batch_size=8, validation_split=0.25, verbose=0)
    held_out = model.evaluate(X[30:], y[30:])
    assert history["val_loss"][0] == pytest.approx(held_out["loss"], rel=1e-12)
    assert history["val_accuracy"][0] == pytest.approx(held_out["accuracy"])

    trained_on_head = small_classifier(dtype="float64")
    trained_on_head.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01))
    trained_on_head.fit(X[:30], y[:30], epochs=1, batch_size=8, verbose=0)
    assert_weights_equal(model.get_weights(), trained_on_head.get_weights())


def test_evaluate_returns_loss_and_every_metric(backend):
    Xr, yr = regression()
    model = xpnn.Sequential(xpnn.Dense(3, 1), backend=backend, dtype="float64", seed=0)
    model.compile(loss="mse", metrics=["mae", "r2", "accuracy"])
    result = model.evaluate(Xr, yr)
    assert set(result) == {"loss", "mae", "r2", "accuracy"}
    assert all(isinstance(v, float) for v in result.values())
    pred = to_numpy(model.predict(Xr)).ravel()
    assert result["loss"] == pytest.approx(np.mean((pred - yr) ** 2), rel=1e-12)
    assert result["mae"] == pytest.approx(np.mean(np.abs(pred - yr)), rel=1e-12)
    r2 = 1 - np.sum((yr - pred) ** 2) / np.sum((yr - yr.mean()) ** 2)
    assert result["r2"] == pytest.approx(r2, rel=1e-9)
    assert model.evaluate(Xr, yr, batch_size=7) == pytest.approx(result, rel=1e-12)


def test_predict_returns_an_array_of_the_model_backend(backend):
    model = small_classifier(backend)
    X, _ = blobs(n=10)
    out = model.predict(X)
    if backend == "numpy":
        assert isinstance(out, np.ndarray)
    else:
        assert backend_of(out).name == backend
    assert get_backend(backend).owns(out)
    assert tuple(out.shape) == (10, 3)
    np.testing.assert_allclose(to_numpy(out).sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(model.predict(X, batch_size=3)), to_numpy(out),
                               rtol=1e-6, atol=1e-7)
    again = model.predict(model.backend.asarray(X, "float32"))      # backend input accepted
    np.testing.assert_array_equal(to_numpy(again), to_numpy(out))
    assert len(to_numpy(model.predict(X.tolist()))) == 10          # lists too


def test_predict_is_deterministic_despite_dropout():
    model = small_classifier()
    X, _ = blobs(n=10)
    np.testing.assert_array_equal(model.predict(X), model.predict(X))


def test_train_on_batch_returns_the_loss_before_the_step(backend):
    X, y = blobs(n=16)
    model = small_classifier(backend, dtype="float64")
    model.layers[2].p = 0.0                      # no dropout: training loss == evaluate loss
    model.compile(loss="crossentropy", optimizer=xpnn.SGD(0.1))
    before = model.evaluate(X, y)["loss"]
    w0 = model.get_weights()
    loss = model.train_on_batch(X, y)
    assert type(loss) is float
    assert loss == pytest.approx(before, rel=1e-12)
    assert not np.array_equal(model.get_weights()[0], w0[0])
    assert model.optimizer.iterations == 1
    assert model.evaluate(X, y)["loss"] < before


def test_lazy_first_layer_is_built_from_the_data(backend):
    X, y = blobs()
    lazy = xpnn.Sequential(xpnn.Dense(None, 8), xpnn.ReLU(), xpnn.Dense(8, 3), xpnn.Softmax(),
                           backend=backend, seed=5)
    assert not lazy.built and lazy.n_features_in is None
    lazy.compile(loss="crossentropy", optimizer="adam")
    lazy.fit(X, y, epochs=2, verbose=0)
    assert lazy.built and lazy.n_features_in == 4 and lazy.layers[0].in_features == 4
    assert lazy.get_weights()[0].shape == (4, 8)

    eager = xpnn.Sequential(xpnn.Dense(4, 8), xpnn.ReLU(), xpnn.Dense(8, 3), xpnn.Softmax(),
                            backend=backend, seed=5)
    eager.compile(loss="crossentropy", optimizer="adam")
    eager.fit(X, y, epochs=2, verbose=0)
    assert_weights_equal(lazy.get_weights(), eager.get_weights())
    with pytest.raises(ValueError, match="has 5 features but layer 0"):
        lazy.predict(np.zeros((2, 5)))

    by_batch = xpnn.Sequential(xpnn.Dense(None, 2), xpnn.Softmax(), backend=backend, seed=5)
    by_batch.compile(loss="crossentropy")
    assert isinstance(by_batch.train_on_batch(X, y % 2), float)
    assert by_batch.get_weights()[0].shape == (4, 2)


def test_fit_accepts_pandas_and_lists():
    pd = pytest.importorskip("pandas")
    X, y = blobs(n=20)
    model = small_classifier()
    model.compile(loss="crossentropy")
    model.fit(pd.DataFrame(X), pd.Series(y), epochs=1, verbose=0)
    model.fit(X.tolist(), y.tolist(), epochs=1, verbose=0)


def test_epochs_zero_trains_nothing():
    model = small_classifier()
    model.compile(loss="crossentropy")
    w0 = model.get_weights()
    history = model.fit(*blobs(), epochs=0, verbose=0)
    assert history.history == {}
    assert_weights_equal(model.get_weights(), w0)


def test_lazy_dense_after_input_dropout():
    model = xpnn.Sequential(xpnn.Dropout(0.2), xpnn.Dense(None, 3), xpnn.Softmax(), seed=0)
    model.compile(loss="crossentropy")
    model.fit(*blobs(), epochs=1, verbose=0)
    assert model.layers[1].in_features == 4
    hidden = xpnn.Sequential(xpnn.Dense(4, 5), xpnn.Dense(None, 3), seed=0)   # width is known
    assert hidden.layers[1].W.shape == (5, 3)

"""The same seed and data give the same training run on every backend.

Every random number (initial weights, shuffles, dropout masks) is drawn on the host, so the
backends differ only by floating-point rounding: after ten training steps the weights agree with
NumPy's to 1e-10 in float64 and to 1e-5 (relative) in float32.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn.backend import to_numpy
from xpnn.sources import streams

N_SAMPLES, BATCH, EPOCHS = 40, 8, 2          # 5 batches x 2 epochs = 10 optimizer steps
#: float32: two backends' GEMMs round differently, and Adam's step m/√v turns a rounding
#: difference in a near-zero gradient into a visible one (the Dropout masks decide which
#: units have such gradients); 5e-5 is 0.5 % of one step of lr 0.01, far below a wrong update.
TOLERANCE = {"float64": dict(rtol=1e-10, atol=1e-10),
             "float32": dict(rtol=1e-5, atol=5e-5)}

OPTIMIZERS = {
    "sgd-nesterov": lambda: xpnn.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "rmsprop-momentum": lambda: xpnn.RMSprop(0.005, momentum=0.5),
    "adam": lambda: xpnn.Adam(0.01),
    "adamw": lambda: xpnn.AdamW(0.01, weight_decay=0.05),
}


def classifier(backend, dtype, seed=0):
    return xpnn.Sequential(
        xpnn.Dense(6, 16), xpnn.ReLU(), xpnn.Dropout(0.3),
        xpnn.Dense(16, 8, init="glorot"), xpnn.Tanh(),
        xpnn.Dense(8, 3), xpnn.Softmax(),
        backend=backend, dtype=dtype, seed=seed)


def data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N_SAMPLES, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    return X, y


def train(backend, dtype, make_optimizer, **fit):
    X, y = data()
    model = classifier(backend, dtype)
    model.compile(loss="crossentropy", optimizer=make_optimizer(), metrics=["accuracy"])
    history = model.fit(X, y, epochs=EPOCHS, batch_size=BATCH, shuffle=True, verbose=0, **fit)
    return model, history


def assert_weights_close(got, expected, dtype):
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g, e, **TOLERANCE[dtype], err_msg=f"parameter {i}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_same_seed_same_initial_weights(backend, dtype):
    ref = classifier("numpy", dtype).get_weights()
    got = classifier(backend, dtype).get_weights()
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, r)
    other_seed = classifier(backend, dtype, seed=1).get_weights()
    assert not np.array_equal(other_seed[0], ref[0])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_training_matches_numpy(backend, dtype, optimizer):
    ref, ref_history = train("numpy", dtype, OPTIMIZERS[optimizer])
    model, history = train(backend, dtype, OPTIMIZERS[optimizer])
    assert model.optimizer.iterations == ref.optimizer.iterations == 10
    before = classifier("numpy", dtype).get_weights()
    assert not np.allclose(ref.get_weights()[0], before[0])     # training did change them
    assert_weights_close(model.get_weights(), ref.get_weights(), dtype)
    np.testing.assert_allclose(history["loss"], ref_history["loss"], **TOLERANCE[dtype])
    assert history["accuracy"] == pytest.approx(ref_history["accuracy"], abs=1e-12)
    X, _ = data(1)
    np.testing.assert_allclose(to_numpy(model.predict(X)), to_numpy(ref.predict(X)),
                               **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_regression_and_validation_match_numpy(backend, dtype):
    """MSE on a linear output, r2/mae metrics and validation_split, ten steps of RMSprop."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 4))
    y = np.stack([X @ [1.0, -2.0, 0.5, 0.0], np.sin(X[:, 0])], axis=1)
    runs = []
    for be in ("numpy", backend):
        model = xpnn.Sequential(xpnn.Dense(4, 12), xpnn.LeakyReLU(0.1), xpnn.Dense(12, 2),
                                backend=be, dtype=dtype, seed=7)
        model.compile(loss="mse", optimizer=xpnn.RMSprop(0.01), metrics=["mae", "r2"])
        history = model.fit(X, y, epochs=2, batch_size=8, validation_split=0.2, verbose=0)
        runs.append((model, history))
    (ref, ref_h), (model, h) = runs
    assert ref.optimizer.iterations == 10                      # 40 training rows / 8, twice
    assert_weights_close(model.get_weights(), ref.get_weights(), dtype)
    for key in ("loss", "mae", "r2", "val_loss", "val_mae", "val_r2"):
        np.testing.assert_allclose(h[key], ref_h[key], rtol=1e-5 if dtype == "float32" else 1e-9,
                                   err_msg=key)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_bce_and_no_shuffle_match_numpy(backend, dtype):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 3))
    y = np.stack([X[:, 0] > 0, X[:, 1] * X[:, 2] > 0], axis=1).astype(float)
    runs = []
    for be in ("numpy", backend):
        model = xpnn.Sequential(xpnn.Dense(3, 10), xpnn.Sigmoid(), xpnn.Dropout(0.2),
                                xpnn.Dense(10, 2), xpnn.Sigmoid(), backend=be, dtype=dtype,
                                seed=11)
        model.compile(loss="binary_crossentropy", optimizer=xpnn.SGD(0.5, momentum=0.9),
                      metrics=["accuracy"])
        model.fit(X, y, epochs=2, batch_size=6, shuffle=False, verbose=0)
        runs.append(model)
    assert runs[0]._fused and runs[0].optimizer.iterations == 10
    assert_weights_close(runs[1].get_weights(), runs[0].get_weights(), dtype)


def test_same_backend_same_seed_is_deterministic(backend):
    a, ha = train(backend, "float32", OPTIMIZERS["adam"])
    b, hb = train(backend, "float32", OPTIMIZERS["adam"])
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert ha.history == hb.history


def test_shuffle_and_dropout_matter():
    """The comparisons above would be weaker if shuffling or dropout had no effect."""
    shuffled, _ = train("numpy", "float64", OPTIMIZERS["adam"])
    X, y = data()
    plain = classifier("numpy", "float64")
    plain.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01))
    plain.fit(X, y, epochs=EPOCHS, batch_size=BATCH, shuffle=False, verbose=0)
    assert not np.allclose(plain.get_weights()[0], shuffled.get_weights()[0])
    no_dropout = classifier("numpy", "float64")
    no_dropout.layers[2].p = 0.0
    no_dropout.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01))
    no_dropout.fit(X, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    assert not np.allclose(no_dropout.get_weights()[0], shuffled.get_weights()[0])


def test_training_matches_torch_autograd():
    """Ten steps of xpnn's hand-written backprop + Adam equal PyTorch autograd + torch.optim."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = rng.integers(0, 3, size=40)
    model = xpnn.Sequential(xpnn.Dense(5, 7), xpnn.Tanh(), xpnn.Dense(7, 6, bias=False),
                            xpnn.LeakyReLU(0.05), xpnn.Dense(6, 3), xpnn.Softmax(),
                            dtype="float64", seed=0)
    params = [torch.nn.Parameter(torch.tensor(w)) for w in model.get_weights()]
    W1, b1, W2, W3, b3 = params
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(0.02, weight_decay=0.01))
    model.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)

    opt = torch.optim.Adam(params, lr=0.02, weight_decay=0.01)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    for _ in range(2):
        for start in range(0, 40, 8):
            xb, yb = Xt[start:start + 8], yt[start:start + 8]
            h = torch.nn.functional.leaky_relu(torch.tanh(xb @ W1 + b1) @ W2, 0.05)
            loss = torch.nn.functional.cross_entropy(h @ W3 + b3, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for got, p in zip(model.get_weights(), params, strict=True):
        np.testing.assert_allclose(got, p.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_streamed_memmap_matches_numpy(backend, dtype, tmp_path):
    """A uint8 memmap read batch by batch (on CuPy through the pinned double buffer and the
    copy stream) trains, predicts and evaluates as the same data converted up front on NumPy;
    on the model's own backend the streamed and resident runs are the same run.

    With pixels of a few levels, some data sets give a unit a near-zero gradient whose
    rounding Adam's m/√v turns into a visible step (NumPy's own float32 run then differs from
    its float64 run by up to 3e-3 after these 10 steps); the data here are not such a set, which
    the test checks first (else a float32 difference says nothing about the backend)."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 4, size=(N_SAMPLES, 6), dtype=np.uint8)    # small: well conditioned
    y = (images[:, 0] > images[:, 1]).astype(int) + (images[:, 2] > 2).astype(int)
    X = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.uint8, images.shape)
    X[...] = images
    runs = {}
    for name, be, source in (("numpy", "numpy", images.astype(dtype)),
                             ("resident", backend, images.astype(dtype)),
                             ("streamed", backend, X), ("float64", "numpy", images)):
        if name == "float64" and dtype == "float64":
            continue
        model = classifier(be, "float64" if name == "float64" else dtype)
        model.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01), metrics=["accuracy"])
        if name == "streamed":
            model.resident_budget = 0
            assert streams(model, source)
        history = model.fit(source, y, epochs=EPOCHS, batch_size=BATCH, validation_split=0.25,
                            verbose=0)
        runs[name] = (model, history, to_numpy(model.predict(source, batch_size=7)),
                      model.evaluate(source, y, batch_size=9))
    ref = runs["numpy"]
    if dtype == "float32":                    # the data are well conditioned (see above)
        assert_weights_close([w.astype(np.float32) for w in runs["float64"][0].get_weights()],
                             ref[0].get_weights(), dtype)
    for name in ("resident", "streamed"):
        model, history, predicted, scores = runs[name]
        assert_weights_close(model.get_weights(), ref[0].get_weights(), dtype)
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(history.history[key], ref[1].history[key],
                                       **TOLERANCE[dtype])
        np.testing.assert_allclose(predicted, ref[2], **TOLERANCE[dtype])
        assert scores["loss"] == pytest.approx(ref[3]["loss"], rel=TOLERANCE[dtype]["rtol"])
        assert scores["accuracy"] == pytest.approx(ref[3]["accuracy"], abs=1e-12)
    resident, streamed = runs["resident"], runs["streamed"]
    for a, b in zip(streamed[0].get_weights(), resident[0].get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12 if dtype == "float64" else 1e-6, atol=0)

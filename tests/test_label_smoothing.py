"""label_smoothing of the cross-entropies (Keras's semantics): values against the formula with
smoothed targets, gradients against finite differences (plain and fused on logits, with and
without sample weights, every backend), the fast trainers equal to the generic step, saved
and loaded with the model."""

from __future__ import annotations

import numpy as np
import pytest
from test_gradients import central_diff, np_sigmoid, np_softmax  # tests/ is on sys.path

import xpnn
from xpnn import fastpath
from xpnn.backend import get_backend, to_numpy
from xpnn.losses import BinaryCrossEntropy, CategoricalCrossEntropy

EPS_LS = 0.2


def _reference(kind, out, t, w, logits):
    """The loss in NumPy with Keras's smoothed targets; ``out`` are logits or probabilities."""
    k = out.shape[1]
    if kind == "cce":
        onehot = np.eye(k)[t] if t.ndim == 1 else t
        ts = onehot * (1 - EPS_LS) + EPS_LS / k
        p = np_softmax(out) if logits else out
        rows = -np.sum(ts * np.log(p), axis=1)
    else:
        ts = t * (1 - EPS_LS) + 0.5 * EPS_LS
        p = np_sigmoid(out) if logits else out
        rows = -np.mean(ts * np.log(p) + (1 - ts) * np.log(1 - p), axis=1)
    return float(np.sum(rows * w) / np.sum(w)) if w is not None else float(np.mean(rows))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("logits", [True, False])
@pytest.mark.parametrize("kind", ["cce", "cce-onehot", "bce"])
def test_value_and_gradient(backend, kind, logits, weighted):
    be = get_backend(backend)
    rng = np.random.default_rng(0)
    n, k = 6, 4 if kind != "bce" else 2
    z = rng.normal(size=(n, k))
    if kind == "bce":
        y = rng.uniform(0, 1, size=(n, k))
        loss = BinaryCrossEntropy(label_smoothing=EPS_LS).bind(be.xp)
    else:
        y = rng.integers(0, k, size=n)
        if kind == "cce-onehot":
            y = np.eye(k)[y]
        loss = CategoricalCrossEntropy(label_smoothing=EPS_LS).bind(be.xp)
    t = loss.prepare_targets(y, k)
    td = be.asarray(t, "int64" if t.dtype.kind == "i" else "float64")
    w = rng.uniform(0.5, 2, size=n) if weighted else None
    wd = None if w is None else be.asarray(w, "float64")
    ref_kind = "bce" if kind == "bce" else "cce"
    if logits:
        out = z
        value = float(loss.forward_logits(be.asarray(out, "float64"), td, wd))
        grad = to_numpy(loss.backward_logits())
    else:
        out = np_softmax(z) if ref_kind == "cce" else np_sigmoid(z)
        value = float(loss.forward(be.asarray(out, "float64"), td, wd))
        grad = to_numpy(loss.backward())
    np.testing.assert_allclose(value, _reference(ref_kind, out, t, w, logits), rtol=1e-12)
    numeric = central_diff(lambda o: _reference(ref_kind, o, t, w, logits), out.copy())
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_keras_values():
    """Keras: CategoricalCrossentropy(label_smoothing=0.1) on p = [.9, .05, .05], label 0 is
    -(0.9333 log .9 + 0.0333 log .05 · 2) = 0.29798."""
    loss = CategoricalCrossEntropy(label_smoothing=0.1).bind(get_backend("numpy").xp)
    p = np.array([[0.9, 0.05, 0.05]])
    want = -(0.9 + 0.1 / 3) * np.log(0.9) - 2 * (0.1 / 3) * np.log(0.05)
    np.testing.assert_allclose(float(loss.forward(p, np.array([0]))), want, rtol=1e-12)
    bce = BinaryCrossEntropy(label_smoothing=0.1).bind(get_backend("numpy").xp)
    want = -(0.95 * np.log(0.8) + 0.05 * np.log(0.2))
    np.testing.assert_allclose(float(bce.forward(np.array([[0.8]]), np.array([[1.0]]))), want,
                               rtol=1e-12)


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_fast_path_equals_generic_step(head):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5))
    y = rng.integers(0, 3, size=64) if head == "softmax" else (X[:, 0] > 0).astype(float)
    weights = []
    for fast in (True, False):
        model = xpnn.mlp([5, 8, 3 if head == "softmax" else 1], dtype="float64", seed=0)
        if head == "sigmoid":
            model.layers[-1] = xpnn.Sigmoid()
        loss = (CategoricalCrossEntropy if head == "softmax" else BinaryCrossEntropy)(0.1)
        model.compile(loss, xpnn.Adam(0.01))
        model.fastpath = fast
        assert (fastpath.select(model) is not None) == fast
        model.fit(X, y, epochs=2, batch_size=16, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
@pytest.mark.parametrize("kernels", ["1", "0"], ids=["numba", "numpy"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numpy_trainer_smooths_integer_labels_itself(kernels, dtype, weighted, monkeypatch):
    """The NumPy fast trainer's fused softmax-CE applies label smoothing to integer labels
    (the loss object is not called during the steps; with sample weights only with Numba's
    kernel) and trains to the generic step's weights and losses (float64: to rounding;
    float32: to float32 rounding), validation included."""
    if kernels == "1":
        pytest.importorskip("numba")
    monkeypatch.setenv("XPNN_NUMBA", kernels)
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(96, 6)), rng.integers(0, 4, size=96)
    w = rng.uniform(0.2, 3.0, size=96) if weighted else None
    val = (X[:30] + 0.1, y[:30]) + ((w[:30],) if weighted else ())
    runs = []
    for fast in (True, False):
        model = xpnn.mlp([6, 16, 16, 4], dtype=dtype, seed=0)
        model.compile(CategoricalCrossEntropy(label_smoothing=0.1), xpnn.AdamW(0.01))
        model.fastpath = fast
        calls = []

        def counted(*a, _calls=calls, _original=model.loss.forward_logits, **k):
            _calls.append(1)
            return _original(*a, **k)

        model.loss.forward_logits = counted
        history = model.fit(X, y, epochs=3, batch_size=32, verbose=0, sample_weight=w,
                            validation_data=val)
        assert bool(calls) == (not fast or (weighted and kernels == "0"))
        runs.append((model.get_weights(), history.history["loss"],
                     history.history["val_loss"]))
    rtol, atol = (1e-9, 1e-11) if dtype == "float64" else (2e-4, 1e-5)
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=rtol)
    np.testing.assert_allclose(runs[0][2], runs[1][2], rtol=rtol)


def test_smoothing_changes_training_and_is_saved(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, size=40)
    runs = {}
    for ls in (0.0, 0.3):
        model = xpnn.mlp([3, 4, 2], dtype="float64", seed=0)
        model.compile(CategoricalCrossEntropy(label_smoothing=ls), "adam")
        model.fit(X, y, epochs=1, batch_size=8, verbose=0)
        runs[ls] = model
    assert not np.allclose(runs[0.0].get_weights()[0], runs[0.3].get_weights()[0])
    model = runs[0.3]
    assert model.get_config()["compile"]["loss_config"] == {"label_smoothing": 0.3}
    assert "loss_config" not in runs[0.0].get_config()["compile"]
    model.save(tmp_path / "m.npz")
    loaded = xpnn.load(tmp_path / "m.npz")
    assert loaded.loss.label_smoothing == 0.3
    assert xpnn.Sequential.from_config(model.get_config()).loss.label_smoothing == 0.3
    np.testing.assert_allclose(loaded.evaluate(X, y)["loss"], model.evaluate(X, y)["loss"])


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.1", True])
def test_bad_label_smoothing_names_the_loss(value):
    with pytest.raises(ValueError, match="CategoricalCrossEntropy: label_smoothing"):
        CategoricalCrossEntropy(label_smoothing=value)
    with pytest.raises(ValueError, match="BinaryCrossEntropy: label_smoothing"):
        BinaryCrossEntropy(label_smoothing=value)

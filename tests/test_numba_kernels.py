"""The Numba kernels of the NumPy fast path (xpnn/fastpath/numba_kernels.py).

Each kernel is checked against the NumPy passes it replaces (bit for bit where both evaluate the
same operations in the same order), the fused softmax-cross-entropy by finite differences in
float64, and the whole trainer with and without Numba against each other. Numba is part of the
``test`` extra; without it this module is skipped (and the trainer uses the NumPy passes, which
tests/test_fastpath.py checks against the generic path).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("numba")

from xpnn import SGD, Adam, AdamW, Dense, ReLU, Sequential, Softmax  # noqa: E402
from xpnn.fastpath import numba_kernels as nk  # noqa: E402
from xpnn.fastpath.numpy_mlp import NumpyMLPTrainer  # noqa: E402

DTYPES = ["float32", "float64"]


def _buffers(dtype, n=1003, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=n).astype(dtype)
    g = (rng.normal(size=n) * 1e-2).astype(dtype)
    m = (rng.normal(size=n) * 1e-3).astype(dtype)
    v = (rng.random(n) * 1e-5).astype(dtype)
    v[:10] = 0                                   # fresh moments: the ε branch
    return p, g, m, v


def _numpy_trainer(p, g, m, v):
    """Just the flat buffers the NumPy passes of NumpyMLPTrainer read."""
    return SimpleNamespace(flat_p=p, flat_g=g, flat_m=m, flat_v=v, dtype=p.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (1e-2, False), (0.1, True)])
def test_adam_kernel_equals_numpy_passes(dtype, wd, decoupled):
    lr, b1, b2, eps, t = 1e-3, 0.9, 0.999, 1e-8, 7
    step_size, bc2 = lr / (1 - b1 ** t), (1 - b2 ** t) ** 0.5
    ref, got = _buffers(dtype), _buffers(dtype)
    for _ in range(3):
        NumpyMLPTrainer._adam_block(_numpy_trainer(*ref), 0, ref[0].size, lr, b1, b2, eps, wd,
                                    decoupled, step_size, bc2)
        for lo, hi in ((0, 496), (496, ref[0].size)):     # in two parts, as two threads do
            NumpyMLPTrainer._adam_numba(_numpy_trainer(*got), lo, hi, lr, b1, b2, eps, wd,
                                        decoupled, step_size, bc2)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mu,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0),
                                            (0.9, True, 1e-3)])
def test_sgd_kernel_equals_numpy_passes(dtype, mu, nesterov, wd):
    lr = 0.05
    ref, got = _buffers(dtype), _buffers(dtype)
    c = np.dtype(dtype).type
    for started in (False, True, True):
        NumpyMLPTrainer._sgd_block(_numpy_trainer(*ref), 0, ref[0].size, lr, mu, nesterov, wd,
                                   started)
        if started:
            for lo, hi in ((0, 496), (496, ref[0].size)):
                NumpyMLPTrainer._sgd_numba(_numpy_trainer(*got), lo, hi, lr, mu, nesterov, wd,
                                           started)
        else:
            nk.sgd_update(got[0], got[1], got[2], c(lr), c(mu), c(wd), started, nesterov)
    for a, b in zip(got[:3], ref[:3], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mu,wd", [(0.0, 0.0), (0.5, 0.0), (0.9, 1e-3)])
def test_rmsprop_kernel_equals_numpy_passes(dtype, mu, wd):
    lr, rho, eps = 1e-2, 0.99, 1e-8
    p, g, b, s = _buffers(dtype)                 # s (running squares) >= 0
    ref = [p, g, s, b]
    got = [a.copy() for a in ref]
    for _ in range(3):
        NumpyMLPTrainer._rmsprop_block(_numpy_trainer(*ref), 0, ref[0].size, lr, rho, eps, mu,
                                       wd)
        for lo, hi in ((0, 496), (496, ref[0].size)):
            NumpyMLPTrainer._rmsprop_numba(_numpy_trainer(*got), lo, hi, lr, rho, eps, mu, wd)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_relu_equals_add_then_maximum(dtype):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(37, 19)).astype(dtype)
    z[0, :3] = [np.nan, -np.inf, np.inf]
    b = rng.normal(size=19).astype(dtype)
    expected = np.maximum(z + b, 0)
    nk.bias_relu(z, b)
    np.testing.assert_array_equal(z, expected)          # NaN stays NaN, as np.maximum


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_bias_grad_equals_mask_and_column_sum(dtype):
    rng = np.random.default_rng(2)
    y = np.maximum(rng.normal(size=(64, 33)), 0).astype(dtype)
    delta = rng.normal(size=(64, 33)).astype(dtype)
    delta[0, 0], y[0, 0] = np.inf, 0.0                 # inf·0 = NaN, as δ·mask gives
    db = np.empty(33, dtype)
    with np.errstate(invalid="ignore"):
        expected = delta * (y > 0)
        nk.relu_backward_bias_grad(delta, y, db)
        expected_db = np.sum(expected, axis=0)
    np.testing.assert_array_equal(delta, expected)
    np.testing.assert_allclose(db, expected_db, rtol=1e-6 if dtype == "float32" else 1e-14)
    assert np.isnan(db[0])


def _softmax_ce_numpy(z, labels):
    shifted = z - z.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(labels)), labels].mean(), np.exp(logp)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_ce_kernel_matches_numpy(dtype):
    rng = np.random.default_rng(3)
    z = (rng.normal(size=(50, 10)) * 5).astype(dtype)
    z[0] += 1000                                       # large logits: shifted by the row max
    labels = rng.integers(0, 10, 50)
    p, dz = np.empty_like(z), np.empty_like(z)
    loss = nk.softmax_ce_labels(z.copy(), labels, p, dz)
    ref_loss, ref_p = _softmax_ce_numpy(z.astype(np.float64), labels)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(loss, ref_loss, rtol=tol)
    np.testing.assert_allclose(p, ref_p, rtol=tol, atol=tol * 1e-2)
    onehot = np.eye(10)[labels]
    np.testing.assert_allclose(dz, (ref_p - onehot) / 50, rtol=tol, atol=tol * 1e-2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_ce_kernel_with_bias_equals_separate_passes(dtype):
    """With the output bias ``b`` and its gradient ``db``: bitwise the bias added first
    (``z + b``), the kernel without them, then ``db = np.sum(dz, axis=0)``."""
    rng = np.random.default_rng(5)
    xw = (rng.normal(size=(37, 10)) * 3).astype(dtype)
    b = rng.normal(size=10).astype(dtype)
    labels = rng.integers(0, 10, 37)
    p, dz = np.empty_like(xw), np.empty_like(xw)
    z = xw + b
    loss = nk.softmax_ce_labels(z, labels, p, dz)
    db = np.sum(dz, axis=0)
    p2, dz2, db2, z2 = np.empty_like(xw), np.empty_like(xw), np.full(10, np.nan, dtype), xw.copy()
    loss2 = nk.softmax_ce_labels(z2, labels, p2, dz2, b, db2)
    assert loss2 == loss
    for got, want in ((z2, z), (p2, p), (dz2, dz), (db2, db)):
        np.testing.assert_array_equal(got, want)


def test_softmax_ce_kernel_gradient_by_finite_differences():
    """dL/dz from the kernel against central differences of its own loss (float64)."""
    rng = np.random.default_rng(4)
    z = rng.normal(size=(6, 5))
    labels = rng.integers(0, 5, 6)
    p, dz = np.empty_like(z), np.empty_like(z)
    nk.softmax_ce_labels(z.copy(), labels, p, dz)
    h, numeric = 1e-6, np.empty_like(z)
    for idx in np.ndindex(*z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        lp = nk.softmax_ce_labels(zp, labels, np.empty_like(z), np.empty_like(z))
        lm = nk.softmax_ce_labels(zm, labels, np.empty_like(z), np.empty_like(z))
        numeric[idx] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(dz, numeric, rtol=1e-6, atol=1e-9)


def _smoothed(dtype, ls, k):
    """``(on, off)`` as the NumPy trainer passes them (the loss's smoothed targets)."""
    c = np.dtype(dtype).type
    off = c(ls / k)
    return c(1.0 - ls) + off, off


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_ce_kernel_with_label_smoothing_matches_the_loss(dtype):
    """Smoothed targets: loss, probabilities and dL/dz equal the generic fused loss of
    CategoricalCrossEntropy(label_smoothing=ε) to rounding, with and without the bias."""
    from xpnn.backend import get_backend
    from xpnn.losses import CategoricalCrossEntropy
    rng = np.random.default_rng(6)
    xw = (rng.normal(size=(45, 6)) * 4).astype(dtype)
    b = rng.normal(size=6).astype(dtype)
    labels = rng.integers(0, 6, 45)
    loss_fn = CategoricalCrossEntropy(label_smoothing=0.15).bind(get_backend("numpy").xp)
    ref = loss_fn.forward_logits(xw + b, labels)
    ref_dz = loss_fn.backward_logits()
    on, off = _smoothed(dtype, 0.15, 6)
    tol = 1e-6 if dtype == "float32" else 1e-14
    for bias in (False, True):
        p, dz, db = np.empty_like(xw), np.empty_like(xw), np.empty(6, dtype)
        z = xw.copy() if bias else xw + b
        loss = nk.softmax_ce_labels(z, labels, p, dz, b if bias else None,
                                    db if bias else None, on, off)
        np.testing.assert_allclose(loss, ref, rtol=tol)
        np.testing.assert_allclose(p, loss_fn.p, rtol=tol, atol=tol * 1e-2)
        np.testing.assert_allclose(dz, ref_dz, rtol=tol, atol=tol * 1e-2)
        if bias:
            np.testing.assert_allclose(db, np.sum(ref_dz, axis=0), rtol=tol, atol=tol * 1e-2)


@pytest.mark.parametrize("ls", [0.0, 0.2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_ce_kernel_with_row_weights_matches_the_loss(dtype, ls):
    """Per-row weights (``scale = w / Σ w``): the weighted loss object's value and dL/dz,
    with and without smoothing and the bias."""
    from xpnn.backend import get_backend
    from xpnn.losses import CategoricalCrossEntropy
    rng = np.random.default_rng(9)
    xw = (rng.normal(size=(33, 5)) * 3).astype(dtype)
    b = rng.normal(size=5).astype(dtype)
    labels = rng.integers(0, 5, 33)
    w = rng.uniform(0.2, 3.0, 33).astype(dtype)
    loss_fn = CategoricalCrossEntropy(label_smoothing=ls).bind(get_backend("numpy").xp)
    ref = loss_fn.forward_logits(xw + b, labels, w)
    ref_dz = loss_fn.backward_logits()
    on, off = _smoothed(dtype, ls, 5) if ls else (1.0, 0.0)
    tol = 1e-6 if dtype == "float32" else 1e-14
    for bias in (False, True):
        p, dz, db = np.empty_like(xw), np.empty_like(xw), np.empty(5, dtype)
        z = xw.copy() if bias else xw + b
        loss = nk.softmax_ce_labels(z, labels, p, dz, b if bias else None,
                                    db if bias else None, on, off, w / np.sum(w))
        np.testing.assert_allclose(loss, ref, rtol=tol)
        np.testing.assert_allclose(dz, ref_dz, rtol=tol, atol=tol * 1e-2)
        if bias:
            np.testing.assert_allclose(db, np.sum(ref_dz, axis=0), rtol=tol, atol=tol * 1e-2)


def test_softmax_ce_kernel_without_smoothing_unchanged_by_explicit_targets():
    """``on = 1, off = 0`` (no smoothing) computes exactly the defaults' numbers."""
    rng = np.random.default_rng(7)
    z = (rng.normal(size=(20, 4)) * 3).astype("float32")
    labels = rng.integers(0, 4, 20)
    out = []
    for extra in ((), (np.float32(1.0), np.float32(0.0))):
        p, dz = np.empty_like(z), np.empty_like(z)
        out.append((nk.softmax_ce_labels(z.copy(), labels, p, dz, None, None, *extra), p, dz))
    assert out[0][0] == out[1][0]
    np.testing.assert_array_equal(out[0][1], out[1][1])
    np.testing.assert_array_equal(out[0][2], out[1][2])


@pytest.mark.parametrize("weighted", [False, True], ids=["smoothed", "smoothed-weighted"])
def test_softmax_ce_kernel_smoothed_gradient_by_finite_differences(weighted):
    """With label smoothing (and per-row weights): dL/dz against central differences of the
    kernel's loss."""
    rng = np.random.default_rng(8)
    z = rng.normal(size=(6, 5))
    labels = rng.integers(0, 5, 6)
    on, off = _smoothed("float64", 0.3, 5)
    w = rng.uniform(0.1, 2.0, 6)
    scale = w / np.sum(w) if weighted else None

    def loss(zz, dz=None):
        return nk.softmax_ce_labels(zz, labels, np.empty_like(z),
                                    np.empty_like(z) if dz is None else dz, None, None, on, off,
                                    scale)

    dz = np.empty_like(z)
    loss(z.copy(), dz)
    h, numeric = 1e-6, np.empty_like(z)
    for idx in np.ndindex(*z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        numeric[idx] = (loss(zp) - loss(zm)) / (2 * h)
    np.testing.assert_allclose(dz, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make_opt", [lambda: Adam(1e-2), lambda: AdamW(1e-2, weight_decay=0.1),
                                      lambda: SGD(0.05, momentum=0.9, nesterov=True)],
                         ids=["adam", "adamw", "sgd_nesterov"])
def test_trainer_with_and_without_numba_agree(dtype, make_opt, monkeypatch):
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(300, 12)), rng.integers(0, 4, 300)
    results = {}
    for setting in ("1", "0"):
        monkeypatch.setenv("XPNN_NUMBA", setting)
        model = Sequential(Dense(12, 32), ReLU(), Dense(32, 16), ReLU(), Dense(16, 4), Softmax(),
                           dtype=dtype, seed=0)
        model.compile(loss="crossentropy", optimizer=make_opt(), metrics=["accuracy"])
        history = model.fit(X, y, epochs=3, batch_size=64, verbose=0)
        results[model._fastpath_trainer.kernels] = (model.get_weights(), history.history)
    assert set(results) == {"numba", "numpy"}
    rtol, atol = (1e-5, 1e-6) if dtype == "float32" else (1e-12, 1e-13)
    for a, b in zip(results["numba"][0], results["numpy"][0], strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    for key, values in results["numba"][1].items():
        np.testing.assert_allclose(values, results["numpy"][1][key], rtol=rtol)


def test_switch_off_with_environment(monkeypatch):
    monkeypatch.setenv("XPNN_NUMBA", "0")
    assert not nk.available()
    monkeypatch.setenv("XPNN_NUMBA", "1")
    assert nk.available()


# ---------------------------------------------------------------- the generic step
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make_opt", [lambda: Adam(1e-2, weight_decay=0.1),
                                      lambda: AdamW(1e-2, weight_decay=0.1)],
                         ids=["adam", "adamw"])
def test_generic_adam_step_runs_the_kernel_bit_for_bit(dtype, make_opt, monkeypatch):
    """Per-parameter arrays (the generic step), with per-parameter lr/wd factors: once the
    kernels are loaded the optimizer runs the fast trainers' kernel on each parameter, with the
    same numbers as its array passes (``XPNN_NUMBA=0``); both report whether the new weights
    are finite (a NaN gradient included)."""
    from xpnn.layers.base import Parameter

    runs = {}
    for setting in ("1", "0"):
        monkeypatch.setenv("XPNN_NUMBA", setting)
        rng = np.random.default_rng(3)
        params = [Parameter("W", rng.normal(size=(7, 5)).astype(dtype)),
                  Parameter("b", rng.normal(size=5).astype(dtype))]
        params[1].lr_factor, params[1].wd_factor = 0.1, 0.0
        opt, reports = make_opt(), []
        for step in range(21):
            for p in params:
                p.grad = (rng.normal(size=p.data.shape) * 10.0 ** rng.uniform(-6, 2)
                          ).astype(dtype)
            if step == 20:
                params[0].grad[0, 0] = np.nan
            opt.step(params)
            reports.append(opt.params_finite)
        runs[setting] = ([p.data for p in params]
                         + [s[k] for s in opt.state for k in ("exp_avg", "exp_avg_sq")], reports)
    for a, b in zip(runs["1"][0], runs["0"][0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert runs["1"][1] == runs["0"][1] == [True] * 20 + [False]


@pytest.mark.parametrize("setting", ["1", "0"], ids=["kernel", "passes"])
def test_generic_fit_catches_a_diverging_step_from_the_optimizer_report(setting, monkeypatch):
    """The generic step's finiteness check takes the optimizer's report (no second look at the
    weights), from the kernel or the array passes: a rate beyond float32 still stops the fit at
    the first bad step, with finite weights left."""
    monkeypatch.setenv("XPNN_NUMBA", setting)
    from xpnn import LearningRateScheduler, ParametricActivation, TrainingDivergedError, training

    looked = []
    monkeypatch.setattr(training, "all_finite", lambda xp, arrays: looked.append(1) or True)

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(64, 3)), rng.normal(size=(64, 1))
    model = Sequential(Dense(3, 8), ParametricActivation(8, "mish"), Dense(8, 1), seed=0)
    model.compile("mse", Adam(1e-2))
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert model.optimizer.params_finite is None          # read by the check after each step
    huge = LearningRateScheduler(lambda epoch: 1e39)     # inf in float32
    with pytest.raises(TrainingDivergedError, match="weight"):
        model.fit(X, y, epochs=2, batch_size=16, verbose=0, callbacks=[huge])
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert not looked


@pytest.mark.parametrize("dtype", DTYPES)
def test_parametric_mish_compiled_equals_its_array_passes(dtype, monkeypatch):
    """ParametricActivation("mish") with the kernels loaded (NumPy's ``min`` and ``exp``, the
    rest in mish_blend_forward / mish_blend_backward) gives bit for bit the numbers of its array
    passes (``XPNN_NUMBA=0``): training and inference outputs, ``dL/dx`` and ``dL/dα``, for
    inputs beyond the cap, NaN and inf included."""
    from xpnn import ParametricActivation
    from xpnn.backend import get_backend

    rng = np.random.default_rng(5)
    x = (rng.normal(size=(37, 9)) * 8.0).astype(dtype)
    x[0, :4] = [np.nan, np.inf, -np.inf, 25.0]
    delta = rng.normal(size=x.shape).astype(dtype)
    alpha = rng.normal(size=9).astype(dtype)
    runs, calls = {}, []
    def counted(kernel):
        return lambda *a: calls.append(1) or kernel(*a)

    for name in ("mish_blend_forward", "mish_blend_backward"):
        monkeypatch.setattr(nk, name, counted(getattr(nk, name)))
    for setting in ("0", "1"):
        monkeypatch.setenv("XPNN_NUMBA", setting)
        layer = ParametricActivation(9, "mish")
        layer.build(get_backend("numpy"), dtype, np.random.default_rng(0), 9)
        layer.alpha.data[...] = alpha
        with np.errstate(all="ignore"):
            inference = layer.forward(x.copy(), training=False)
            assert layer.cache is None                 # inference keeps nothing
            y = layer.forward(x.copy(), training=True)
            kept = layer.cache
            layer.forward(x[:5].copy(), training=False)
            assert layer.cache is kept                 # nor replaces the training batch's
            dx = layer.backward(delta.copy())
        runs[setting] = (inference, y, dx, layer.alpha.grad)
    assert len(calls) == 4                        # three forwards and a backward, compiled
    for a, b in zip(runs["1"], runs["0"], strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_tabular_regressor_same_predictions_with_and_without_the_kernels(monkeypatch):
    """The tabular regressor's network (embeddings, Mish, Dropout, AdamW: the generic step)
    predicts the same bits with the compiled passes as with its array passes, and its fit
    loads the kernels in a process that had none (a subprocess)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from xpnn.sklearn import TabularRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = X[:, 0] - 2 * X[:, 1] ** 2 + rng.normal(0, 0.1, 300)
    opts = {"n_ensemble": 2, "max_iter": 6, "random_state": 0}
    predictions = {}
    for setting in ("0", "1"):
        monkeypatch.setenv("XPNN_NUMBA", setting)
        predictions[setting] = TabularRegressor(**opts).fit(X, y).predict(X)
    np.testing.assert_array_equal(predictions["0"], predictions["1"])
    code = ("import sys, numpy as np; from xpnn.sklearn import TabularRegressor; "
            "assert 'xpnn.fastpath.numba_kernels' not in sys.modules; "
            "TabularRegressor(n_ensemble=1, max_iter=2).fit(np.eye(20), np.arange(20.0)); "
            "print('xpnn.fastpath.numba_kernels' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env, cwd=root)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stdout + out.stderr

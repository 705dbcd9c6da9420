"""The backend-specific fast paths (xpnn.fastpath) compute the same numbers as the generic path.

On the CPU only NumPy has a fast path; ``XPNN_TEST_BACKENDS=cupy`` runs the same tests against the
CuPy kernels on a GPU. Backends without a fast path check that they fall back to the generic one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import xpnn
from xpnn import (
    SGD,
    Adam,
    AdamW,
    Dense,
    Dropout,
    Identity,
    LeakyReLU,
    ReLU,
    Rescaling,
    RMSprop,
    Scale,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    TrainingDivergedError,
    fastpath,
)

ROOT = Path(__file__).resolve().parents[1]
FAST_BACKENDS = ("numpy", "cupy")


def _data(n=300, d=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, n)
    return X, y


ARCHS = {
    "relu": lambda: [Dense(12, 32), ReLU(), Dense(32, 16), ReLU(), Dense(16, 4), Softmax()],
    "tanh": lambda: [Dense(12, 24), Tanh(), Dense(24, 4), Softmax()],
    "relu_nobias": lambda: [Dense(12, 32, bias=False), ReLU(), Dense(32, 4), Softmax()],
    "mixed": lambda: [Dense(12, 32), LeakyReLU(0.1), Dense(32, 16, bias=False), Sigmoid(),
                      Identity(), Dense(16, 4), Softmax()],
    "bce": lambda: [Dense(12, 16), ReLU(), Dense(16, 1), Sigmoid()],
    "mse": lambda: [Dense(12, 16), Tanh(), Dense(16, 3)],
    "decay": lambda: [Dense(12, 16, weight_decay=0.01), ReLU(), Dense(16, 4, weight_decay=0.1),
                      Softmax()],
    # dropout on the input, after a fused activation, after a generic one and with no activation
    "dropout": lambda: [Dropout(0.2), Dense(12, 32), ReLU(), Dropout(0.5), Dense(32, 16),
                        LeakyReLU(0.1), Dropout(0.3), Dense(16, 8), Dropout(0.1), Dense(8, 4),
                        Softmax()],
    # the input rescaled (and dropped) before the first Dense
    "rescaled": lambda: [Rescaling(0.5, offset=0.25), Dropout(0.1), Dense(12, 16), ReLU(),
                         Dense(16, 4), Softmax()],
    # a learned scale of every input feature in front of the first Dense (RealMLP's), which
    # the trainers fold into that Dense's step
    "scaled": lambda: [Scale(12), Dense(12, 32), ReLU(), Dropout(0.2), Dense(32, 4), Softmax()],
    "scaled_mse": lambda: [Dropout(0.1), Scale(12), Dense(12, 16, weight_decay=0.01), Tanh(),
                           Dense(16, 3)],
}
#: Per-parameter factors set after building (torch.optim parameter groups): the trainers
#: update each run of parameters with equal factors with its own lr and weight decay.
FACTORS = {
    "scaled": [(6.0, 0.0), (0.5, 2.0), (0.1, 0.0), (0.5, 2.0), (0.1, 0.0)],
    "relu": [(1.0, 1.0), (1.0, 1.0), (0.25, 0.0), (0.25, 0.0), (1.0, 1.0), (3.0, 1.0)],
}
OPTS = {
    "adam": lambda: Adam(1e-2),
    "adam_l2": lambda: Adam(1e-2, weight_decay=1e-2),
    "adamw": lambda: AdamW(1e-2, weight_decay=0.1),
    "sgd": lambda: SGD(0.05),
    "sgd_nesterov": lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "rmsprop": lambda: RMSprop(1e-3),
    "rmsprop_momentum": lambda: RMSprop(1e-3, momentum=0.5, weight_decay=1e-3),
}


def _targets(arch, y, X):
    if arch == "bce":
        return (y % 2).astype(float), "binary_crossentropy"
    if arch.startswith(("mse", "scaled_mse")):
        return X[:, :3] * 0.5, "mse"
    return y, "crossentropy"


def _model(backend, dtype, arch, opt, fast, seed=1):
    factors = arch.endswith("+factors")
    arch = arch.removesuffix("+factors")
    model = Sequential(*ARCHS[arch](), backend=backend, dtype=dtype, seed=seed)
    if factors:
        for p, (lr, wd) in zip(model.params, FACTORS[arch], strict=True):
            p.lr_factor, p.wd_factor = lr, wd
    model.fastpath = fast
    X, y = _data()
    target, loss = _targets(arch, y, X)
    metrics = [] if loss == "mse" else ["accuracy"]
    model.compile(loss=loss, optimizer=OPTS[opt](), metrics=metrics)
    return model, X, target


def _tolerance(backend, dtype):
    if backend == "numpy":         # same operations in the same order: agree to rounding
        return (1e-12, 1e-13) if dtype == "float64" else (1e-5, 1e-6)
    return (1e-9, 1e-10) if dtype == "float64" else (1e-4, 2e-5)


def _assert_same_weights(a, b, backend, dtype):
    rtol, atol = _tolerance(backend, dtype)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=rtol, atol=atol)


CASES = [
    ("relu", "adam"), ("relu", "adamw"), ("relu", "sgd"), ("relu", "sgd_nesterov"),
    ("tanh", "adam_l2"), ("relu_nobias", "adam"), ("mixed", "adam"), ("mixed", "sgd_nesterov"),
    ("bce", "adam"),
    ("mse", "adamw"), ("decay", "adam"), ("decay", "sgd_nesterov"), ("dropout", "adam"),
    ("dropout", "sgd_nesterov"), ("rescaled", "adam"), ("relu", "rmsprop"),
    ("relu", "rmsprop_momentum"), ("decay", "rmsprop"), ("dropout", "rmsprop_momentum"),
    ("scaled", "adamw"), ("scaled", "adam_l2"), ("scaled_mse", "sgd_nesterov"),
    ("scaled+factors", "adamw"), ("scaled+factors", "sgd_nesterov"),
    ("scaled+factors", "rmsprop_momentum"), ("relu+factors", "adam_l2"),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("arch,opt", CASES)
def test_fast_path_matches_generic(backend, dtype, arch, opt):
    _check_fast_matches_generic(backend, dtype, arch, opt)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("arch,opt", CASES)
def test_numpy_passes_match_generic(dtype, arch, opt, monkeypatch):
    """Without Numba (XPNN_NUMBA=0) the NumPy trainer's own passes give the same numbers."""
    monkeypatch.setenv("XPNN_NUMBA", "0")
    fast = _check_fast_matches_generic("numpy", dtype, arch, opt)
    assert fast._fastpath_trainer.kernels == "numpy"


def _check_fast_matches_generic(backend, dtype, arch, opt):
    generic, X, t = _model(backend, dtype, arch, opt, fast=False)
    fast, _, _ = _model(backend, dtype, arch, opt, fast=True)
    hg = generic.fit(X, t, epochs=3, batch_size=64, shuffle=True, verbose=0)
    hf = fast.fit(X, t, epochs=3, batch_size=64, shuffle=True, verbose=0)
    assert (getattr(fast, "_fastpath_trainer", None) is not None) == (backend in FAST_BACKENDS)
    assert getattr(generic, "_fastpath_trainer", None) is None
    _assert_same_weights(generic, fast, backend, dtype)
    rtol = 1e-5 if dtype == "float32" else 1e-10
    for key in hg.history:
        np.testing.assert_allclose(hf.history[key], hg.history[key], rtol=rtol)
    assert fast.optimizer.iterations == generic.optimizer.iterations
    return fast


class _MyReLU(ReLU):
    pass


class _MyAdam(Adam):
    """A subclass may change the update rule: it trains on the generic path."""


def test_selection_rules(backend):
    X, y = _data()

    def compiled(*layers, optimizer="adam", loss="crossentropy"):
        m = Sequential(*layers, backend=backend, seed=0)
        m.compile(loss=loss, optimizer=optimizer)
        return m

    plain = compiled(Dense(12, 8), ReLU(), Dense(8, 4), Softmax())
    if backend in FAST_BACKENDS:
        assert fastpath.explain(plain) is None
        assert fastpath.select(plain) is not None
    else:
        assert "no fast path" in fastpath.explain(plain)
        assert fastpath.select(plain) is None
    with_dropout = compiled(Dropout(0.2), Dense(12, 8), ReLU(), Dropout(0.5), Dense(8, 4),
                            Softmax())
    assert (fastpath.select(with_dropout) is not None) == (backend in FAST_BACKENDS)
    rescaled = compiled(Rescaling(1 / 255), Dense(12, 8), ReLU(), Dense(8, 4), Softmax())
    assert (fastpath.select(rescaled) is not None) == (backend in FAST_BACKENDS)
    for model in (
        compiled(Dense(12, 8), Softmax(), Dense(8, 4), Softmax()),     # softmax mid-network
        compiled(Dense(12, 8), ReLU(), Dense(8, 4), Softmax(), optimizer=_MyAdam()),
        compiled(Dense(12, 8), _MyReLU(), Dense(8, 4), Softmax()),  # subclass: may differ
        compiled(Dense(12, 8), Rescaling(2.0), Dense(8, 4), Softmax()),  # only on the input
    ):
        assert fastpath.select(model) is None
        assert fastpath.explain(model)
        model.fit(X, y, epochs=1, verbose=0)
        assert getattr(model, "_fastpath_trainer", None) is None
    off = compiled(Dense(12, 8), ReLU(), Dense(8, 4), Softmax())
    off.fastpath = False
    assert fastpath.select(off) is None


def test_env_switch_disables_fast_path(monkeypatch):
    m = Sequential(Dense(12, 8), ReLU(), Dense(8, 4), Softmax(), seed=0)
    m.compile(loss="crossentropy", optimizer="adam")
    monkeypatch.setenv("XPNN_FASTPATH", "0")
    assert fastpath.select(m) is None
    assert "disabled" in fastpath.explain(m)
    monkeypatch.setenv("XPNN_FASTPATH", "1")
    assert fastpath.select(m) is not None


@pytest.mark.parametrize("opt", ["adam", "sgd_nesterov"])
def test_switching_between_fast_and_generic(backend, opt):
    """fit (fast) -> train_on_batch (generic) -> fit (fast) equals the same all-generic run."""
    dtype = "float64"
    runs = []
    for fast in (False, True):
        model, X, t = _model(backend, dtype, "relu", opt, fast=fast)
        model.fit(X, t, epochs=1, batch_size=50, verbose=0)
        for i in range(3):
            model.train_on_batch(X[i * 20:(i + 1) * 20], t[i * 20:(i + 1) * 20])
        model.fit(X, t, epochs=2, batch_size=50, verbose=0)
        model.optimizer.reset()                      # state dropped: fast path re-initialises
        model.fit(X, t, epochs=1, batch_size=50, verbose=0)
        runs.append(model)
    _assert_same_weights(*runs, backend, dtype)
    if backend in FAST_BACKENDS:
        fast = runs[1]
        trainer = fast._fastpath_trainer
        for p, view in zip(fast.params, trainer.p_views, strict=True):
            assert p.data is view
        for s, m in zip(fast.optimizer.state, trainer.m_views, strict=True):
            assert (s["exp_avg"] if opt == "adam" else s["momentum_buffer"]) is m


def test_set_weights_and_replaced_state_are_picked_up(backend):
    model, X, t = _model(backend, "float64", "relu", "adam", fast=True)
    ref, _, _ = _model(backend, "float64", "relu", "adam", fast=False)
    model.fit(X, t, epochs=1, batch_size=64, verbose=0)
    ref.set_weights(model.get_weights())
    ref.optimizer.state = [
        {k: ref.backend.asarray(np.array(xpnn.to_numpy(v))) if hasattr(v, "shape") else v
         for k, v in s.items()} for s in model.optimizer.state]
    ref.optimizer.iterations = model.optimizer.iterations
    new = [w * 0.5 for w in model.get_weights()]
    model.set_weights(new)
    ref.set_weights(new)
    # replace the state dicts by copies, as Sequential._restore_state does
    model.optimizer.state = [
        {k: model.backend.copy(v) if hasattr(v, "shape") else v for k, v in s.items()}
        for s in model.optimizer.state]
    model.fit(X, t, epochs=1, batch_size=64, shuffle=False, verbose=0)
    ref.fit(X, t, epochs=1, batch_size=64, shuffle=False, verbose=0)
    _assert_same_weights(model, ref, backend, "float64")


def test_divergence_raises_and_keeps_weights():
    """A non-finite loss raises before the update, leaving the last good weights, as generic."""
    X, y = _data()
    X[200:] *= 1e30                                   # finite, but overflows float32 matmuls
    results = []
    for fast in (False, True):
        model = Sequential(Dense(12, 16), ReLU(), Dense(16, 4), Softmax(), seed=0)
        model.fastpath = fast
        model.compile(loss="crossentropy", optimizer=SGD(0.01))
        with pytest.raises(TrainingDivergedError, match="epoch 1, batch"), \
                np.errstate(all="ignore"):
            model.fit(X, y, epochs=1, batch_size=50, shuffle=False, verbose=0)
        weights = model.get_weights()
        assert all(np.all(np.isfinite(w)) for w in weights)
        results.append((weights, model.optimizer.iterations))
    assert results[0][1] == results[1][1] >= 4      # rows 200+ come in the 5th batch
    for a, b in zip(results[0][0], results[1][0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)   # equal to float32 rounding


@pytest.mark.parametrize("kernels", ["numpy", "numba"])
@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd_nesterov"])
def test_multithreaded_update_equals_single_threaded(opt, kernels, monkeypatch):
    """The update split over threads (and, for the NumPy passes, blocks) equals the one-piece
    update bit for bit."""
    from xpnn.fastpath import numpy_mlp

    if kernels == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("XPNN_NUMBA", "1" if kernels == "numba" else "0")
    monkeypatch.setattr(numpy_mlp, "BLOCK", 1000)    # several blocks per thread
    weights = []
    for threads in (1, 3):
        model, X, t = _model("numpy", "float32", "relu", opt, fast=True)
        model.fit(X[:64], t[:64], epochs=1, batch_size=64, verbose=0)
        trainer = model._fastpath_trainer
        assert trainer.kernels == kernels
        trainer.threads = threads
        model.fit(X, t, epochs=2, batch_size=32, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shuffle", [True, False])
def test_fast_path_gathers_each_batch(shuffle, monkeypatch):
    """Shuffled epochs on the NumPy fast path gather one batch at a time into a reused buffer
    (no copy of the whole shuffled dataset), batch by batch the rows the generic path uses."""
    from xpnn.fastpath.numpy_mlp import NumpyMLPTrainer

    rows_seen = []
    gather = NumpyMLPTrainer.gather

    def spy(self, X, t, rows):
        rows_seen.append(np.array(rows))
        return gather(self, X, t, rows)

    monkeypatch.setattr(NumpyMLPTrainer, "gather", spy)
    model, X, t = _model("numpy", "float32", "relu", "adam", fast=True)
    generic, _, _ = _model("numpy", "float32", "relu", "adam", fast=False)
    n = X.shape[0]
    model.fit(X, t, epochs=2, batch_size=64, shuffle=shuffle, verbose=0)
    generic.fit(X, t, epochs=2, batch_size=64, shuffle=shuffle, verbose=0)
    if not shuffle:                                   # contiguous slices: nothing to gather
        assert rows_seen == []
        return
    sizes = [64] * (n // 64) + ([n % 64] if n % 64 else [])
    assert [len(r) for r in rows_seen] == sizes * 2
    for e in range(2):                                # each epoch: one permutation of 0..n-1
        epoch = np.concatenate(rows_seen[e * len(sizes):(e + 1) * len(sizes)])
        np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
    assert model._fastpath_trainer._xin.shape == (64, X.shape[1])
    _assert_same_weights(generic, model, "numpy", "float32")


def test_sqrt_matches_power_half():
    """The NumPy update uses np.sqrt where the generic Adam writes v ** 0.5."""
    v = np.random.default_rng(0).random(10_000).astype(np.float32) ** 7
    np.testing.assert_array_equal(np.sqrt(v), v ** 0.5)


def test_benchmark_smoke(tmp_path):
    """The throughput benchmark runs end to end on tiny synthetic data (what CI checks)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "mnist_throughput.py"), "--smoke",
         "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "results.json").exists() and (out / "results.md").exists()
    assert "samples/s" in (out / "results.md").read_text()
    import json

    records = json.loads((out / "results.json").read_text())["records"]
    xpnn_rec = next(r for r in records if r["impl"] == "xpnn-numpy")
    assert 0 < xpnn_rec["floor_inproc"] < 10     # the floor timed in the worker's own process
    assert all(len(e) == 3 and e[2] > 0 for e in xpnn_rec["times"])


def test_profile_step_smoke():
    """benchmarks/profile_step.py profiles the real trainer's step: every part is timed and the
    floor replays the step's 8 matmuls (S has 3 Dense layers)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "profile_step.py"), "--config", "S",
         "--rounds", "2", "--block", "2", "--samples", "1024"],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| matmul")]
    assert len(rows) == 8                       # 3 forward, 3 dW, 2 dx (none below layer 1)
    assert all(float(r.split("|")[3]) > 0 for r in rows)
    for part in ("batch gather", "optimizer update", "softmax-CE", "whole step"):
        assert part in proc.stdout


def test_copied_trainer_is_dropped():
    """Copying a trainer gives None, so a copied model builds fresh buffers at its next fit."""
    import copy
    import pickle

    model, X, t = _model("numpy", "float64", "relu", "adam", fast=True)
    model.fit(X, t, epochs=1, batch_size=64, verbose=0)
    trainer = model._fastpath_trainer
    assert copy.deepcopy(trainer) is None
    assert pickle.loads(pickle.dumps(trainer)) is None


def test_generic_path_model_imports_no_fast_trainer():
    """A model the fast path cannot train (a ParametricActivation) learns that before the
    NumPy trainer's module, and Numba with it, is imported."""
    code = ("import sys, numpy as np, xpnn\n"
            "m = xpnn.Sequential(xpnn.Dense(3, 4), xpnn.ParametricActivation(4, 'mish'),\n"
            "                    xpnn.Dense(4, 1), seed=0)\n"
            "m.compile('mse', xpnn.Adam(0.01))\n"
            "X = np.random.default_rng(0).normal(size=(20, 3))\n"
            "m.fit(X, X[:, :1], epochs=2, batch_size=8, verbose=0)\n"
            "assert xpnn.fastpath.explain(m) is not None\n"
            "print(sorted(k for k in ('numba', 'xpnn.fastpath.numpy_mlp') if k in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_dropout_kernel_is_the_layers_product(dtype, monkeypatch):
    """``dropout_apply`` (forward) and ``dropout_apply_inplace`` (backward) give bit for bit
    what ``Dropout.forward`` / ``backward`` give with the same mask in their array passes
    (``XPNN_NUMBA=0``), NaN and inf included; so does the layer itself once the kernels are
    loaded (it applies its mask with ``dropout_apply``)."""
    numba_kernels = pytest.importorskip("xpnn.fastpath.numba_kernels")
    pytest.importorskip("numba")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 7)).astype(dtype)
    x[0, :3] = [np.nan, np.inf, -np.inf]
    delta = rng.normal(size=x.shape).astype(dtype)
    delta[1, :2] = [np.inf, np.nan]
    runs, calls = {}, []
    kernel = numba_kernels.dropout_apply
    monkeypatch.setattr(numba_kernels, "dropout_apply",
                        lambda *args: calls.append(1) or kernel(*args))
    for setting in ("0", "1"):
        monkeypatch.setenv("XPNN_NUMBA", setting)
        layer = Dropout(0.3)
        layer.build(xpnn.backend.get_backend("numpy"), dtype, np.random.default_rng(0), 7)
        with np.errstate(invalid="ignore"):                    # inf · 0
            runs[setting] = (layer.forward(x, training=True), layer.backward(delta.copy()))
        if setting == "0":
            keep = layer.scale != 0
    assert len(calls) == 2                                     # the layer's forward, backward
    for a, b in zip(runs["1"], runs["0"], strict=True):
        np.testing.assert_array_equal(a, b)                    # NaN where the passes have NaN
    scale = np.dtype(dtype).type(1.0 / (1.0 - 0.3))
    out = np.empty_like(x)
    kernel(x, keep, scale, out)
    np.testing.assert_array_equal(out, runs["0"][0])
    numba_kernels.dropout_apply_inplace(delta, keep, scale)
    np.testing.assert_array_equal(delta, runs["0"][1])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numpy_trainer_fuses_dropout_to_the_same_weights(dtype, monkeypatch):
    """With Numba, the NumPy trainer applies a Dropout that follows an activation in its own
    kernel (no scale array): the same masks and bit for bit the same weights as with the layer
    objects."""
    pytest.importorskip("numba")
    from xpnn.fastpath import numba_kernels
    from xpnn.fastpath._flat import FlatTrainer
    from xpnn.fastpath.numpy_mlp import NumpyMLPTrainer

    calls, layer_calls = [], []
    kernel, forward = numba_kernels.dropout_apply, Dropout.forward
    monkeypatch.setattr(numba_kernels, "dropout_apply",
                        lambda *args: calls.append(1) or kernel(*args))
    monkeypatch.setattr(Dropout, "forward",
                        lambda *args, **kw: layer_calls.append(1) or forward(*args, **kw))

    def fit():
        model = Sequential(Dense(12, 32), ReLU(), Dropout(0.4), Dense(32, 16), Tanh(),
                           Dropout(0.2), Dense(16, 4), Softmax(), dtype=dtype, seed=3)
        model.compile("crossentropy", Adam(1e-2))
        X, y = _data()
        model.fit(X, y, epochs=3, batch_size=64, verbose=0)
        return model

    fused = fit()
    assert len(calls) == 2 * 3 * 5           # both Dropouts, 3 epochs of 5 batches
    assert not layer_calls                   # by the trainer, not the layers
    assert [d is not None for d in fused._fastpath_trainer.dropped] == [True, True, False]
    calls.clear()
    monkeypatch.setattr(NumpyMLPTrainer, "_post_forward", FlatTrainer._post_forward)
    monkeypatch.setattr(NumpyMLPTrainer, "_post_backward", FlatTrainer._post_backward)
    layers = fit()
    assert len(layer_calls) == 2 * 3 * 5 and len(calls) == 2 * 2 * 3 * 5   # forward, backward
    for a, b in zip(fused.get_weights(), layers.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

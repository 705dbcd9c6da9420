"""The CuPy fast trainer's wiring, checked on the CPU.

CI has no GPU, so the CuPy trainer (:mod:`xpnn.fastpath.cupy_mlp`) would otherwise first run on
a rare GPU session. Here ``cupy`` is replaced by a stand-in built on NumPy: array functions are
NumPy's, and each ``ElementwiseKernel`` is emulated by a NumPy function bound *by the parameter
names declared in the kernel's signature*. A trainer that passes arguments in the wrong order,
forgets an output, or mixes up a scalar (``step_size`` for ``bc2``...) then trains to different
weights than the generic path, and the comparison below fails. The CUDA C bodies themselves are
checked on a GPU by ``benchmarks/gpu.sh`` (the same test files with ``--backends cupy``).
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest

from xpnn import (
    SGD,
    Adam,
    AdamW,
    Dense,
    Dropout,
    LeakyReLU,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    fastpath,
)

# ----------------------------------------------------------------- NumPy versions of the kernels
ACTS = {0: lambda x: x, 1: lambda x: np.maximum(x, 0), 2: np.tanh,
        3: lambda x: 1.0 / (1.0 + np.exp(-x))}


def bias_act(b, ncol, has_bias, act, z):
    assert ncol == z.shape[1], "ncol must be the number of columns of z"
    x = z + b if has_bias else z.copy()
    z[...] = ACTS[act](x)


def act_backward(y, act, d):
    factor = {0: 1.0, 1: (y > 0), 2: 1.0 - y * y, 3: y * (1.0 - y)}[act]
    d *= factor


def _softmax_ce(z, t, K, n, p, dz, rowloss):
    assert K == z.shape[1] and float(n) == z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)
    logs = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    p[...] = np.exp(shifted - logs)
    dz[...] = (p - t) / n
    rowloss[...] = -(t * (shifted - logs)).sum(axis=1)


def softmax_ce_labels(z, labels, K, n, p, dz, rowloss):
    assert labels.ndim == 1 and labels.dtype.kind == "i"
    _softmax_ce(z, (labels[:, None] == np.arange(K)).astype(z.dtype), K, n, p, dz, rowloss)


def softmax_ce_dense(z, t, K, n, p, dz, rowloss):
    _softmax_ce(z, t, K, n, p, dz, rowloss)


def adam(g, b1, one_b1, b2, one_b2, eps, wd, shrink, decoupled, step_size, bc2, p, m, v):
    assert np.isclose(b1 + one_b1, 1) and np.isclose(b2 + one_b2, 1) and 0 < bc2 <= 1
    grad = g
    if decoupled:
        p *= shrink
    elif wd:
        grad = g + wd * p
    m[...] = b1 * m + one_b1 * grad
    v[...] = b2 * v + one_b2 * grad * grad
    p -= step_size * (m / (np.sqrt(v) / bc2 + eps))


def sgd(g, lr, mu, wd, nesterov, started, p, buf):
    grad = g + wd * p if wd else g
    if mu:
        buf[...] = mu * buf + grad if started else grad
        grad = grad + mu * buf if nesterov else buf
    p -= lr * grad


KERNELS = {"xpnn_bias_act": bias_act, "xpnn_act_backward": act_backward,
           "xpnn_softmax_ce_labels": softmax_ce_labels,
           "xpnn_softmax_ce_dense": softmax_ce_dense, "xpnn_adam": adam, "xpnn_sgd": sgd}


def _names(params):
    return [p.split()[-1] for p in params.split(",")]


class ElementwiseKernel:
    """Binds call arguments to the declared parameter names, then runs the NumPy version."""

    def __init__(self, in_params, out_params, operation, name, **kwargs):
        self.inputs, self.outputs = _names(in_params), _names(out_params)
        self.fn = KERNELS[name]
        self.name = name

    def __call__(self, *args):
        names = self.inputs + self.outputs
        assert len(args) == len(names), f"{self.name}: {len(args)} arguments for {names}"
        for name, a in zip(self.outputs, args[len(self.inputs):], strict=True):
            assert isinstance(a, np.ndarray), f"{self.name}: output {name} must be an array"
        self.fn(**dict(zip(names, args, strict=True)))


@pytest.fixture
def cupy_on_numpy(monkeypatch):
    """``xpnn.fastpath.cupy_mlp`` imported against the NumPy stand-in, used for numpy models."""
    fake = types.ModuleType("cupy")
    for name in ("matmul", "sum", "add", "empty", "zeros", "dtype"):
        setattr(fake, name, getattr(np, name))
    fake.ElementwiseKernel = ElementwiseKernel
    # Its own array type, so that array-api-compat does not take NumPy arrays for CuPy's.
    fake.ndarray = type("ndarray", (), {})
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.delitem(sys.modules, "xpnn.fastpath.cupy_mlp", raising=False)
    module = importlib.import_module("xpnn.fastpath.cupy_mlp")
    monkeypatch.setattr(module.CupyMLPTrainer, "lib", types.SimpleNamespace(
        **{name: getattr(fake, name) for name in ("matmul", "sum", "add", "empty", "zeros",
                                                  "dtype")}, ndarray=np.ndarray))
    monkeypatch.setattr(fastpath, "_trainer_class", lambda family: module.CupyMLPTrainer)
    yield module
    sys.modules.pop("xpnn.fastpath.cupy_mlp", None)


ARCHS = {
    "relu": lambda: [Dense(10, 24), ReLU(), Dense(24, 12), ReLU(), Dense(12, 4), Softmax()],
    "tanh-sigmoid": lambda: [Dense(10, 16), Tanh(), Dense(16, 8, bias=False), Sigmoid(),
                             Dense(8, 4), Softmax()],
    "leaky": lambda: [Dense(10, 16), LeakyReLU(0.1), Dense(16, 4), Softmax()],
    "bce": lambda: [Dense(10, 16), ReLU(), Dense(16, 1), Sigmoid()],
    "mse": lambda: [Dense(10, 16), Tanh(), Dense(16, 3)],
    "decay": lambda: [Dense(10, 16, weight_decay=0.05), ReLU(), Dense(16, 4), Softmax()],
    "dropout": lambda: [Dropout(0.2), Dense(10, 16), ReLU(), Dropout(0.5), Dense(16, 8),
                        LeakyReLU(0.1), Dropout(0.3), Dense(8, 4), Softmax()],
}
OPTIMIZERS = {
    "adam": lambda: Adam(1e-2),
    "adam_l2": lambda: Adam(1e-2, weight_decay=1e-2),
    "adamw": lambda: AdamW(1e-2, weight_decay=0.1),
    "sgd_nesterov": lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
}


def _fit(arch, opt, fast, one_hot=False):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 10))
    y = rng.integers(0, 4, 90)
    loss = "crossentropy"
    if arch == "bce":
        y = (y % 2).astype(float)
    elif arch == "mse":
        y, loss = X[:, :3] * 0.5, "mse"
    elif one_hot:
        y = np.eye(4)[y]
    model = Sequential(*ARCHS[arch](), dtype="float64", seed=3)
    model.fastpath = fast
    model.compile(loss=loss, optimizer=OPTIMIZERS[opt]())
    history = model.fit(X, y, epochs=3, batch_size=32, verbose=0)
    return model, history


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_cupy_trainer_matches_the_generic_path(cupy_on_numpy, arch, opt):
    fast, h_fast = _fit(arch, opt, fast=True)
    assert isinstance(fast._fastpath_trainer, cupy_on_numpy.CupyMLPTrainer)
    generic, h_generic = _fit(arch, opt, fast=False)
    for a, b in zip(fast.get_weights(), generic.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_fast["loss"], h_generic["loss"], rtol=1e-10)


def test_cupy_trainer_with_one_hot_targets(cupy_on_numpy):
    fast, _ = _fit("relu", "adam", fast=True, one_hot=True)
    generic, _ = _fit("relu", "adam", fast=False, one_hot=True)
    for a, b in zip(fast.get_weights(), generic.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_emulation_catches_a_swapped_argument(cupy_on_numpy, monkeypatch):
    """The check above can fail: a trainer that swaps two scalars of the Adam kernel diverges."""
    original = cupy_on_numpy._adam

    def swapped(g, b1, one_b1, b2, one_b2, eps, wd, shrink, decoupled, step_size, bc2, *outs):
        return original(g, b1, one_b1, b2, one_b2, eps, wd, shrink, decoupled, bc2, step_size,
                        *outs)

    monkeypatch.setattr(cupy_on_numpy, "_adam", swapped)
    fast, _ = _fit("relu", "adam", fast=True)
    generic, _ = _fit("relu", "adam", fast=False)
    assert not np.allclose(fast.get_weights()[0], generic.get_weights()[0], rtol=1e-6)

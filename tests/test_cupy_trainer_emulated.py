"""The CuPy fast trainer's wiring, checked on the CPU.

CI has no GPU, so the CuPy trainer (:mod:`xpnn.fastpath.cupy_mlp`) would otherwise first run on
a rare GPU session. Here ``cupy`` is replaced by a stand-in built on NumPy: array functions are
NumPy's, and each ``ElementwiseKernel`` is emulated by a NumPy function bound *by the parameter
names declared in the kernel's signature*. A trainer that passes arguments in the wrong order,
forgets an output, or mixes up a scalar (``step_size`` for ``bc2``...) then trains to different
weights than the generic path, and the comparison below fails.

The stand-in is as strict as CuPy where CuPy raises: every array bound to a type placeholder
(``T``) must have the one dtype the placeholder resolves to (a NumPy scalar of another dtype
counts, a Python number does not), explicitly typed scalars (``int32``) must be Python integers,
outputs must be arrays of that dtype, and the non-raw arguments' shapes must broadcast to the
outputs' shapes exactly; ``matmul``/``sum``/``add`` with ``out=`` need matching dtypes. Like
CuPy, it works on a *current device*: the trainer of a model on GPU 1 must allocate, launch
and multiply only inside ``with cupy.cuda.Device(1):``. The CUDA C bodies themselves are
compiled by ``tests/test_cuda_sources.py`` (NVRTC, no GPU needed) and run on a GPU by
``benchmarks/gpu.sh``.
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
    RMSprop,
    Scale,
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


def rmsprop(g, lr, rho, one_rho, eps, mu, wd, p, s, b):
    assert np.isclose(rho + one_rho, 1)
    grad = g + wd * p if wd else g
    s[...] = rho * s + one_rho * (grad * grad)
    u = grad / (np.sqrt(s) + eps)
    if mu:
        b[...] = mu * b + u
        u = b
    p -= lr * u


KERNELS = {"xpnn_bias_act": bias_act, "xpnn_act_backward": act_backward,
           "xpnn_softmax_ce_labels": softmax_ce_labels,
           "xpnn_softmax_ce_dense": softmax_ce_dense, "xpnn_adam": adam, "xpnn_sgd": sgd,
           "xpnn_rmsprop": rmsprop}


class _Devices:
    """The stand-in's device state: a stack of current devices (0 when none is entered) and
    the device the trainer under test must use."""

    def __init__(self):
        self.stack = []
        self.expected = 0

    @property
    def current(self):
        return self.stack[-1] if self.stack else 0

    def check(self, what):
        assert self.current == self.expected, (
            f"{what} ran on device {self.current}, the model's device is {self.expected}")


DEVICES = _Devices()


class Device:
    """``cupy.cuda.Device``: a context manager making device ``id`` current."""

    def __init__(self, device_id=0):
        self.id = device_id

    def __enter__(self):
        DEVICES.stack.append(self.id)
        return self

    def __exit__(self, *exc):
        DEVICES.stack.pop()


def _params(params):
    """``"raw T z, int32 K"`` -> [(raw, type, name), ...]."""
    out = []
    for p in params.split(","):
        words = p.split()
        out.append(("raw" in words[:-2], words[-2], words[-1]))
    return out


def _is_placeholder(type_name):
    return len(type_name) == 1 and type_name.isupper()


class ElementwiseKernel:
    """Checks a call as CuPy would, binds the arguments to the declared parameter names, then
    runs the NumPy version."""

    def __init__(self, in_params, out_params, operation, name, **kwargs):
        self.inputs, self.outputs = _params(in_params), _params(out_params)
        self.fn = KERNELS[name]
        self.name = name

    def __call__(self, *args):
        params = self.inputs + self.outputs
        assert len(args) == len(params), (
            f"{self.name}: {len(args)} arguments for {[p[2] for p in params]}")
        DEVICES.check(f"kernel {self.name}")
        types = {}
        for k, ((_, type_name, name), a) in enumerate(zip(params, args, strict=True)):
            if k >= len(self.inputs):
                assert isinstance(a, np.ndarray), f"{self.name}: output {name} must be an array"
            if isinstance(a, (np.ndarray, np.generic)):
                if _is_placeholder(type_name):
                    seen = types.setdefault(type_name, a.dtype)
                    assert a.dtype == seen, (
                        f"{self.name}: type is mismatched, {name} is {a.dtype} but "
                        f"{type_name} is {seen}")
                else:
                    assert a.dtype == np.dtype(type_name), (
                        f"{self.name}: {name} must be {type_name}, got {a.dtype}")
            elif type_name.startswith("int"):
                assert isinstance(a, int) and not isinstance(a, bool), (
                    f"{self.name}: {name} ({type_name}) must be a Python int, got {type(a)}")
            else:
                assert isinstance(a, (int, float)), f"{self.name}: {name} is {type(a)}"
        in_shapes = [a.shape for (raw, _, _), a in zip(self.inputs, args, strict=False)
                     if not raw and isinstance(a, np.ndarray)]
        outs = [(name, a.shape) for (raw, _, name), a in
                zip(self.outputs, args[len(self.inputs):], strict=True) if not raw]
        assert in_shapes or outs, f"{self.name}: only raw arrays: the size must be given"
        full = np.broadcast_shapes(*in_shapes, *(shape for _, shape in outs))
        for name, shape in outs:
            assert shape == full, f"{self.name}: out shape {shape} of {name} is not {full}"
        self.fn(**{name: a for (_, _, name), a in zip(params, args, strict=True)})


def _same_dtypes(what, *arrays):
    dtypes = {a.dtype for a in arrays if isinstance(a, np.ndarray)}
    assert len(dtypes) == 1, f"{what}: mixed dtypes {dtypes}"


def _matmul(a, b, out):
    DEVICES.check("matmul")
    _same_dtypes("matmul", a, b, out)
    return np.matmul(a, b, out=out)


def _sum(a, axis=None, out=None):
    DEVICES.check("sum")
    if out is not None:
        _same_dtypes("sum", a, out)
    return np.sum(a, axis=axis, out=out)


def _add(a, b, out):
    DEVICES.check("add")
    _same_dtypes("add", a, b, out)
    return np.add(a, b, out=out)


def _multiply(a, b, out):
    DEVICES.check("multiply")
    _same_dtypes("multiply", a, b, out)
    return np.multiply(a, b, out=out)


def _isfinite(a):
    DEVICES.check("isfinite")
    return np.isfinite(a)


def _allocator(fn):
    def allocate(shape, dtype):
        DEVICES.check(f"{fn.__name__}({shape})")
        return fn(shape, dtype=dtype)
    return allocate


FAKE_LIB = {"matmul": _matmul, "sum": _sum, "add": _add, "multiply": _multiply,
            "isfinite": _isfinite,
            "empty": _allocator(np.empty),
            "zeros": _allocator(np.zeros), "dtype": np.dtype}


@pytest.fixture(params=[0, 1], ids=["gpu0", "gpu1"])
def cupy_on_numpy(request, monkeypatch):
    """``xpnn.fastpath.cupy_mlp`` imported against the NumPy stand-in, used for numpy models
    that the trainer takes for models on CUDA device 0 or 1 (device 0 being current)."""
    fake = types.ModuleType("cupy")
    for name, fn in FAKE_LIB.items():
        setattr(fake, name, fn)
    fake.ElementwiseKernel = ElementwiseKernel
    fake.cuda = types.SimpleNamespace(Device=Device)
    # Its own array type, so that array-api-compat does not take NumPy arrays for CuPy's.
    fake.ndarray = type("ndarray", (), {})
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.delitem(sys.modules, "xpnn.fastpath.cupy_mlp", raising=False)
    module = importlib.import_module("xpnn.fastpath.cupy_mlp")
    monkeypatch.setattr(module.CupyMLPTrainer, "lib", types.SimpleNamespace(
        **FAKE_LIB, ndarray=np.ndarray))
    monkeypatch.setattr(module, "_device_of", lambda model: Device(request.param))
    monkeypatch.setattr(DEVICES, "expected", request.param)
    monkeypatch.setattr(fastpath, "_trainer_class", lambda family: module.CupyMLPTrainer)
    yield module
    assert DEVICES.stack == []
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
    # RealMLP's front scale, with its own factors and others on the biases (parameter groups)
    "scaled": lambda: [Scale(10), Dense(10, 16), ReLU(), Dropout(0.2), Dense(16, 4), Softmax()],
}
#: (lr_factor, wd_factor) of each parameter of the archs that set them
FACTORS = {"scaled": [(6.0, 0.0), (1.0, 1.0), (0.1, 0.0), (1.0, 1.0), (0.1, 0.0)]}
OPTIMIZERS = {
    "adam": lambda: Adam(1e-2),
    "adam_l2": lambda: Adam(1e-2, weight_decay=1e-2),
    "adamw": lambda: AdamW(1e-2, weight_decay=0.1),
    "sgd_nesterov": lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "rmsprop": lambda: RMSprop(5e-3),
    "rmsprop_momentum": lambda: RMSprop(5e-3, momentum=0.5, weight_decay=1e-3),
}


def _fit(arch, opt, fast, one_hot=False, dtype="float64"):
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
    model = Sequential(*ARCHS[arch](), dtype=dtype, seed=3)
    for p, (lr, wd) in zip(model.params, FACTORS.get(arch, ()), strict=False):
        p.lr_factor, p.wd_factor = lr, wd
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


@pytest.mark.parametrize("arch", ["relu", "dropout", "tanh-sigmoid"])
def test_cupy_trainer_validates_as_the_generic_path(cupy_on_numpy, arch):
    """fit's validation after each epoch by the CuPy trainer (on its device): the generic
    path's validation losses and weights."""
    rng = np.random.default_rng(1)
    Xv, yv = rng.normal(size=(30, 10)), rng.integers(0, 4, 30)
    runs = []
    for fast in (True, False):
        model = Sequential(*ARCHS[arch](), dtype="float64", seed=3)
        model.fastpath = fast
        model.compile(loss="crossentropy", optimizer=Adam(1e-2))
        X, y = np.random.default_rng(0).normal(size=(90, 10)), np.arange(90) % 4
        history = model.fit(X, y, epochs=3, batch_size=32, validation_data=(Xv, yv),
                            verbose=0)
        runs.append((history.history["val_loss"], model.get_weights()))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-10)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


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


@pytest.mark.parametrize("arch", ["relu", "tanh-sigmoid", "dropout", "decay", "bce", "scaled"])
def test_cupy_trainer_in_float32(cupy_on_numpy, arch):
    """float32 models: every array and NumPy scalar reaching a kernel is float32."""
    fast, h_fast = _fit(arch, "adam_l2", fast=True, dtype="float32")
    assert isinstance(fast._fastpath_trainer, cupy_on_numpy.CupyMLPTrainer)
    assert fast._fastpath_trainer.flat_p.dtype == np.float32
    generic, h_generic = _fit(arch, "adam_l2", fast=False, dtype="float32")
    for a, b in zip(fast.get_weights(), generic.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(h_fast["loss"], h_generic["loss"], rtol=1e-4)


def test_trainer_outside_its_device_is_caught(cupy_on_numpy, monkeypatch):
    """The device check can fail: a step run without ``with device:`` lands on the current
    device 0, which is wrong for a model on device 1 (and right for one on device 0)."""
    from xpnn.fastpath._flat import FlatTrainer

    monkeypatch.setattr(cupy_on_numpy.CupyMLPTrainer, "train_step", FlatTrainer.train_step)
    if DEVICES.expected == 0:
        _fit("relu", "adam", fast=True)
    else:
        with pytest.raises(AssertionError, match="ran on device 0, the model's device is 1"):
            _fit("relu", "adam", fast=True)


def test_emulation_is_as_strict_as_cupy(cupy_on_numpy):
    """The stand-in refuses what CuPy refuses: mixed dtypes, a NumPy scalar of another dtype,
    a non-Python int for an int32 parameter, an output of the wrong shape or dtype."""
    k = cupy_on_numpy._act_backward                     # "T y, int32 act" -> "T d"
    y32, d32 = np.ones((4, 3), np.float32), np.ones((4, 3), np.float32)
    with Device(DEVICES.expected):
        k(y32, 1, d32)                                  # fine
        with pytest.raises(AssertionError, match="type is mismatched"):
            k(np.ones((4, 3)), 1, d32)
        with pytest.raises(AssertionError, match="act must be int32"):
            k(y32, np.int64(1), d32)
        with pytest.raises(AssertionError, match="act .int32. must be a Python int"):
            k(y32, 1.0, d32)
        with pytest.raises(AssertionError, match="out shape"):
            k(y32, 1, np.ones((1, 3), np.float32))
        with pytest.raises(AssertionError, match="output d must be an array"):
            k(y32, 1, 1.0)
        adam = cupy_on_numpy._adam
        flat = [np.zeros(8, np.float32) for _ in range(4)]
        scalars = [0.9, 0.1, 0.999, 0.001, 1e-8, 0.0, 1.0, 0, 1e-3, 0.5]
        adam(flat[0], *scalars, *flat[1:])
        with pytest.raises(AssertionError, match="type is mismatched"):
            adam(flat[0], np.float64(0.9), *scalars[1:], *flat[1:])
        with pytest.raises(AssertionError, match="mixed dtypes"):
            cupy_on_numpy.cp.matmul(y32, np.ones((3, 2)), out=np.empty((4, 2), np.float32))

"""The backend module: names, availability, host transfers and dtypes."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn.backend import BACKENDS, backend_of, get_backend, to_numpy


def test_available_backends_lists_numpy_first():
    names = xpnn.available_backends()
    assert names[0] == "numpy"
    assert set(names) <= set(BACKENDS)
    assert names == [b for b in BACKENDS if b in names]          # in order of preference
    for name in names:
        assert get_backend(name).name == name


def test_backend_instances_are_cached_and_passed_through(backend):
    be = get_backend(backend)
    assert get_backend(backend) is be
    assert get_backend(be) is be
    assert be.family == backend.split(":")[0]
    assert str(be) == backend


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'; valid backends are "
                                         "numpy, torch, cupy, array_api_strict"):
        get_backend("tensorflow")
    with pytest.raises(TypeError, match="backend must be a string"):
        get_backend(3)


def test_unavailable_cupy_says_how_to_install():
    try:
        get_backend("cupy")
    except xpnn.BackendUnavailableError as exc:
        message = str(exc)
    else:
        pytest.skip("cupy is usable on this machine")
    assert "cupy" in message
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert 'pip install "xpnn[cuda12]"' in message
    else:                                   # installed, but no usable GPU
        assert "no CUDA device" in message
    assert issubclass(xpnn.BackendUnavailableError, ImportError)
    assert "cupy" not in xpnn.available_backends()
    with pytest.raises(xpnn.BackendUnavailableError):
        xpnn.Sequential(xpnn.Dense(2, 1), backend="cupy")


def test_torch_cuda_without_a_gpu_is_unavailable():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is available")
    with pytest.raises(xpnn.BackendUnavailableError, match="torch.cuda.is_available"):
        get_backend("torch:cuda")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_asarray_and_to_numpy_round_trip(backend, dtype):
    be = get_backend(backend)
    host = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    a = be.asarray(host, dtype)
    assert be.owns(a)
    assert a.dtype == be.dtype(dtype)
    back = to_numpy(a)
    assert isinstance(back, np.ndarray) and back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, host.astype(dtype))
    assert be.asarray(a) is a                                   # already on the backend
    c = be.copy(a)
    c[0, 0] = 5.0
    assert to_numpy(a)[0, 0] == 0.0                             # an independent copy
    z = be.zeros((2, 2), dtype)
    assert be.owns(z) and z.dtype == be.dtype(dtype) and not np.any(to_numpy(z))


def test_backend_of(backend):
    be = get_backend(backend)
    a = be.asarray([1.0, 2.0])
    if backend == "numpy":
        assert backend_of(a) is None                            # NumPy is host data
    else:
        assert backend_of(a) is be
    assert backend_of([1, 2]) is None


def test_device_context(backend):
    """CuPy: the backend's Device (entering it makes that GPU current); elsewhere a no-op."""
    be = get_backend(backend)
    context = be.device_context()
    if be.family == "cupy":
        assert context is be.device
    with context:
        assert be.owns(be.zeros((1,), "float32"))


def test_to_numpy_on_host_data():
    a = np.ones(3)
    assert to_numpy(a) is a
    np.testing.assert_array_equal(to_numpy([1, 2]), [1, 2])
    pd = pytest.importorskip("pandas")
    np.testing.assert_array_equal(to_numpy(pd.Series([1.0, 2.0])), [1.0, 2.0])


def test_dtype_names():
    be = get_backend("numpy")
    assert be.dtype("float64") == np.float64
    with pytest.raises(ValueError, match="dtype must be one of"):
        be.dtype("int8")


def test_model_in_float64(backend):
    model = xpnn.Sequential(xpnn.Dense(3, 4), xpnn.Tanh(), xpnn.Dense(4, 2), xpnn.Softmax(),
                            backend=backend, dtype="float64", seed=0)
    be = get_backend(backend)
    assert all(p.data.dtype == be.dtype("float64") for p in model.params)
    out = model.predict(np.ones((2, 3), dtype=np.float32))      # inputs are cast to float64
    assert out.dtype == be.dtype("float64")
    assert all(w.dtype == np.float64 for w in model.get_weights())
    model.compile(loss="crossentropy", optimizer="adam")
    model.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=1, verbose=0)
    assert all(p.data.dtype == be.dtype("float64") for p in model.params)


def test_model_defaults_to_float32_numpy():
    model = xpnn.Sequential(xpnn.Dense(3, 2), seed=0)
    assert model.backend.name == "numpy" and model.dtype == "float32"
    assert model.predict(np.ones((1, 3))).dtype == np.float32
    assert model.predict(np.ones((1, 3), dtype=np.int64)).dtype == np.float32


def test_host_random_numbers_are_backend_independent(backend):
    """Dropout masks come from the model's host generator, so they match NumPy's exactly."""
    masks = []
    for be in ("numpy", backend):
        layer = xpnn.Dropout(0.5)
        layer.build(get_backend(be), "float32", np.random.default_rng(3), 10)
        masks.append(to_numpy(layer.forward(get_backend(be).asarray(np.ones((4, 10)),
                                                                    "float32"), training=True)))
    np.testing.assert_array_equal(masks[0], masks[1])


# ------------------------------------------------------------------ canonical device names
@pytest.fixture
def fresh_cache(monkeypatch):
    """An empty backend cache, so that names resolved in a test do not leak into others."""
    from xpnn import backend as backend_module

    monkeypatch.setattr(backend_module, "_CACHE", {})
    return backend_module


def test_torch_cuda_is_named_with_its_device_index(fresh_cache, monkeypatch):
    """``"torch:cuda"`` resolves to ``"torch:cuda:0"``, the name a CUDA tensor's device gives:
    otherwise every CUDA tensor passed to fit/predict is taken for another device's and
    copied through the host."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    be = get_backend("torch:cuda")
    assert be.name == "torch:cuda:0" and str(be.device) == "cuda:0" and be.is_gpu
    assert get_backend("torch:cuda:0") is be
    assert get_backend("torch:cuda:1").name == "torch:cuda:1"
    assert get_backend("torch") is get_backend("torch:cpu")

    class CudaTensor(torch.Tensor):                    # a CPU tensor reporting cuda:0
        @property
        def device(self):
            return torch.device("cuda", 0)

    tensor = torch.Tensor._make_subclass(CudaTensor, torch.zeros(2))
    assert backend_of(tensor) is be


def test_cupy_devices_have_their_own_names(fresh_cache, monkeypatch):
    """``"cupy:1"`` is a backend of its own (named so, on device 1), ``"cupy:0"`` is
    ``"cupy"``, and a CuPy array reports the backend of the device it lives on."""
    import sys
    import types

    import array_api_compat

    class Device:
        def __init__(self, device_id=0):
            self.id = device_id

    class ndarray:                                      # noqa: N801  (CuPy's name)
        def __init__(self, device_id=0):
            self.device = Device(device_id)

    fake = types.ModuleType("cupy")
    fake.ndarray = ndarray
    fake.empty = lambda shape: ndarray()
    fake.cuda = types.SimpleNamespace(
        Device=Device, runtime=types.SimpleNamespace(getDeviceCount=lambda: 2))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(array_api_compat, "array_namespace", lambda *arrays: "cupy namespace")
    be0, be1 = get_backend("cupy"), get_backend("cupy:1")
    assert (be0.name, be0.device.id, be1.name, be1.device.id) == ("cupy", 0, "cupy:1", 1)
    assert get_backend("cupy:0") is be0 and get_backend("cupy:1") is be1
    assert backend_of(ndarray(1)) is be1 and backend_of(ndarray(0)) is be0
    assert be1.device_context() is be1.device              # `with` makes GPU 1 current
    with pytest.raises(xpnn.BackendUnavailableError, match="no CUDA device 2 .this machine has 2"):
        get_backend("cupy:2")


# ------------------------------------------------------------------ what crosses to the device
def test_dropout_sends_its_mask_in_the_models_dtype(monkeypatch):
    """The mask goes to the device already in the model's dtype (no float64 transfer plus a
    cast there), with the same values as before: kept units scaled by 1/(1-p)."""
    from dataclasses import dataclass

    monkeypatch.setenv("XPNN_NUMBA", "0")     # a device's path (the host kernel: test_fastpath)

    from xpnn.backend import Backend

    sent = []

    @dataclass(frozen=True)
    class Recording(Backend):
        def asarray(self, a, dtype=None):
            if isinstance(a, np.ndarray):
                sent.append(a.dtype)
            return super().asarray(a, dtype)

    numpy_be = get_backend("numpy")
    be = Recording("numpy", numpy_be.xp, numpy_be.device)
    for dtype in ("float32", "float64"):
        sent.clear()
        layer = xpnn.Dropout(0.3)
        layer.build(be, dtype, np.random.default_rng(0), 5)
        out = layer.forward(np.ones((200, 5), dtype), training=True)
        assert sent == [np.dtype(dtype)]
        assert out.dtype == np.dtype(dtype)
        raw = np.random.default_rng(0).bit_generator.random_raw(250)    # 4 units a draw
        units = np.stack([(raw >> s) & 0xFFFF for s in (0, 16, 32, 48)], axis=1).reshape(200, 5)
        keep = units >= round(0.3 * 2 ** 16)
        np.testing.assert_array_equal(out, (keep / 0.7).astype(dtype))


class _NoClip:
    """An array namespace without ``clip`` (array-api-compat's clip does masked assignments,
    which read a count back from a GPU)."""

    def __init__(self, xp):
        self._xp = xp

    def __getattr__(self, name):
        if name == "clip":
            raise AssertionError("xp.clip called")
        return getattr(self._xp, name)


@pytest.mark.parametrize("loss_name", ["categorical_crossentropy", "binary_crossentropy"])
def test_unfused_crossentropy_clips_without_clip(backend, loss_name):
    from xpnn.losses import get_loss

    be = get_backend(backend)
    loss = get_loss(loss_name).bind(_NoClip(be.xp))
    p_host = np.array([[0.0, 1.0], [0.25, 0.75]], np.float32)
    t_host = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    value = float(loss.forward(be.asarray(p_host, "float32"), be.asarray(t_host, "float32")))
    eps = np.finfo(np.float32)
    low = eps.smallest_normal if loss_name == "categorical_crossentropy" else eps.eps
    high = 1.0 if loss_name == "categorical_crossentropy" else 1.0 - eps.eps
    clipped = np.minimum(np.maximum(p_host, low), high).astype(np.float64)
    np.testing.assert_allclose(to_numpy(loss.p), clipped.astype(np.float32))
    if loss_name == "categorical_crossentropy":
        expected = -np.sum(t_host * np.log(clipped)) / 2
    else:
        expected = -np.mean(t_host * np.log(clipped) + (1 - t_host) * np.log(1 - clipped))
    assert np.isfinite(value)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    assert to_numpy(loss.backward()).shape == p_host.shape

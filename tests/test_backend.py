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

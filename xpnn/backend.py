"""Array backends: the one module that knows about NumPy, CuPy, PyTorch and array-api-strict.

Everything else in xpnn computes with an ``xp`` namespace (the Python array API standard, made
uniform by ``array-api-compat``) and a ``device``. A :class:`Backend` bundles the two together with
the few operations that cross the host/device boundary:

>>> be = get_backend("numpy")
>>> x = be.asarray([[1.0, 2.0]], dtype="float32")    # host data -> backend array
>>> float(be.xp.sum(x))                              # math through the standard namespace
3.0
>>> to_numpy(x)                                      # any backend array -> numpy.ndarray
array([[1., 2.]], dtype=float32)

Backend names: ``"numpy"`` (default, CPU), ``"cupy"`` (CUDA GPU 0; ``"cupy:1"`` for GPU 1...),
``"torch"`` (PyTorch tensors on the CPU; ``"torch:cuda"`` for the current CUDA device, named
``"torch:cuda:0"`` once resolved) and ``"array_api_strict"`` (the reference implementation of
the standard, for testing that xpnn uses nothing beyond it). A backend's :attr:`Backend.name`
is canonical: two names of one device resolve to one object, and an array made on a backend's
device reports that backend (:func:`backend_of`), so it is never copied through the host.

Random numbers are not part of the array API standard. xpnn therefore draws every random number
(initial weights, shuffles, dropout masks) on the host with a seeded :class:`numpy.random.Generator`
and moves the result to the device, so one seed gives the same run on every backend.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import numpy as np

#: Every backend name xpnn understands, in order of preference for tests and docs.
BACKENDS = ("numpy", "torch", "cupy", "array_api_strict")

#: Floating dtypes a model may use.
DTYPES = ("float32", "float64")

_INSTALL_HINTS = {
    "numpy": 'pip install numpy',
    "cupy": 'pip install "xpnn[cuda12]"  (or "xpnn[cuda13]" for CUDA 13 drivers)',
    "torch": 'pip install "xpnn[torch]"',
    "array_api_strict": "pip install array-api-strict",
}


class BackendUnavailableError(ImportError):
    """The requested backend is known but cannot run on this machine."""


@dataclass(frozen=True)
class Backend:
    """An array namespace plus the device arrays live on (made by :func:`get_backend`).

    Parameters
    ----------
    name : str
        Canonical name, e.g. ``"numpy"``, ``"cupy"``, ``"cupy:1"``, ``"torch"`` or
        ``"torch:cuda:0"``.
    xp : module
        The array-API namespace (``array_api_compat.numpy``, ``array_api_compat.cupy``, ...).
    device : object
        The device every array of this backend is created on.
    """

    name: str
    xp: Any = field(repr=False)
    device: Any = field(repr=False)

    @property
    def family(self) -> str:
        """The library behind the backend: ``"numpy"``, ``"cupy"``, ``"torch"`` or
        ``"array_api_strict"``."""
        return self.name.split(":")[0]

    @property
    def is_gpu(self) -> bool:
        """True when arrays live on an accelerator, so reading a value back costs a sync."""
        return self.family == "cupy" or (self.family == "torch" and self.device.type != "cpu")

    def dtype(self, name: str):
        """The namespace's floating dtype for ``"float32"`` or ``"float64"``.

        Parameters
        ----------
        name : {"float32", "float64"}
            The dtype's name.

        Returns
        -------
        object
            The namespace's dtype object (``xp.float32`` or ``xp.float64``).
        """
        if name not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
        return getattr(self.xp, name)

    def asarray(self, a, dtype=None):
        """Host data (NumPy array, list, scalar) or an array of this backend, on the device.

        ``dtype`` is a dtype name (``"float32"``, ``"int64"``...) or a namespace dtype. Like
        ``xp.asarray``, the result may share memory with ``a`` when no copy is needed (NumPy
        input on the numpy or torch CPU backends); use :meth:`copy` for an independent array.

        Parameters
        ----------
        a : array_like
            Host data or an array of this backend.
        dtype : str or dtype, optional
            Dtype of the result (default: that of ``a``).

        Returns
        -------
        array
            An array of this backend, on its device.
        """
        if isinstance(dtype, str):
            dtype = getattr(self.xp, dtype)
        if self.owns(a):
            return a if dtype is None or a.dtype == dtype else self.xp.astype(a, dtype)
        host = np.asarray(a)
        if self.family == "array_api_strict" and not host.flags.writeable:
            host = host.copy()
        out = self.xp.asarray(host, device=self.device)
        if dtype is not None and out.dtype != dtype:
            out = self.xp.astype(out, dtype)
        return out

    def owns(self, a) -> bool:
        """True if ``a`` is an array of this backend's library (on any device).

        Parameters
        ----------
        a : object
            Anything.

        Returns
        -------
        bool
            Whether ``a`` is such an array.
        """
        return _OWNS[self.family](a)

    def zeros(self, shape, dtype):
        """A zero array of ``shape`` on the device.

        Parameters
        ----------
        shape : tuple of int
            Shape of the array.
        dtype : str or dtype
            Dtype, as in :meth:`asarray`.

        Returns
        -------
        array
            Zeros, on this backend's device.
        """
        if isinstance(dtype, str):
            dtype = getattr(self.xp, dtype)
        return self.xp.zeros(shape, dtype=dtype, device=self.device)

    def device_context(self):
        """A context manager making this backend's device the current one where the library
        has such a notion (CuPy allocates and launches on the *current* GPU), a no-op
        elsewhere: ``with be.device_context(): ...``."""
        if self.family == "cupy":
            return self.device                     # cupy.cuda.Device is a context manager
        return contextlib.nullcontext()

    def copy(self, a):
        """An independent copy of a backend array.

        Parameters
        ----------
        a : array
            An array of this backend.

        Returns
        -------
        array
            A copy that shares no memory with ``a``.
        """
        if self.family == "numpy":       # the same copy, without the namespace's wrapper
            return np.array(a, copy=True)
        return self.xp.asarray(a, copy=True)

    def __str__(self) -> str:
        return self.name


def _is_strict_array(a) -> bool:
    return type(a).__module__.startswith("array_api_strict")


#: Per backend family, whether an object is an array of its library.
_OWNS = {
    "numpy": array_api_compat.is_numpy_array,
    "cupy": array_api_compat.is_cupy_array,
    "torch": array_api_compat.is_torch_array,
    "array_api_strict": _is_strict_array,
}


def _torch_name(device) -> str:
    """Canonical backend name of a torch device: ``"torch"`` (CPU), ``"torch:cuda:0"``...

    A CUDA device always carries its index, so that ``"torch:cuda"`` and the device of a tensor
    made on it (``cuda:0``) name the same backend.
    """
    return "torch" if device.type == "cpu" else f"torch:{device}"


def _cupy_name(index: int) -> str:
    """Canonical backend name of CUDA device ``index`` under CuPy: ``"cupy"`` for device 0,
    ``"cupy:1"``... for the others."""
    return "cupy" if index == 0 else f"cupy:{index}"


def _resolve(name: str) -> Backend:
    family, _, device_name = name.partition(":")
    if family == "numpy":
        xp = array_api_compat.array_namespace(np.empty(0))
        return Backend("numpy", xp, "cpu")
    if family == "array_api_strict":
        mod = _import("array_api_strict", family)
        return Backend("array_api_strict", mod, mod.Device("CPU_DEVICE"))
    if family == "torch":
        torch = _import("torch", family)
        device = torch.device(device_name or "cpu")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                "backend 'torch:cuda' needs a CUDA GPU, but torch.cuda.is_available() is False"
            )
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        xp = array_api_compat.array_namespace(torch.empty(0))
        return Backend(_torch_name(device), xp, device)
    if family == "cupy":
        cupy = _import("cupy", family)
        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDA driver missing, no device...
            raise BackendUnavailableError(
                f"backend 'cupy' is installed but no CUDA device is usable ({exc}). "
                "Use backend='numpy' on this machine."
            ) from exc
        if n < 1:
            raise BackendUnavailableError("backend 'cupy' is installed but no CUDA device exists")
        index = int(device_name or 0)
        if not 0 <= index < n:
            raise BackendUnavailableError(
                f"backend {name!r}: no CUDA device {index} (this machine has {n})")
        xp = array_api_compat.array_namespace(cupy.empty(0))
        return Backend(_cupy_name(index), xp, cupy.cuda.Device(index))
    raise ValueError(f"unknown backend {name!r}; valid backends are {', '.join(BACKENDS)}")


def _import(module: str, family: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {family!r} needs the {module!r} package, which is not installed: "
            f"{_INSTALL_HINTS[family]}"
        ) from exc


_CACHE: dict[str, Backend] = {}


def get_backend(backend: str | Backend = "numpy") -> Backend:
    """Resolve a backend name (or pass a :class:`Backend` through).

    Parameters
    ----------
    backend : str or Backend
        ``"numpy"``, ``"cupy"``, ``"cupy:1"``, ``"torch"``, ``"torch:cuda"``,
        ``"array_api_strict"``... (see :data:`BACKENDS`).

    Returns
    -------
    Backend
        The backend, ready to use.

    Raises
    ------
    ValueError
        For a name xpnn does not know; the message lists the valid ones.
    BackendUnavailableError
        When the backend's library is missing or (for CuPy) no CUDA device exists; the message says
        how to install it.
    """
    if isinstance(backend, Backend):
        return backend
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string such as 'numpy', got {type(backend).__name__}")
    if backend not in _CACHE:
        resolved = _resolve(backend)
        # One object per device: "torch:cuda" and "torch:cuda:0", "cupy" and "cupy:0" alike.
        _CACHE[backend] = _CACHE.setdefault(resolved.name, resolved)
    return _CACHE[backend]


def available_backends() -> list[str]:
    """Names of the backends that work on this machine (``"numpy"`` always first)."""
    names = []
    for name in BACKENDS:
        try:
            get_backend(name)
        except (BackendUnavailableError, ImportError):
            continue
        names.append(name)
    return names


def backend_of(a) -> Backend | None:
    """The backend an array belongs to, or ``None`` for host data (lists, pandas, scalars)."""
    if array_api_compat.is_cupy_array(a):
        return get_backend(_cupy_name(a.device.id))
    if array_api_compat.is_torch_array(a):
        return get_backend(_torch_name(a.device))
    if _is_strict_array(a):
        return get_backend("array_api_strict")
    return None


def to_numpy(a) -> np.ndarray:
    """Bring an array of any backend back to the host as a :class:`numpy.ndarray`.

    Parameters
    ----------
    a : array
        An array of any backend (a NumPy array is returned as it is).

    Returns
    -------
    numpy.ndarray
        The values on the host.
    """
    if isinstance(a, np.ndarray):
        return a
    if array_api_compat.is_cupy_array(a):
        return a.get()
    if array_api_compat.is_torch_array(a):
        return a.detach().cpu().numpy()
    if _is_strict_array(a):
        return np.from_dlpack(a)
    if hasattr(a, "to_numpy"):  # pandas
        return a.to_numpy()
    return np.asarray(a)


def host_rng(seed) -> np.random.Generator:
    """The host random generator a model draws all its random numbers from."""
    return np.random.default_rng(seed)

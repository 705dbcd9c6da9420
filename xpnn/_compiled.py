"""The compiled CPU kernels (:mod:`xpnn.fastpath.numba_kernels`) for the generic layers and
optimizers, when this process has them.

The fast trainers load the kernels, and so do the tabular estimators (:func:`load_kernels`);
the generic step of other models uses them only once they are loaded (:func:`loaded_kernels`):
loading Numba costs about half a second of CPU, more than a small model's whole fit saves. A
kernel is used only where it gives the numbers of the array passes it replaces, bit for bit,
so whether it runs changes the speed, never the result.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["compiled_views", "host_arrays", "load_kernels", "loaded_kernels"]


def loaded_kernels():
    """:mod:`xpnn.fastpath.numba_kernels` when it is loaded already in this process and not
    disabled with ``XPNN_NUMBA=0``; otherwise None."""
    kernels = sys.modules.get("xpnn.fastpath.numba_kernels")
    return kernels if kernels is not None and kernels.available() else None


def load_kernels():
    """Load the compiled kernels now, for work long enough to gain from them (the tabular
    estimators' fits: several networks, hundreds of steps each); returns
    :func:`loaded_kernels`. The first call in a process costs about half a second of CPU;
    without Numba, or with ``XPNN_NUMBA=0``, nothing is compiled and it returns None."""
    from .fastpath import numba_kernels  # noqa: F401  (loads them: sys.modules has them)
    return loaded_kernels()


def compiled_views(*arrays):
    """``(*flat, kernels)``: the arrays as 1-D views and :func:`loaded_kernels`, when its
    compiled loops can update them in place: NumPy arrays, all C-contiguous, writable and of
    one dtype, float32 or float64, and the kernels loaded. Otherwise None (the caller takes
    its array passes, which give the same numbers)."""
    if not host_arrays(*arrays):
        return None
    kernels = loaded_kernels()
    if kernels is None:
        return None
    return (*(a.reshape(-1) for a in arrays), kernels)


def host_arrays(*arrays) -> bool:
    """Whether the arrays are NumPy arrays a kernel can take: C-contiguous, writable, all of
    one dtype, float32 or float64."""
    dtype = arrays[0].dtype
    if dtype != np.float32 and dtype != np.float64:
        return False
    return all(type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous
               and a.flags.writeable for a in arrays)

"""Benchmarks measure the BLAS kernels a user gets.

Some machines set ``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``) in the environment to pin old
OpenBLAS builds to a safe kernel set. A current OpenBLAS then runs, say, its AVX2 Haswell kernels
on a processor for which it would pick AVX-512 ones, and every CPU figure measures a
configuration no user without those variables has. OpenBLAS reads them once, when it is
loaded, so a benchmark script that finds them re-executes itself without them
(:func:`run_on_default_kernels`, before any measurement) and its results record the kernel
OpenBLAS actually chose (:func:`blas_info`, from threadpoolctl) and the variables it removed.

Only benchmark processes do this, never tests or CI.
"""

from __future__ import annotations

import os
import sys

#: Environment variables that override OpenBLAS's own choice of kernels.
OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: Set in the re-executed process: the ``NAME=value`` pairs that were removed.
REMOVED = "XPNN_BENCH_REMOVED_ENV"


def clean_environ(environ=None) -> dict:
    """A copy of ``environ`` (default ``os.environ``) without :data:`OVERRIDES`."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k not in OVERRIDES}


def run_on_default_kernels(script: str, argv: list[str], keep: bool = False) -> None:
    """Re-execute ``python script *argv`` without :data:`OVERRIDES` if any is set.

    Returns (doing nothing) when none is set or ``keep`` is true; otherwise does not return.
    """
    found = {k: os.environ[k] for k in OVERRIDES if k in os.environ}
    if keep or not found:
        return
    env = clean_environ()
    env[REMOVED] = ",".join(f"{k}={v}" for k, v in found.items())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(script), *argv], env)


def removed() -> str:
    """The ``NAME=value`` pairs removed from this process's environment ("" for none)."""
    return os.environ.get(REMOVED, "")


def blas_info() -> list[dict] | str:
    """Per BLAS/OpenMP library loaded in this process: what threadpoolctl reports about it
    (``internal_api``, ``version``, ``architecture`` (the kernel set), ``num_threads``,
    ``prefix``), or a sentence when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    keys = ("internal_api", "version", "architecture", "num_threads", "prefix")
    return [{k: d.get(k) for k in keys} for d in threadpool_info()]


def describe(blas) -> str:
    """One line for :func:`blas_info`'s result: ``openblas 0.3.31 (SkylakeX, 2 threads)``."""
    if not isinstance(blas, list):
        return str(blas)
    parts = []
    for b in blas:
        arch = f"{b['architecture']}, " if b.get("architecture") else ""
        parts.append(f"{b['internal_api']} {b['version']} ({arch}{b['num_threads']} threads)")
    return ", ".join(parts) or "none loaded"

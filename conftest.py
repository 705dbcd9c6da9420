"""Test configuration: run backend-parametrized tests on every backend this machine has.

A test that takes a ``backend`` argument runs once per name in ``xpnn.BACKENDS``; backends that
cannot run here (CuPy without a GPU, PyTorch not installed) are skipped with the reason.
Choose a subset with ``pytest --backends numpy,cupy`` or ``XPNN_TEST_BACKENDS=cupy``.
"""

from __future__ import annotations

import os

import pytest

# Equivalence tests compare float32 matmuls to 1e-5: keep TF32 tensor cores off.
os.environ.setdefault("CUPY_TF32", "0")


def pytest_addoption(parser):
    parser.addoption("--backends", default=os.environ.get("XPNN_TEST_BACKENDS", ""),
                     help="comma-separated backends to test (default: all available)")


def pytest_configure(config):
    try:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except ImportError:
        pass


def _unavailable_reason(name):
    from xpnn.backend import get_backend

    try:
        get_backend(name)
    except Exception as exc:
        return f"backend {name!r} unavailable: {exc}"
    return None


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    from xpnn import BACKENDS

    chosen = [b for b in metafunc.config.getoption("--backends").split(",") if b]
    params = []
    for name in BACKENDS:
        marks = [pytest.mark.gpu] if name == "cupy" else []
        if chosen and name not in chosen:
            marks.append(pytest.mark.skip(reason=f"backend {name!r} not selected (--backends)"))
        else:
            reason = _unavailable_reason(name)
            if reason:
                marks.append(pytest.mark.skip(reason=reason))
        params.append(pytest.param(name, marks=marks, id=name))
    metafunc.parametrize("backend", params)

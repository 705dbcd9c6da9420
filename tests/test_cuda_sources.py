"""Every CUDA kernel of :mod:`xpnn.fastpath.cupy_mlp` compiles, without a GPU.

The kernels are CuPy ``ElementwiseKernel`` s: a parameter list and a CUDA C++ body that CuPy
wraps into a ``__global__`` function and compiles with NVRTC the first time it runs. Without a
GPU that would first happen on a rare GPU session. Here the declarations are captured (the
module is imported against a stand-in ``cupy`` that records them), wrapped the way CuPy wraps
them (a grid-stride loop over ``ptrdiff_t i``; a non-raw input bound as ``const T x =
x_[i]``, a non-raw output as ``T &x = x_[i]``, a raw array as an indexable array, scalars by
value, type placeholders as typedefs) and compiled by NVRTC to PTX for float32 and float64.
That catches syntax and type errors, misspelt functions, writes to inputs and parameters a body
uses but does not declare; what it cannot catch (CuPy's own headers, launch) the GPU run does.

NVRTC comes from the ``nvidia-cuda-nvrtc`` wheel (``pip install "xpnn[nvrtc]"``, no GPU or
driver needed) or a CUDA toolkit on the library path; without either the test is skipped
with that reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib
import os
import sys
import types

import pytest

CANDIDATES = ("nvidia/cu13/lib/libnvrtc.so.13", "nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
              "nvidia/cuda_nvrtc/lib/libnvrtc.so.13")


def _load_nvrtc():
    paths = [os.environ["XPNN_NVRTC"]] if os.environ.get("XPNN_NVRTC") else []
    for base in sys.path:
        for rel in CANDIDATES:
            paths += glob.glob(os.path.join(base, rel))
    found = ctypes.util.find_library("nvrtc")
    if found:
        paths.append(found)
    errors = []
    for path in paths:
        try:
            return ctypes.CDLL(path)
        except OSError as exc:
            errors.append(f"{path}: {exc}")
    return "; ".join(errors) or None


_NVRTC = _load_nvrtc()
pytestmark = pytest.mark.skipif(
    not isinstance(_NVRTC, ctypes.CDLL),
    reason="NVRTC not found (pip install nvidia-cuda-nvrtc, or a CUDA toolkit on the "
           f"library path){': ' + _NVRTC if isinstance(_NVRTC, str) else ''}")


def compile_cuda(source: str, name: str = "xpnn.cu", arch: str = "compute_90"):
    """``(ok, log, ptx)`` of NVRTC compiling ``source`` to PTX for ``arch``."""
    lib = _NVRTC
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0,
                                  None, None) == 0
    options = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"]
    status = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(
        *options))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    ptx = b""
    if status == 0:
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, buf)
        ptx = buf.value
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return status == 0, log.value.decode(errors="replace"), ptx.decode(errors="replace")


# ----------------------------------------------------------------- the kernels, as declared
class _Recorder:
    kernels: list = []

    def __init__(self, in_params, out_params, operation, name, **kwargs):
        _Recorder.kernels.append((in_params, out_params, operation, name))


def declared_kernels():
    """``[(in_params, out_params, operation, name)]`` of every kernel of cupy_mlp."""
    fake = types.ModuleType("cupy")
    fake.ElementwiseKernel = _Recorder
    fake.ndarray = type("ndarray", (), {})
    saved = {k: sys.modules.get(k) for k in ("cupy", "xpnn.fastpath.cupy_mlp")}
    _Recorder.kernels = []
    try:
        sys.modules["cupy"] = fake
        sys.modules.pop("xpnn.fastpath.cupy_mlp", None)
        importlib.import_module("xpnn.fastpath.cupy_mlp")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return list(_Recorder.kernels)


CTYPES = {"float32": "float", "float64": "double", "int32": "int", "int64": "long long",
          "bool": "bool"}


def wrap(in_params, out_params, operation, name, float_type):
    """The kernel as CuPy would generate it, with every placeholder but ``I`` (labels,
    int64) set to ``float_type``."""
    params, body, placeholders = [], [], set()
    for group, is_out in ((in_params, False), (out_params, True)):
        for p in group.split(","):
            words = p.split()
            raw, type_name, var = "raw" in words[:-2], words[-2], words[-1]
            if len(type_name) == 1 and type_name.isupper():
                placeholders.add(type_name)
                ctype = type_name
            else:
                ctype = CTYPES[type_name]
            if raw:
                params.append(f"Raw<{ctype}> {var}")
            elif is_out or var in ARRAY_INPUTS:
                params.append(f"{ctype} *_raw_{var}")
                body.append(f"const {ctype} {var} = _raw_{var}[i];" if not is_out
                            else f"{ctype} &{var} = _raw_{var}[i];")
            else:
                params.append(f"const {ctype} {var}")
    typedefs = "".join(f"typedef {'long long' if t == 'I' else float_type} {t};\n"
                       for t in sorted(placeholders))
    return (f"{typedefs}extern \"C\" __global__ void {name}({', '.join(params)}, "
            f"const ptrdiff_t _n) {{\n"
            "  for (ptrdiff_t i = blockIdx.x * (ptrdiff_t)blockDim.x + threadIdx.x; i < _n;\n"
            "       i += (ptrdiff_t)blockDim.x * gridDim.x) {\n    "
            + "\n    ".join(body) + f"\n{operation}\n  }}\n}}\n")


#: The non-raw inputs the trainer passes as arrays (element ``i`` of each); it passes the other
#: non-raw inputs as Python scalars, which CuPy makes plain kernel arguments.
ARRAY_INPUTS = {"g", "y"}

PRELUDE = """
typedef decltype((char*)0 - (char*)0) ptrdiff_t;
template <typename T> struct Raw {
  T *p;
  __device__ T &operator[](ptrdiff_t k) const { return p[k]; }
};
"""


def test_nvrtc_reports_a_broken_kernel():
    """The check can fail: a body using an undeclared name, or writing to an input, does not
    compile."""
    ok, log, _ = compile_cuda(PRELUDE + wrap("T y", "T d", "d = y * undeclared;", "broken",
                                             "float"))
    assert not ok and "undeclared" in log
    ok, log, _ = compile_cuda(PRELUDE + wrap("T y, int32 act", "T d", "y = d;", "broken",
                                             "float"))
    assert not ok and "modifiable lvalue" in log


def test_all_kernels_are_found():
    names = [k[3] for k in declared_kernels()]
    assert names == ["xpnn_bias_act", "xpnn_act_backward", "xpnn_softmax_ce_labels",
                     "xpnn_softmax_ce_dense", "xpnn_adam", "xpnn_sgd", "xpnn_rmsprop"]


@pytest.mark.parametrize("float_type", ["float", "double"])
def test_every_kernel_compiles(float_type):
    kernels = declared_kernels()
    source = PRELUDE + "\n".join(wrap(*k, float_type) for k in kernels)
    ok, log, ptx = compile_cuda(source)
    assert ok, log + "\n" + source
    for *_, name in kernels:
        assert f".entry {name}(" in ptx

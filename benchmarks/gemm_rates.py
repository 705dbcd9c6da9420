"""GEMM GFLOP/s of NumPy's BLAS and of PyTorch for the matmuls of one training step.

The speed ratios of ``mnist_throughput.py`` depend on how fast each library's GEMM runs the
step's shapes on the host, so every published ratio names them. For S, M and L (the step's
matmuls at their shapes and layouts, ``_gemm_shapes``), on 1 thread and on every usable core:
the best of ``--repeats`` loops over the step's matmuls, in GFLOP/s, in blocks of 5 loops
alternating between the libraries, with a pause before each block (the idle OpenMP/BLAS
threads of one library spin for a moment after its last call and would slow the other).
Prints a Markdown table, the CPU model and flags and the BLAS kernel (threadpoolctl).

    python benchmarks/gemm_rates.py --configs S,M,L
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from _blas_env import blas_info, describe, removed, run_on_default_kernels
from mnist_throughput import CONFIGS, _gemm_shapes


def _cpu():
    model, flags = "?", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    simd = [f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")]
    return model, " ".join(simd)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="S,M,L")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--keep-blas-env", action="store_true")
    args = p.parse_args(argv)
    if argv is None:
        run_on_default_kernels(__file__, sys.argv[1:], keep=args.keep_blas_env)
    import torch
    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0))
    model, simd = _cpu()
    print(f"CPU: {model}, {cores} usable cores, {simd}; load average {os.getloadavg()[0]:.2f}")
    print(f"BLAS: {describe(blas_info())}; torch {torch.__version__}"
          + (f"; removed from the environment: {removed()}" if removed() else ""))
    print("\n| net | threads | NumPy/OpenBLAS GFLOP/s | PyTorch GFLOP/s |\n|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for config in args.configs.split(","):
        sizes, batch = CONFIGS[config]
        ops, flops = [], 0
        for _, sa, sb, ta, tb in _gemm_shapes(sizes, batch):
            A, B = rng.random(sa, dtype=np.float32), rng.random(sb, dtype=np.float32)
            A_, B_ = (A.T if ta else A), (B.T if tb else B)
            out = np.empty((A_.shape[0], B_.shape[1]), np.float32)
            tA, tB = torch.from_numpy(A), torch.from_numpy(B)
            tA_, tB_ = (tA.T if ta else tA), (tB.T if tb else tB)
            ops.append((A_, B_, out, tA_, tB_, torch.from_numpy(out.copy())))
            flops += 2 * A_.shape[0] * A_.shape[1] * B_.shape[1]
        for n in sorted({1, cores}):
            best = {"numpy": float("inf"), "torch": float("inf")}
            torch.set_num_threads(n)
            with threadpool_limits(limits=n, user_api="blas"):
                for _ in range(args.repeats // 5):
                    for lib in best:       # one library at a time: the other's idle threads
                        time.sleep(0.3)    # spin for a moment after its last call
                        for _rep in range(5):
                            t0 = time.perf_counter()
                            for A_, B_, out, tA_, tB_, tout in ops:
                                if lib == "numpy":
                                    np.matmul(A_, B_, out=out)
                                else:
                                    torch.mm(tA_, tB_, out=tout)
                            best[lib] = min(best[lib], time.perf_counter() - t0)
            print(f"| {config} | {n} | {flops / best['numpy'] / 1e9:.0f} | "
                  f"{flops / best['torch'] / 1e9:.0f} |", flush=True)


if __name__ == "__main__":
    main()

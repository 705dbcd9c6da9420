"""Where one training step of the NumPy fast path spends its time, against the GEMM-only floor.

Trains the benchmark's network (``--config`` S, M or L of ``mnist_throughput.py``: float32,
ReLU, softmax cross-entropy, Adam) on random MNIST-shaped data with xpnn's own fast trainer,
and times every part of each step from inside it: each matmul, the batch gather, the
element-wise hooks (bias + activation, its backward with the bias gradient, softmax-CE) and the
optimizer update. The floor replays the step's matmuls back to back, with the step's own
arrays. Steps and floor replays alternate in blocks of ``--block`` (this machine's speed drifts
within seconds), and every figure is a median over blocks.

    python benchmarks/profile_step.py --config L --rounds 10

Timing wrappers cost about a microsecond per call, which matters only on S. Like
``mnist_throughput.py``, it runs on the BLAS kernels OpenBLAS picks for the processor (without
``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``; ``--keep-blas-env`` keeps them) and prints the
kernel set it ran.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

try:
    import xpnn
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import xpnn

from _blas_env import blas_info, describe, removed, run_on_default_kernels  # noqa: E402
from mnist_throughput import BETAS, CONFIGS, EPS, LR  # noqa: E402

HOOKS = {"gather": "batch gather", "_bias_act": "bias + activation",
         "_softmax_ce": "softmax-CE", "_act_backward": "activation backward (+ bias grad)",
         "update": "optimizer update"}


class _TimedLib:
    """``numpy`` as the trainer sees it (``trainer.lib``), with matmul and sum timed."""

    def __init__(self, record):
        self.record, self.calls = record, []

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, a, b, out):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        self.record(f"matmul {len(self.calls)}: {a.shape[0]}x{a.shape[1]} @ "
                    f"{b.shape[0]}x{b.shape[1]}", time.perf_counter() - t0)
        self.calls.append((a, b, out))
        return out

    def sum(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = np.sum(*args, **kwargs)
        self.record("bias sum (last layer)", time.perf_counter() - t0)
        return out


def _timed(fn, label, record):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        record(label, time.perf_counter() - t0)
        return out
    return wrapper


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="L", choices=sorted(CONFIGS))
    p.add_argument("--rounds", type=int, default=10, help="blocks of steps (and of floors)")
    p.add_argument("--block", type=int, default=8, help="steps per block")
    p.add_argument("--samples", type=int, default=60_000)
    p.add_argument("--keep-blas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (default: run without them)")
    args = p.parse_args(argv)
    if argv is None:                     # run as a script: re-executed without the overrides
        run_on_default_kernels(__file__, sys.argv[1:], keep=args.keep_blas_env)

    sizes, batch = CONFIGS[args.config]
    rng = np.random.default_rng(0)
    X = rng.random((args.samples, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], args.samples)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [xpnn.Dense(a, b, init="he"), xpnn.ReLU()]
    layers[-1] = xpnn.Softmax()
    model = xpnn.Sequential(*layers, dtype="float32", seed=0)
    model.compile(loss="categorical_crossentropy",
                  optimizer=xpnn.Adam(LR, BETAS[0], BETAS[1], EPS))
    model.fit(X[:4 * batch], y[:4 * batch], epochs=1, batch_size=batch, verbose=0)
    trainer = model._fastpath_trainer
    if trainer is None:
        raise SystemExit(f"no fast path: {xpnn.fastpath.explain(model)}")

    step_parts = defaultdict(float)

    def record(label, seconds):
        step_parts[label] += seconds

    lib = trainer.lib = _TimedLib(record)
    for name, label in HOOKS.items():
        setattr(trainer, name, _timed(getattr(trainer, name), label, record))

    perm, pos = rng.permutation(args.samples), 0
    parts, steps, floors = defaultdict(list), [], defaultdict(list)
    for r in range(args.rounds + 1):                 # block 0 warms up
        block = defaultdict(float)
        t0 = time.perf_counter()
        for _ in range(args.block):
            if pos + batch > args.samples:
                perm, pos = rng.permutation(args.samples), 0
            step_parts.clear()
            lib.calls = []
            xb, tb = trainer.gather(X, y, perm[pos:pos + batch])
            trainer.train_step(xb, tb)
            pos += batch
            for k, v in step_parts.items():
                block[k] += v
        step_s = (time.perf_counter() - t0) / args.block
        calls = lib.calls                              # the last step's matmuls, replayed
        fl = defaultdict(float)
        t0 = time.perf_counter()
        for _ in range(args.block):
            for i, (a, b, out) in enumerate(calls):
                t1 = time.perf_counter()
                np.matmul(a, b, out=out)
                fl[i] += time.perf_counter() - t1
        floor_s = (time.perf_counter() - t0) / args.block
        if r == 0:
            continue
        steps.append((step_s, floor_s))
        parts["rest (Python, bookkeeping)"].append(step_s - sum(block.values()) / args.block)
        for k, v in block.items():
            parts[k].append(v / args.block)
        for i, v in fl.items():
            floors[i].append(v / args.block)

    def ms(values):
        return statistics.median(values) * 1e3

    print(f"{args.config} = {'-'.join(map(str, sizes))}, batch {batch}, "
          f"{trainer.size:,} parameters (flat), kernels: {trainer.kernels}, update threads: "
          f"{trainer.threads}; medians of {args.rounds} blocks of {args.block} steps")
    print(f"BLAS: {describe(blas_info())}"
          + (f"; removed from the environment: {removed()}" if removed() else "") + "\n")
    print("| part of the step | in the step (ms) | alone, same arrays (ms) |")
    print("|---|---:|---:|")
    matmuls = sorted((k for k in parts if k.startswith("matmul")),
                     key=lambda k: int(k.split()[1].rstrip(":")))
    for i, k in enumerate(matmuls):
        print(f"| {k} | {ms(parts[k]):.3f} | {ms(floors[i]):.3f} |")
    for k in parts:
        if not k.startswith("matmul"):
            print(f"| {k} | {ms(parts[k]):.3f} | – |")
    step_ms = ms([s for s, _ in steps])
    floor_ms = ms([f for _, f in steps])
    ratio = statistics.median(f / s for s, f in steps)
    print(f"| **whole step** | **{step_ms:.3f}** | **{floor_ms:.3f}** "
          f"(floor / step, paired median: {ratio:.1%}) |")


if __name__ == "__main__":
    main()

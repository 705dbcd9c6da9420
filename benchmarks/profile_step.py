"""Where one training step of the NumPy fast path spends its time, against the GEMM-only floor.

Trains the benchmark's network (``--config`` S, M or L of ``mnist_throughput.py``: float32,
ReLU, softmax cross-entropy, Adam) on random MNIST-shaped data with xpnn's own fast trainer,
and times every part of each step from inside it: each matmul, the batch gather, the
element-wise hooks (bias + activation, its backward with the bias gradient, softmax-CE) and the
optimizer update. The floor replays the step's matmuls back to back, with the step's own
arrays. Steps and floor replays alternate in blocks of ``--block`` (this machine's speed drifts
within seconds), and every figure is a median over blocks.

    python benchmarks/profile_step.py --config L --rounds 10

``--threads 1 --clock cpu`` runs BLAS on one thread and times with the thread's CPU time
(``time.thread_time``): all of the step then runs in the timed thread, and CPU time counts only
the time it was scheduled, so the breakdown holds on a shared, loaded machine where wall-clock
figures do not (cache interference from the other processes remains). Two more figures:
``fit's own work per step`` (``model.fit`` of two epochs of ``B`` steps less one epoch, per
step, less the trainer's step and gather: the batch source, callbacks, checks and sums of the
training loop), and the Python calls per step (function calls the interpreter reports to
``sys.setprofile``; NumPy's ufuncs are not reported), a count that does not depend on load.

Timing wrappers cost about a microsecond per call, which matters only on S. Like
``mnist_throughput.py``, it runs on the BLAS kernels OpenBLAS picks for the processor (without
``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``; ``--keep-blas-env`` keeps them) and prints the
kernel set it ran.
"""

from __future__ import annotations

import argparse
import contextlib
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
from mnist_throughput import CONFIGS, xpnn_model  # noqa: E402

HOOKS = {"gather": "batch gather", "_bias_act": "bias + activation",
         "_softmax_ce": "softmax-CE", "_act_backward": "activation backward (+ bias grad)",
         "update": "optimizer update"}


clock = time.perf_counter     # or time.thread_time (--clock cpu)


class _TimedLib:
    """``numpy`` as the trainer sees it (``trainer.lib``), with matmul and sum timed."""

    def __init__(self, record):
        self.record, self.calls = record, []

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, a, b, out):
        t0 = clock()
        np.matmul(a, b, out=out)
        self.record(f"matmul {len(self.calls)}: {a.shape[0]}x{a.shape[1]} @ "
                    f"{b.shape[0]}x{b.shape[1]}", clock() - t0)
        self.calls.append((a, b, out))
        return out

    def sum(self, *args, **kwargs):
        t0 = clock()
        out = np.sum(*args, **kwargs)
        self.record("bias sum (last layer)", clock() - t0)
        return out


def _timed(fn, label, record):
    def wrapper(*args, **kwargs):
        t0 = clock()
        out = fn(*args, **kwargs)
        record(label, clock() - t0)
        return out
    return wrapper


def _python_calls(fn):
    """Python function calls (and calls of builtins) while ``fn()`` runs."""
    count = [0]

    def profile(frame, event, arg):
        if event in ("call", "c_call"):
            count[0] += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="L", choices=sorted(CONFIGS))
    p.add_argument("--rounds", type=int, default=10, help="blocks of steps (and of floors)")
    p.add_argument("--block", type=int, default=8, help="steps per block")
    p.add_argument("--samples", type=int, default=60_000)
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads (default: as fit chooses them, xpnn.threads)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: the thread's CPU time (with --threads 1: robust to load)")
    p.add_argument("--keep-blas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (default: run without them)")
    args = p.parse_args(argv)
    if argv is None:                     # run as a script: re-executed without the overrides
        run_on_default_kernels(__file__, sys.argv[1:], keep=args.keep_blas_env)

    global clock
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    limits = contextlib.nullcontext()
    if args.threads is not None:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(limits=args.threads, user_api="blas")
    with limits:
        _profile(args)


def _profile(args):
    sizes, batch = CONFIGS[args.config]
    rng = np.random.default_rng(0)
    X = rng.random((args.samples, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], args.samples)
    model = xpnn_model(sizes)
    model.n_threads = args.threads
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
        t0 = clock()
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
        step_s = (clock() - t0) / args.block
        calls = lib.calls                              # the last step's matmuls, replayed
        fl = defaultdict(float)
        t0 = clock()
        for _ in range(args.block):
            for i, (a, b, out) in enumerate(calls):
                t1 = clock()
                np.matmul(a, b, out=out)
                fl[i] += clock() - t1
        floor_s = (clock() - t0) / args.block
        fit_s, rows = [], perm[:args.block * batch]   # 2 epochs less 1: B steps, no set-up
        for epochs in (1, 2):
            t0 = clock()
            model.fit(X[rows], y[rows], epochs=epochs, batch_size=batch, verbose=0)
            fit_s.append(clock() - t0)
        fit_s = (fit_s[1] - fit_s[0]) / args.block
        if r == 0:
            continue
        steps.append((step_s, floor_s))
        parts["rest (Python, bookkeeping)"].append(step_s - sum(block.values()) / args.block)
        parts["fit's own work per step (loop, batch source, checks)"].append(fit_s - step_s)
        for k, v in block.items():
            parts[k].append(v / args.block)
        for i, v in fl.items():
            floors[i].append(v / args.block)

    def ms(values):
        return statistics.median(values) * 1e3

    def one_step():
        xb, tb = trainer.gather(X, y, perm[:batch])
        trainer.train_step(xb, tb)

    for name in HOOKS:                     # count the trainer's own calls, not the wrappers
        delattr(trainer, name)
    trainer.lib = np
    step_calls = _python_calls(one_step)
    fit_calls = _python_calls(lambda: model.fit(X[:64 * batch], y[:64 * batch], epochs=1,
                                                 batch_size=batch, verbose=0)) / 64
    clock_name = "thread CPU time" if args.clock == "cpu" else "wall time"
    print(f"{args.config} = {'-'.join(map(str, sizes))}, batch {batch}, "
          f"{trainer.size:,} parameters (flat), kernels: {trainer.kernels}, update threads: "
          f"{trainer.threads}; medians of {args.rounds} blocks of {args.block} steps, "
          f"{clock_name}")
    print(f"Python calls per step: {step_calls} in gather + train_step, {fit_calls:.0f} in "
          "fit (per step, set-up included)")
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

"""Training from a uint8 memmap, one batch at a time, against the same data converted up front.

Data: MNIST-shaped images ×``--copies`` (MNIST's 60,000 training images tiled, 600,000 × 784
uint8 by default, 449 MiB on disk) written once as a ``.npy`` memmap; synthetic images of the
same shape when MNIST is not found (or with ``--synthetic N``: N random images, for a quick
check). Network M (784-256-128-10, ReLU, softmax cross-entropy), Adam 1e-3, batch 128, shuffled,
float32, on ``--backend`` (default numpy; on cupy the resident data sits on the GPU and the
streamed batches are copied there from pinned memory while the previous step runs). Two ways to
train on it:

* ``resident``: the whole file in memory, converted by xpnn to one float32 array up front
  (1.8 GiB for 600,000 images), trained from memory;
* ``streamed``: ``np.load(mmap_mode="r")`` given to ``fit``: xpnn reads and converts each
  shuffled batch's rows from the file (the budget is set below the data's size).

Two measurements:

* **speed, paired in one process**: a model of each kind, same seed, alternating one epoch
  each for ``--rounds`` rounds after a warm-up round (the order swapped every round). Epochs
  seconds apart see the same machine, so the ratio streamed / resident of each round is not
  swamped by the drift of a shared machine between processes. Reported: the ratio per round and
  its median, samples/s of each epoch.
* **memory, one fresh process each**: ``np.load`` (whole, or as a memmap) and ``fit`` for one
  epoch; the peak resident memory of the process (``ru_maxrss``), and its samples/s.

The worker processes run without ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` (which some
machines set, and which make OpenBLAS pick slower kernels than it would for users); the
OpenBLAS kernel actually used is recorded (threadpoolctl).

    XPNN_DATA=../shared/data python benchmarks/streaming_throughput.py --rounds 5 --out runs/stream
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _blas_env import blas_info, clean_environ

try:
    import xpnn  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

def make_data(path, copies, data_home, synthetic=0):
    """``path``: the memmap (n, 784) uint8; labels next to it. Returns (n, source)."""
    try:
        if synthetic:
            raise LookupError(f"--synthetic {synthetic}")
        from xpnn.datasets import load_mnist
        (X, y), _ = load_mnist(data_home=data_home, download=False)
        X = np.asarray(X, dtype=np.uint8).reshape(len(X), -1)
        source = "MNIST training images"
    except Exception as exc:      # no data here: synthetic images of the same shape
        rng = np.random.default_rng(0)
        X = rng.integers(0, 256, size=(synthetic or 60_000, 784), dtype=np.uint8)
        y = rng.integers(0, 10, size=len(X))
        source = f"synthetic ({type(exc).__name__}: {exc})"
    n = len(X) * copies
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 784))
    for c in range(copies):
        mm[c * len(X):(c + 1) * len(X)] = X
    mm.flush()
    del mm
    np.save(str(path) + ".y.npy", np.tile(np.asarray(y, dtype=np.int64), copies))
    fd = os.open(path, os.O_RDONLY)
    try:            # written to disk before anything is timed: no writeback during the runs
        os.fsync(fd)
    finally:
        os.close(fd)
    return n, source


def _model(streamed, backend="numpy"):
    import xpnn

    model = xpnn.Sequential(xpnn.Dense(784, 256), xpnn.ReLU(), xpnn.Dense(256, 128), xpnn.ReLU(),
                            xpnn.Dense(128, 10), xpnn.Softmax(), backend=backend, seed=0)
    model.compile("crossentropy", xpnn.Adam(1e-3))
    model.resident_budget = 1 << 20 if streamed else 1 << 40     # bytes
    return model


class _Times(list):
    faults: list


def _epoch_timer(times):
    import xpnn

    times.faults = []

    class EpochTimer(xpnn.Callback):
        """Seconds of each epoch in ``times``; its page faults (minor: a page mapped, major:
        read from disk) in ``times.faults``."""

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            self.r0 = resource.getrusage(resource.RUSAGE_SELF)

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)
            r = resource.getrusage(resource.RUSAGE_SELF)
            times.faults.append({"minor": r.ru_minflt - self.r0.ru_minflt,
                                 "major": r.ru_majflt - self.r0.ru_majflt})

    return EpochTimer()


def paired_worker(args):
    """Both kinds in this process, one epoch each in turn (see the module doc)."""
    from xpnn.sources import streams

    mm = np.load(args.path, mmap_mode="r")
    y = np.load(args.path + ".y.npy")
    converted = np.asarray(mm, dtype=np.float32)    # what the resident fit trains from
    kinds = {"streamed": (_model(True, args.backend), mm),
             "resident": (_model(False, args.backend), converted)}
    for name, (model, X) in kinds.items():
        assert streams(model, X) == (name == "streamed"), name
    n = mm.shape[0]
    rounds = []
    for r in range(args.rounds + 1):                # round 0 warms both up
        order = ("streamed", "resident") if r % 2 == 0 else ("resident", "streamed")
        sps, faults = {}, {}
        for name in order:
            model, X = kinds[name]
            times = _Times()
            model.fit(X, y, epochs=1, batch_size=128, shuffle=True, verbose=0,
                      callbacks=[_epoch_timer(times)])
            sps[name] = n / times[0]
            faults[name] = times.faults[0]
        rounds.append({"round": r, "order": list(order), "samples_per_s": sps,
                       "ratio": sps["streamed"] / sps["resident"], "page_faults": faults})
    print(json.dumps({"rounds": rounds, "blas": blas_info()}))


def memory_worker(args):
    """One kind in a fresh process: one epoch, then the process's peak memory."""
    from xpnn.sources import streams

    streamed = args.worker == "memory-streamed"
    X = np.load(args.path, mmap_mode="r" if streamed else None)
    y = np.load(args.path + ".y.npy")
    model = _model(streamed, args.backend)
    times = _Times()
    model.fit(X, y, epochs=1, batch_size=128, verbose=0, callbacks=[_epoch_timer(times)])
    print(json.dumps({
        "impl": "streamed" if streamed else "resident", "streams": bool(streams(model, X)),
        "samples_per_s_first_epoch": X.shape[0] / times[0], "page_faults": times.faults[0],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "blas": blas_info()}))


def _run(args, env, kind, path):
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--path", path,
         "--rounds", str(args.rounds), "--backend", args.backend], env=env, capture_output=True,
        text=True,
        timeout=args.timeout)
    if proc.returncode:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="paired rounds (after a warm-up)")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--synthetic", type=int, default=0,
                    help="N random images instead of MNIST (a quick check)")
    ap.add_argument("--data-home", default=os.environ.get("XPNN_DATA"))
    ap.add_argument("--backend", default="numpy",
                    help="the models' backend (cupy: the resident data on the GPU, the "
                         "streamed batches copied there from pinned memory)")
    ap.add_argument("--out", default="runs/streaming")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--worker", choices=("paired", "memory-resident", "memory-streamed"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "paired":
        paired_worker(args)
        return
    if args.worker:
        memory_worker(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = clean_environ()              # workers run on the kernels OpenBLAS picks itself
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "images.npy")
        n, source = make_data(path, args.copies, args.data_home, args.synthetic)
        print(f"data: {n} x 784 uint8 ({n * 784 / 2**20:.0f} MiB), {source}", flush=True)
        memory = [_run(args, env, kind, path) for kind in ("memory-resident", "memory-streamed")]
        for rec in memory:
            print(f"{rec['impl']:9s} peak RSS {rec['peak_rss_mib']:,.0f} MiB  "
                  f"(first epoch {rec['samples_per_s_first_epoch']:,.0f} samples/s)", flush=True)
        paired = _run(args, env, "paired", path)
    timed = paired["rounds"][1:]
    for rec in paired["rounds"]:
        sps = rec["samples_per_s"]
        print(f"round {rec['round']}{' (warm-up)' if rec['round'] == 0 else ''}: "
              f"resident {sps['resident']:,.0f}  streamed {sps['streamed']:,.0f} samples/s  "
              f"ratio {rec['ratio']:.3f}  major page faults streamed "
              f"{rec['page_faults']['streamed']['major']}", flush=True)
    summary = {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "n_samples": n, "source": source, "backend": args.backend,
        "ratios_streamed_over_resident": [r["ratio"] for r in timed],
        "median_ratio": statistics.median(r["ratio"] for r in timed),
        "median_samples_per_s": {impl: statistics.median(
            r["samples_per_s"][impl] for r in timed) for impl in ("resident", "streamed")},
        "peak_rss_mib": {rec["impl"]: rec["peak_rss_mib"] for rec in memory},
        "blas": paired["blas"], "paired": paired["rounds"], "memory": memory}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("paired", "memory")},
                     indent=1))


if __name__ == "__main__":
    main()

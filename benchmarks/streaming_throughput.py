"""Training from a uint8 memmap, one batch at a time, against the same data converted up front.

Data: MNIST-shaped images ×``--copies`` (MNIST's 60,000 training images tiled, 600,000 × 784
uint8 by default, 449 MiB on disk) written once as a ``.npy`` memmap; synthetic images of the
same shape when MNIST is not found. Two implementations, each in a fresh process, interleaved for
``--rounds`` rounds:

* ``resident``: ``np.load`` the whole file and ``fit`` it: xpnn converts it to one float32 array
  up front (1.8 GiB) and trains from memory;
* ``streamed``: ``np.load(mmap_mode="r")`` and ``fit``: xpnn reads, converts and checks each
  shuffled batch's rows from the file (the budget is set below the data's size).

Network M (784-256-128-10, ReLU, softmax cross-entropy), Adam 1e-3, batch 128, shuffled, float32.
Reported per round: samples/s of the timed epochs (after a warm-up epoch; the first includes
conversion for ``resident``), the peak resident memory of the process (``ru_maxrss``) and the
ratio streamed / resident of the same round; then medians over rounds.

The worker processes run without ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` (which some
machines set, and which make OpenBLAS pick slower kernels than it would for users); the
OpenBLAS kernel actually used is recorded (threadpoolctl).

    XPNN_DATA=../shared/data python benchmarks/streaming_throughput.py --rounds 3 --out runs/stream
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

def make_data(path, copies, data_home):
    """``path``: the memmap (n, 784) uint8; labels next to it. Returns (n, source)."""
    try:
        from xpnn.datasets import load_mnist
        (X, y), _ = load_mnist(data_home=data_home, download=False)
        X = np.asarray(X, dtype=np.uint8).reshape(len(X), -1)
        source = "MNIST training images"
    except Exception as exc:      # no data here: synthetic images of the same shape
        rng = np.random.default_rng(0)
        X = rng.integers(0, 256, size=(60_000, 784), dtype=np.uint8)
        y = rng.integers(0, 10, size=60_000)
        source = f"synthetic ({type(exc).__name__})"
    n = len(X) * copies
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 784))
    for c in range(copies):
        mm[c * len(X):(c + 1) * len(X)] = X
    mm.flush()
    del mm
    np.save(str(path) + ".y.npy", np.tile(np.asarray(y, dtype=np.int64), copies))
    return n, source


def worker(args):
    import xpnn

    X = np.load(args.path, mmap_mode="r" if args.impl == "streamed" else None)
    y = np.load(args.path + ".y.npy")
    model = xpnn.Sequential(xpnn.Dense(784, 256), xpnn.ReLU(), xpnn.Dense(256, 128), xpnn.ReLU(),
                            xpnn.Dense(128, 10), xpnn.Softmax(), seed=0)
    model.compile("crossentropy", xpnn.Adam(1e-3))
    if args.impl == "streamed":
        model.resident_budget = 64 * 1024 * 1024
    else:
        model.resident_budget = 1 << 40
    times = []

    class Timer(xpnn.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    t0 = time.perf_counter()
    model.fit(X, y, epochs=args.epochs + 1, batch_size=128, verbose=0, callbacks=[Timer()])
    total = time.perf_counter() - t0
    n = X.shape[0]
    timed = times[1:]
    print(json.dumps({
        "impl": args.impl, "samples_per_s": n / statistics.median(timed),
        "epoch_s": times, "fit_s_including_conversion": total,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "blas": blas_info(), "streams": bool(model._streams(X))}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up)")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--data-home", default=os.environ.get("XPNN_DATA"))
    ap.add_argument("--out", default="runs/streaming")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--worker", choices=("resident", "streamed"), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.impl = args.worker
        worker(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = clean_environ()              # workers run on the kernels OpenBLAS picks itself
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "images.npy")
        n, source = make_data(path, args.copies, args.data_home)
        print(f"data: {n} x 784 uint8 ({n * 784 / 2**20:.0f} MiB), {source}", flush=True)
        for r in range(args.rounds):
            for impl in ("resident", "streamed"):
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", impl, "--path", path,
                     "--epochs", str(args.epochs)], env=env, capture_output=True, text=True,
                    timeout=args.timeout)
                if proc.returncode:
                    raise SystemExit(f"{impl} failed:\n{proc.stderr[-3000:]}")
                rec = json.loads(proc.stdout.strip().splitlines()[-1])
                rec["round"] = r
                records.append(rec)
                print(f"round {r} {impl:9s} {rec['samples_per_s']:>10,.0f} samples/s  "
                      f"peak RSS {rec['peak_rss_mib']:,.0f} MiB", flush=True)
    ratios = [s["samples_per_s"] / res["samples_per_s"] for res, s in zip(
        records[0::2], records[1::2], strict=True)]
    summary = {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "n_samples": n, "source": source, "ratios_streamed_over_resident": ratios,
        "median_ratio": statistics.median(ratios),
        "median_samples_per_s": {impl: statistics.median(
            r["samples_per_s"] for r in records if r["impl"] == impl)
            for impl in ("resident", "streamed")},
        "median_peak_rss_mib": {impl: statistics.median(
            r["peak_rss_mib"] for r in records if r["impl"] == impl)
            for impl in ("resident", "streamed")},
        "blas": records[0]["blas"], "records": records}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "records"}, indent=1))


if __name__ == "__main__":
    main()

"""What one shuffled batch costs to read from each kind of file ``fit`` streams from.

MNIST's 60,000 training images (synthetic images of the same shape when MNIST is not found),
written as a ``.npy`` memmap, an HDF5 dataset (contiguous, chunked, chunked with gzip) and a Zarr
array (chunks of 1,024 rows, Zarr's default codec). For each, ``xpnn.data.RowReader`` reads
and converts to float32 the batches of ``--batch-size`` rows that ``fit`` reads with
``shuffle=True`` (rows all over the file) and with ``shuffle="batch"`` (one run of consecutive
rows). Reported: milliseconds per batch, the median of ``--repeats`` stretches of ``--batches``
batches, after one batch of warm-up; the files are in the page cache (written just before) and
the memmap's pages are mapped first, as after a first epoch.

    XPNN_DATA=../shared/data python benchmarks/read_cost.py --out runs/read_cost
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import xpnn  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def images(data_home, synthetic=0):
    if not synthetic:
        try:
            from xpnn.datasets import load_mnist

            (X, _), _ = load_mnist(data_home=data_home, download=False)
            return np.asarray(X, dtype=np.uint8).reshape(len(X), -1), "MNIST training images"
        except Exception as exc:  # noqa: BLE001 - any reason: fall back to synthetic images
            reason = f"{type(exc).__name__}"
    else:
        reason = f"--synthetic {synthetic}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(synthetic or 60_000, 784), dtype=np.uint8), \
        f"synthetic ({reason})"


def sources(X, folder):
    """``{name: source}`` for the file kinds that are installed."""
    path = os.path.join(folder, "x.npy")
    mm = np.lib.format.open_memmap(path, "w+", np.uint8, X.shape)
    mm[...] = X
    mm.flush()
    out = {".npy memmap": np.load(path, mmap_mode="r")}
    try:
        import h5py
    except ImportError:
        pass
    else:
        f = h5py.File(os.path.join(folder, "x.h5"), "w")
        out["h5py, contiguous"] = f.create_dataset("contiguous", data=X)
        out["h5py, chunks (64, 784)"] = f.create_dataset("chunked", data=X,
                                                         chunks=(64, X.shape[1]))
        out["h5py, chunks (64, 784), gzip"] = f.create_dataset(
            "gzip", data=X, chunks=(64, X.shape[1]), compression="gzip")
    try:
        import zarr
    except ImportError:
        pass
    else:
        z = zarr.create_array(store=os.path.join(folder, "x.zarr"), shape=X.shape,
                              chunks=(1024, X.shape[1]), dtype="uint8")
        z[...] = X
        out["zarr, chunks (1024, 784), default codec"] = z
    return out


def ms_per_batch(source, perm, batch_size, batches, repeats):
    """Median over ``repeats`` of the mean time of ``batches`` consecutive batches of ``perm``
    (each repeat a later stretch of the epoch)."""
    from xpnn.data import RowReader

    reader = RowReader(source, np.float32)
    if isinstance(source, np.memmap):       # map its pages first, as after a first epoch
        int(np.asarray(source).sum(dtype=np.int64))
    reader.read(perm[:batch_size])                        # warm-up
    times = []
    for r in range(repeats):
        first = 1 + r * batches
        t0 = time.perf_counter()
        for i in range(first, first + batches):
            reader.read(perm[i * batch_size:(i + 1) * batch_size])
        times.append((time.perf_counter() - t0) / batches * 1e3)
    return float(np.median(times))


def main():
    from xpnn.data import batch_permutation

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=40, help="timed batches per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--synthetic", type=int, default=0, help="N random images instead of MNIST")
    ap.add_argument("--data-home", default=os.environ.get("XPNN_DATA"))
    ap.add_argument("--out", default="runs/read_cost")
    args = ap.parse_args()
    X, what = images(args.data_home, args.synthetic)
    n, bs = len(X), args.batch_size
    batches = max(1, min(args.batches, (n // bs - 1) // args.repeats))
    rng = np.random.default_rng(0)
    orders = {"shuffle=True": rng.permutation(n),
              'shuffle="batch"': batch_permutation(rng, n, bs)}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, source in sources(X, folder).items():
            row = {"source": name}
            for order, perm in orders.items():
                row[order] = ms_per_batch(source, perm, bs, batches, args.repeats)
            rows.append(row)
            print(f"{name}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in row.items()
                                          if k != "source"), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "data": what, "n": n, "batch_size": bs, "batches": batches, "repeats": args.repeats,
        "ms_per_batch": rows}, indent=1))


if __name__ == "__main__":
    main()

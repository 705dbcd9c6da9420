"""Whether the single-threaded parts of a small network's step gain from a second thread.

With two BLAS threads the matmuls of an S or M step (``mnist_throughput.py``'s networks) run
on both cores and the rest on one: the optimizer update (Adam: one Numba loop over the flat
buffers, divider-bound) and the batch gather (the batch's rows copied out of the training
set). This benchmark runs the real fast trainer's step with that work split in contiguous
chunks across threads, element-wise work whose results do not depend on the split (each
variant is checked to give the same bits as the serial step), and times it against today's
serial step:

* ``serial``: the update and the gather on the calling thread (what ``fit`` runs);
* ``update-numba`` / ``gather-numba``: a ``parallel=True`` Numba kernel, one chunk per
  thread (``prange``), on Numba's threading layer (``--layer``: ``omp``, ``workqueue``...;
  set before Numba is imported);
* ``update-pool`` / ``gather-pool``: the chunks on a Python thread pool (the kernels release
  the GIL), as xpnn splits the update of models from 500,000 parameters on.

    python benchmarks/elementwise_threads.py --config S --rounds 15
    python benchmarks/elementwise_threads.py --config S --layer workqueue --threads 1

Blocks of ``--block`` steps of each variant alternate; a round in which another process was
running (``/proc/stat``, as :func:`xpnn.threads.busy_cores` reads it) is dropped and counted
(at most ``--rounds`` of them; a round starts after at most 5 s of waiting for the others to
stop), and every figure is a median over the kept rounds (wall time). Like the other benchmarks it
runs on the BLAS kernels OpenBLAS picks for the processor and prints them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VARIANTS = ("serial", "update-numba", "gather-numba", "update-pool", "gather-pool")


def _kernels():
    """The parallel kernels (compiled on first use; Numba imported here, after ``--layer``)."""
    import numba
    import numpy as np

    from xpnn.fastpath.numba_kernels import adam_update

    @numba.njit(nogil=True, parallel=True, error_model="numpy")
    def adam_chunks(parts, p, g, m, v, b1, b2, omb1, omb2, eps_bc, step_bc, wd, decay):
        n = p.shape[0]
        step = -(-n // parts)
        ok = np.zeros(parts, np.bool_)
        for c in numba.prange(parts):
            lo, hi = min(c * step, n), min(c * step + step, n)
            ok[c] = adam_update(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], b1, b2, omb1, omb2,
                                eps_bc, step_bc, wd, decay)
        return ok.all()

    @numba.njit(nogil=True, parallel=True)
    def gather_chunks(parts, X, rows, out):
        n = rows.shape[0]
        step = -(-n // parts)
        for c in numba.prange(parts):
            for i in range(min(c * step, n), min(c * step + step, n)):
                src, dst = X[rows[i]], out[i]
                for j in range(src.shape[0]):
                    dst[j] = src[j]

    return numba, adam_chunks, gather_chunks


def _variants(trainer, parts):
    """``name -> (gather, update function for trainer._update_fn, update threads)``."""
    numba, adam_chunks, gather_chunks = _kernels()
    pool = ThreadPoolExecutor(max_workers=parts - 1, thread_name_prefix="bench-gather")
    serial_gather = type(trainer).gather.__get__(trainer)
    serial_update = trainer._update_fn[0]

    def gather_numba(X, t, rows):
        xb = trainer._xin[:rows.shape[0]]      # the trainer's batch buffer
        gather_chunks(parts, X, rows, xb)
        return xb, t.take(rows, 0)

    def gather_pool(X, t, rows):
        xb = trainer._xin[:rows.shape[0]]
        step = -(-rows.shape[0] // parts)
        futures = [pool.submit(X.take, rows[lo:lo + step], 0, xb[lo:lo + step], "clip")
                   for lo in range(step, rows.shape[0], step)]
        X.take(rows[:step], 0, xb[:step], "clip")
        for f in futures:
            f.result()
        return xb, t.take(rows, 0)

    def update_numba(lo, hi, lr, b1, b2, eps, wd, decoupled, step_size, bc2):
        c = trainer.dtype.type
        decay = 1.0 - lr * wd if wd and decoupled else 1.0
        return adam_chunks(parts, trainer.flat_p, trainer.flat_g, trainer.flat_m,
                           trainer.flat_v, c(b1), c(b2), c(1.0 - b1), c(1.0 - b2),
                           c(eps * bc2), c(step_size * bc2), c(0.0 if decoupled else wd),
                           c(decay))

    return numba, {
        "serial": (serial_gather, serial_update, 1),
        "update-numba": (serial_gather, update_numba, 1),
        "gather-numba": (gather_numba, serial_update, 1),
        "update-pool": (serial_gather, serial_update, parts),
        "gather-pool": (gather_pool, serial_update, 1),
    }


def _use(trainer, variant):
    gather, update, threads = variant
    trainer.gather = gather
    trainer._update_fn = (update, trainer._update_fn[1])
    trainer.threads = threads


def _same_bits(trainer, variants, X, y, rows):
    """Whether one step of every variant from the same state gives the serial step's bits."""
    import numpy as np
    saved = [a.copy() for a in (trainer.flat_p, trainer.flat_m, trainer.flat_v)]
    t, results = trainer.t, {}
    for name, variant in variants.items():
        for a, s in zip((trainer.flat_p, trainer.flat_m, trainer.flat_v), saved, strict=True):
            a[...] = s
        trainer.t = t
        _use(trainer, variant)
        xb, tb = trainer.gather(X, y, rows)
        trainer.train_step(xb, tb)
        results[name] = trainer.flat_p.copy()
    return {name: bool(np.array_equal(r.view(np.uint32), results["serial"].view(np.uint32)))
            for name, r in results.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="S", choices=("S", "M", "L"))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--block", type=int, default=16, help="steps per block")
    p.add_argument("--samples", type=int, default=60_000)
    p.add_argument("--threads", type=int, default=2, help="BLAS threads (and chunks)")
    p.add_argument("--layer", default=None, help="Numba's threading layer (default: its own)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--keep-blas-env", action="store_true")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _blas_env import blas_info, describe, removed, run_on_default_kernels
    if argv is None:
        run_on_default_kernels(__file__, sys.argv[1:], keep=args.keep_blas_env)
    if args.layer:
        os.environ["NUMBA_THREADING_LAYER"] = args.layer
    try:
        import xpnn  # noqa: F401
    except ImportError:  # run from a source checkout without installing
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np
    from mnist_throughput import CONFIGS, xpnn_model
    from threadpoolctl import threadpool_limits

    from xpnn.threads import _others_running

    sizes, batch = CONFIGS[args.config]
    rng = np.random.default_rng(0)
    X = rng.random((args.samples, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], args.samples)
    parts = max(2, args.threads)
    with threadpool_limits(limits=args.threads, user_api="blas"):
        model = xpnn_model(sizes)
        model.n_threads = args.threads
        model.fit(X[:4 * batch], y[:4 * batch], epochs=1, batch_size=batch, verbose=0)
        trainer = model._fastpath_trainer
        if trainer is None or trainer.kernels != "numba" or trainer.kind != "adam":
            raise SystemExit("needs the NumPy fast path with Numba (Adam)")
        numba, variants = _variants(trainer, parts)
        names = args.variants.split(",")
        variants = {k: variants[k] for k in ["serial", *[n for n in names if n != "serial"]]}
        bits = _same_bits(trainer, variants, X, y, rng.permutation(args.samples)[:batch])
        times, dropped, pos = {k: [] for k in variants}, 0, 0
        perm = rng.permutation(args.samples)
        kept = 0
        while kept <= args.rounds:                       # round 0 warms up
            deadline = time.monotonic() + 5
            while _others_running() and time.monotonic() < deadline:
                time.sleep(0.05)
            block = {}
            for name, variant in variants.items():
                _use(trainer, variant)
                t0 = time.perf_counter()
                for _ in range(args.block):
                    if pos + batch > args.samples:
                        pos = 0
                    xb, tb = trainer.gather(X, y, perm[pos:pos + batch])
                    trainer.train_step(xb, tb)
                    pos += batch
                block[name] = (time.perf_counter() - t0) / args.block
            if _others_running() and dropped < args.rounds:   # then keep it, counted
                dropped += 1
                continue
            if kept:
                for name, s in block.items():
                    times[name].append(s)
            kept += 1
    try:
        layer = numba.threading_layer()
    except ValueError:                                  # no parallel kernel ran
        layer = "not started"
    print(f"{args.config} = {'-'.join(map(str, sizes))}, batch {batch}, {trainer.size:,} "
          f"parameters; {args.threads} BLAS thread(s), {parts} chunks; Numba threading "
          f"layer: {layer}; medians of {args.rounds} rounds of {args.block} steps "
          f"({dropped} rounds dropped: another process ran; from {args.rounds} on, kept); "
          f"load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"BLAS: {describe(blas_info())}"
          + (f"; removed from the environment: {removed()}" if removed() else "") + "\n")
    print("| variant | step (µs) | / serial (paired median) | same bits as serial |")
    print("|---|---:|---:|---|")
    base = times["serial"]
    for name, ts in times.items():
        ratio = statistics.median(a / b for a, b in zip(ts, base, strict=True))
        print(f"| {name} | {statistics.median(ts) * 1e6:.1f} | {ratio:.3f} | "
              f"{'yes' if bits[name] else 'NO'} |")


if __name__ == "__main__":
    main()

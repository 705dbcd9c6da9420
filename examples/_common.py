"""Helpers shared by the example scripts.

* :func:`make_parser` builds the command line every example accepts: ``--backend``,
  ``--epochs``, ``--seed``, ``--data-home``, ``--out DIR`` and ``--quiet``.
* :func:`progress` is the library's :class:`xpnn.ProgressBar` set up for many short epochs:
  one bar per ``fit`` (one tick per epoch, the latest losses in the postfix), off when stderr
  is not a terminal or with ``--quiet``.
* :func:`write_metrics` writes ``DIR/metrics.json``; :func:`plot_learning_curves` and
  :func:`save_figure` write the PNG figures (matplotlib, Agg backend: no display needed).

The scripts run from a source checkout without installing xpnn: if ``import xpnn`` fails, the
repository root (the parent of this folder) is put on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files, never to a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

try:
    import xpnn  # noqa: E402
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import xpnn  # noqa: E402

from xpnn.datasets import DatasetNotFoundError  # noqa: E402

__all__ = [
    "DatasetNotFoundError", "Timer", "classification_summary", "ensemble_predict",
    "kfold_ensemble", "make_parser", "plot_confusion_matrix", "plot_learning_curves",
    "print_regression_report", "progress", "regression_metrics", "run_main", "save_figure",
    "write_metrics",
]

#: Resolution of the saved figures; small files for the README.
DPI = 100


def make_parser(description: str, *, epochs: int, batch_size: int | None = None,
                out: str) -> argparse.ArgumentParser:
    """The flags every example takes, with this example's defaults."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backend", default="numpy",
                        help="array backend: numpy, torch, array_api_strict, cupy "
                             f"(available here: {', '.join(xpnn.available_backends())})")
    parser.add_argument("--epochs", type=int, default=epochs, help="maximum training epochs")
    if batch_size is not None:
        parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the weights, shuffling and dropout (the data splits are "
                             "fixed)")
    parser.add_argument("--data-home", default=None,
                        help="data folder (default: $XPNN_DATA, else ~/.cache/xpnn)")
    parser.add_argument("--out", default=out, help="folder for metrics.json and the figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, less output")
    return parser


def add_ensemble_args(parser, *, hidden: str, dropout: float, lr: float = 1e-3,
                      patience: int = 30, members: int = 5, cv: int = 5) -> None:
    """Flags of the small tabular recipes (Titanic, Diabetes): network, early stopping, the
    k-fold ensemble and the cross-validation of the whole recipe."""
    parser.add_argument("--hidden", default=hidden, help="comma-separated hidden widths")
    parser.add_argument("--dropout", type=float, default=dropout)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--patience", type=int, default=patience)
    parser.add_argument("--members", type=int, default=members,
                        help="ensemble size = folds of the training part (1: one network, "
                             "20%% of the training rows for validation)")
    parser.add_argument("--cv", type=int, default=cv,
                        help="folds of the cross-validation of the whole recipe (0: skip)")


def run_main(main, argv=None):
    """Call ``main(argv)``; a missing dataset ends the script with its message and status 2."""
    try:
        return main(argv)
    except DatasetNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def progress(args, desc: str = "training") -> xpnn.ProgressBar:
    """The progress display for these command-line arguments: one bar over the epochs of a
    ``fit`` on a terminal, nothing with ``--quiet`` or in a log (``fit``'s own per-epoch lines
    are replaced too)."""
    return xpnn.ProgressBar(per="epoch", desc=desc, bar=False if args.quiet else None,
                            log_every=0)


class Timer:
    """``with Timer() as t: ...``; then ``t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(out, experiment: str, test: dict, *, epochs_run, backend: str,
                  seconds: float, args=None, **extra) -> dict:
    """Write ``out/metrics.json`` and return what was written.

    Keys: ``experiment``, ``test`` (the final test metrics), ``epochs_run``, ``backend``,
    ``seconds`` (wall-clock of the whole run), ``seed``, ``args``, ``machine``, plus ``extra``
    (e.g. ``train``/``validation`` metrics, cross-validation results).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "experiment": experiment,
        "test": test,
        "epochs_run": epochs_run,
        "backend": backend,
        "seconds": round(float(seconds), 3),
        "seed": getattr(args, "seed", None),
        **extra,
        "args": {k: v for k, v in vars(args).items()} if args is not None else None,
        "machine": {"platform": platform.platform(), "machine": platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "xpnn": xpnn.__version__},
    }
    record = _jsonable(record)
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def save_figure(fig, path) -> Path:
    """Save ``fig`` as a PNG and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


_LABELS = {"loss": "loss", "accuracy": "accuracy", "r2": "R²", "mae": "MAE"}


def plot_learning_curves(histories, path, title: str = "", keys=None,
                         best_epoch: int | None = None) -> Path:
    """Training and validation curves of one or more ``fit`` runs, one panel per quantity.

    ``histories`` is a History, a ``history.history`` dict, or a ``{label: history}`` dict to
    overlay several runs (e.g. one per optimizer).
    """
    if isinstance(histories, xpnn.History) or (
            isinstance(histories, dict) and "loss" in histories):
        histories = {"": histories}
    histories = {label: getattr(h, "history", h) for label, h in histories.items()}
    if keys is None:
        first = next(iter(histories.values()))
        keys = [k for k in first if not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for i, (label, hist) in enumerate(histories.items()):
            color = f"C{i}"
            prefix = f"{label} " if label else ""
            if key in hist:
                epochs = np.arange(1, len(hist[key]) + 1)
                ax.plot(epochs, hist[key], color=color, lw=1.4, label=f"{prefix}train")
            if f"val_{key}" in hist:
                epochs = np.arange(1, len(hist[f"val_{key}"]) + 1)
                ax.plot(epochs, hist[f"val_{key}"], color=color, lw=1.4, ls="--",
                        label=f"{prefix}validation")
        if best_epoch is not None:
            ax.axvline(best_epoch + 1, color="0.5", lw=0.8, ls=":", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(_LABELS.get(key, key))
        if key == "loss":
            values = [v for h in histories.values() for k in ("loss", "val_loss")
                      for v in h.get(k, []) if v is not None and v > 0]
            if values and max(values) / min(values) > 50:
                ax.set_yscale("log")
        if key == "r2":  # the first epochs can be far below 0; keep the useful range visible
            ax.set_ylim(bottom=max(ax.get_ylim()[0], -0.5))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def regression_metrics(y_true, y_pred) -> dict:
    """``{"mse", "mae", "r2"}`` of predictions in the target's own units."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    return {"mse": float(mean_squared_error(y_true, y_pred)),
            "mae": float(mean_absolute_error(y_true, y_pred)),
            "r2": float(r2_score(y_true, y_pred))}


def print_regression_report(parts: dict) -> None:
    """Print loss (MSE) and R² for each of ``{"train": {...}, "validation": {...}, ...}``."""
    width = max(len(name) for name in parts) + 2
    print(f"{'':<{width}}{'loss (MSE)':>12}{'MAE':>10}{'R²':>9}")
    for name, m in parts.items():
        print(f"{name:<{width}}{m['mse']:>12.4f}{m['mae']:>10.4f}{m['r2']:>9.4f}")


def kfold_ensemble(make_model, X, y, *, folds: int, epochs: int, batch_size: int, patience: int,
                   seed: int, stratify: bool = False, args=None, desc: str = "member"):
    """Train ``folds`` networks, each on all training rows but one fold, early-stopped on that
    fold (a "k-fold ensemble"; with ``folds=1`` one network with 20 % held out).

    Every training row is validation data for exactly one member, so the out-of-fold
    predictions give an honest validation score of the whole training part, and the test
    prediction is the mean of the members' predictions (less seed-to-seed noise than one small
    network on a small data set). The test set is never looked at.

    ``make_model(member_index)`` returns a compiled model.

    Returns
    -------
    dict
        ``models``, ``histories``, ``best_epochs`` (0-based), ``epochs_run``, and ``oof``: the
        out-of-fold predictions (NaN for rows never held out, only when ``folds=1``).
    """
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    n = len(X)
    if folds == 1:
        idx = np.arange(n)
        tr, va = train_test_split(idx, test_size=0.2, random_state=seed,
                                  stratify=y if stratify else None)
        splits = [(tr, va)]
    else:
        cls = StratifiedKFold if stratify else KFold
        splits = list(cls(folds, shuffle=True, random_state=seed).split(X, y))
    out = {"models": [], "histories": [], "best_epochs": [], "epochs_run": []}
    oof = None
    for i, (tr, va) in enumerate(splits):
        model = make_model(i)
        stop = xpnn.EarlyStopping(monitor="val_loss", patience=patience,
                                  restore_best_weights=True)
        shown = progress(args, f"{desc} {i + 1}/{len(splits)}") if args is not None \
            else xpnn.ProgressBar(bar=False, log_every=0)
        hist = model.fit(X[tr], y[tr], epochs=epochs, batch_size=batch_size,
                         validation_data=(X[va], y[va]), callbacks=[stop, shown])
        pred = xpnn.to_numpy(model.predict(X[va]))
        if oof is None:
            oof = np.full((n, *pred.shape[1:]), np.nan)
        oof[va] = pred
        out["models"].append(model)
        out["histories"].append(hist)
        out["best_epochs"].append(stop.best_epoch)
        out["epochs_run"].append(len(hist.epoch))
    out["oof"] = oof
    return out


def ensemble_predict(models, X) -> np.ndarray:
    """Mean of the members' predictions, as a NumPy array."""
    return np.mean([xpnn.to_numpy(m.predict(X)) for m in models], axis=0)


def classification_summary(y_true, y_pred, target_names=None, print_report: bool = True) -> dict:
    """Print scikit-learn's classification report; return accuracy, macro F1 and the report."""
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    if print_report:
        print(classification_report(y_true, y_pred, target_names=target_names, digits=4,
                                    zero_division=0))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "report": classification_report(y_true, y_pred, target_names=target_names,
                                            output_dict=True, zero_division=0)}


def plot_confusion_matrix(y_true, y_pred, path, labels=None, title: str = "") -> Path:
    """Confusion matrix (counts) as a PNG."""
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(labels) if labels is not None else int(max(np.max(y_true), np.max(y_pred))) + 1
    fig, ax = plt.subplots(figsize=(5.6, 5.0) if n > 2 else (3.6, 3.2))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=np.arange(n), display_labels=labels, ax=ax, colorbar=False,
        cmap="Blues", text_kw={"fontsize": 7})
    if labels is not None and max(len(str(s)) for s in labels) > 2:
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right", fontsize=7)
        plt.setp(ax.get_yticklabels(), fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)

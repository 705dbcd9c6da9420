"""Titanic: who survived? Binary classification of Kaggle's 891 passengers.

Split: ``train_test_split(test_size=0.2, random_state=42)`` (712 training, 179 test rows, as
in the paper). Features (``xpnn.datasets.titanic_preprocessor``, fitted on the training rows
only): Pclass, Age (missing ages filled with the median of the passenger's title), SibSp,
Parch, Fare, FamilySize = SibSp + Parch + 1, all standardised, plus one-hot Sex, Embarked and
the title from Name (Mr, Mrs, Miss, Master, Rare).

Model: a 5-fold ensemble of 16-32-16-1 networks (ReLU, Dropout 0.2, sigmoid output, binary
cross-entropy, Adam 1e-3, batch 32). Member k trains on four fifths of the training rows and
is early-stopped on the remaining fifth; the test prediction is the members' mean. The
"validation" figures are the out-of-fold predictions on the training rows.

``--cv 5`` also runs the whole recipe (preprocessing included) in a stratified 5-fold
cross-validation over all 891 rows and reports mean ± std.

    python examples/titanic.py --data-home ../shared/data

Writes ``OUT/metrics.json``, ``OUT/learning_curves.png`` and ``OUT/roc_curve.png``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from _common import (
    Timer,
    add_ensemble_args,
    classification_summary,
    ensemble_predict,
    kfold_ensemble,
    make_parser,
    plot_learning_curves,
    run_main,
    save_figure,
    write_metrics,
)

import xpnn
from xpnn.datasets import load_titanic, titanic_preprocessor


def parse_args(argv=None):
    parser = make_parser(__doc__.splitlines()[0], epochs=500, batch_size=32,
                         out="runs/titanic")
    add_ensemble_args(parser, hidden="32,16", dropout=0.2)
    return parser.parse_args(argv)


def train(raw_train, y_train, args, show=True):
    """Fit the preprocessing and the ensemble on training rows; returns (pipeline, result)."""
    pre = titanic_preprocessor().fit(raw_train)
    X = pre.transform(raw_train)
    hidden = [int(h) for h in args.hidden.split(",") if h]

    def make_model(i):
        model = xpnn.mlp([X.shape[1], *hidden, 1], output="sigmoid", dropout=args.dropout,
                         backend=args.backend, dtype="float32", seed=args.seed * 1000 + i)
        model.compile(loss="binary_crossentropy", optimizer=xpnn.Adam(args.lr),
                      metrics=["accuracy"])
        return model

    result = kfold_ensemble(make_model, X, y_train, folds=args.members, epochs=args.epochs,
                            batch_size=args.batch_size, patience=args.patience,
                            seed=args.seed, stratify=True, args=args if show else None,
                            desc="titanic member")
    return pre, result


def scores(y, p) -> dict:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    return {"accuracy": float(accuracy_score(y, p > 0.5)), "auc": float(roc_auc_score(y, p)),
            "loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))}


def cross_validate(raw, y, args) -> dict:
    from sklearn.model_selection import StratifiedKFold

    folds = []
    splitter = StratifiedKFold(args.cv, shuffle=True, random_state=42)
    for tr, te in splitter.split(raw, y):
        pre, result = train(raw.iloc[tr], y[tr], args, show=False)
        p = ensemble_predict(result["models"], pre.transform(raw.iloc[te])).ravel()
        folds.append(scores(y[te], p))
    out = {"folds": folds, "splitter": f"StratifiedKFold({args.cv}, shuffle=True, "
                                       "random_state=42)"}
    for key in ("accuracy", "auc"):
        values = [f[key] for f in folds]
        out[f"{key}_mean"], out[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
    return out


def plot_roc(y, p, path, auc, title="") -> None:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot(fpr, tpr, lw=1.8, label=f"xpnn ensemble (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def main(argv=None) -> dict:
    from sklearn.model_selection import train_test_split

    args = parse_args(argv)
    with Timer() as total:
        raw, y = load_titanic(data_home=args.data_home, as_frame=True)
        y = y.to_numpy()
        raw_train, raw_test, y_train, y_test = train_test_split(
            raw, y, test_size=0.2, random_state=42)
        with Timer() as fit_time:
            pre, result = train(raw_train, y_train, args)
        X_test = pre.transform(raw_test)
        p_test = ensemble_predict(result["models"], X_test).ravel()
        p_train = ensemble_predict(result["models"], pre.transform(raw_train)).ravel()
        oof = result["oof"].ravel()
        held = ~np.isnan(oof)
        parts = {"train": scores(y_train, p_train), "validation": scores(y_train[held], oof[held]),
                 "test": scores(y_test, p_test)}
        print(f"Titanic: {len(result['models'])} member(s), epochs run "
              f"{result['epochs_run']}, {fit_time.seconds:.1f} s, backend {args.backend}")
        print(f"test set ({len(y_test)} passengers):")
        classification_summary(y_test, (p_test > 0.5).astype(int),
                               target_names=["died", "survived"])
        for name, s in parts.items():
            print(f"{name:<11} accuracy {s['accuracy']:.4f}  AUC {s['auc']:.4f}  "
                  f"loss {s['loss']:.4f}")
        cv = None
        if args.cv:
            with Timer() as cv_time:
                cv = cross_validate(raw, y, args)
            print(f"{args.cv}-fold cross-validation of the recipe ({cv_time.seconds:.1f} s): "
                  f"accuracy {cv['accuracy_mean']:.4f} ± {cv['accuracy_std']:.4f}, "
                  f"AUC {cv['auc_mean']:.4f} ± {cv['auc_std']:.4f}")

        plot_roc(y_test, p_test, f"{args.out}/roc_curve.png", parts["test"]["auc"],
                 title=f"Titanic test set ({len(y_test)} passengers)")
        plot_learning_curves({f"m{i + 1}": h for i, h in enumerate(result["histories"])},
                             f"{args.out}/learning_curves.png",
                             title="Titanic: ensemble members (dashed: held-out fold)")
    return write_metrics(args.out, "Titanic", parts["test"], epochs_run=max(result["epochs_run"]),
                         backend=args.backend, seconds=total.seconds, args=args,
                         member_epochs=result["epochs_run"],
                         best_epochs=[e + 1 for e in result["best_epochs"]],
                         train=parts["train"], validation=parts["validation"], cv=cv)


if __name__ == "__main__":
    run_main(main)

"""Diabetes: disease progression one year after baseline (regression, 442 patients).

scikit-learn's bundled data (10 features: age, sex, BMI, blood pressure, six serum
measurements). Split: ``train_test_split(test_size=0.2, random_state=42)`` (353 training, 89
test rows). Features and target are standardised with statistics of the training rows.

Model: a 5-fold ensemble of 10-64-1 networks (ReLU, Dropout 0.5, MSE loss, Adam 1e-3, batch
32). Member k trains on four fifths of the training rows and is early-stopped (patience 30) on
the remaining fifth; the test prediction is the members' mean. With 353 rows one network's
test R² moves by ±0.05 from seed to seed; averaging five removes most of that. The
"validation" figures are the out-of-fold predictions on the training rows.

``--cv 5`` also runs the whole recipe in a 5-fold cross-validation over all 442 rows
(``KFold(5, shuffle=True, random_state=42)``) and reports mean ± std, next to ordinary least
squares on the same folds.

    python examples/diabetes.py

Writes ``OUT/metrics.json``, ``OUT/learning_curves.png`` and ``OUT/predictions.png``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from _common import (
    Timer,
    add_ensemble_args,
    ensemble_predict,
    kfold_ensemble,
    make_parser,
    plot_learning_curves,
    print_regression_report,
    regression_metrics,
    run_main,
    save_figure,
    write_metrics,
)

import xpnn
from xpnn.datasets import load_diabetes


def parse_args(argv=None):
    parser = make_parser(__doc__.splitlines()[0], epochs=1000, batch_size=32,
                         out="runs/diabetes")
    add_ensemble_args(parser, hidden="64", dropout=0.5)
    return parser.parse_args(argv)


class Standardised:
    """Fit-on-train standardisation of X and y; ``model`` predictions back in y's units."""

    def __init__(self, X, y):
        self.x_mean, self.x_std = X.mean(axis=0), X.std(axis=0)
        self.y_mean, self.y_std = float(y.mean()), float(y.std())

    def X(self, X):
        return (X - self.x_mean) / self.x_std

    def y(self, y):
        return ((y - self.y_mean) / self.y_std).reshape(-1, 1)

    def predict(self, models, X):
        return ensemble_predict(models, self.X(X)).ravel() * self.y_std + self.y_mean


def train(X_train, y_train, args, show=True):
    """Standardise with the training rows, then train the ensemble."""
    scale = Standardised(X_train, y_train)
    hidden = [int(h) for h in args.hidden.split(",") if h]

    def make_model(i):
        model = xpnn.mlp([X_train.shape[1], *hidden, 1], output=None, dropout=args.dropout,
                         backend=args.backend, dtype="float32", seed=args.seed * 1000 + i)
        model.compile(loss="mse", optimizer=xpnn.Adam(args.lr), metrics=["r2"])
        return model

    result = kfold_ensemble(make_model, scale.X(X_train), scale.y(y_train), folds=args.members,
                            epochs=args.epochs, batch_size=args.batch_size,
                            patience=args.patience, seed=args.seed,
                            args=args if show else None, desc="diabetes member")
    return scale, result


def cross_validate(X, y, args) -> dict:
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold

    r2, r2_linear = [], []
    for tr, te in KFold(args.cv, shuffle=True, random_state=42).split(X):
        scale, result = train(X[tr], y[tr], args, show=False)
        r2.append(float(r2_score(y[te], scale.predict(result["models"], X[te]))))
        linear = LinearRegression().fit(X[tr], y[tr])
        r2_linear.append(float(r2_score(y[te], linear.predict(X[te]))))
    return {"splitter": f"KFold({args.cv}, shuffle=True, random_state=42)", "r2_folds": r2,
            "r2_mean": float(np.mean(r2)), "r2_std": float(np.std(r2)),
            "linear_regression_r2_mean": float(np.mean(r2_linear)),
            "linear_regression_r2_std": float(np.std(r2_linear))}


def plot_predictions(y_true, y_pred, path, r2, title="") -> None:
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(y_true, y_pred, s=14, alpha=0.7)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="0.5", ls="--", lw=1)
    ax.set_xlabel("true value")
    ax.set_ylabel("predicted value")
    ax.set_title(f"{title} (R² = {r2:.3f})", fontsize=10)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def main(argv=None) -> dict:
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import train_test_split

    args = parse_args(argv)
    with Timer() as total:
        X, y = load_diabetes()
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2,
                                                            random_state=42)
        with Timer() as fit_time:
            scale, result = train(X_train, y_train, args)
        oof = result["oof"].ravel() * scale.y_std + scale.y_mean
        held = ~np.isnan(oof)
        p_test = scale.predict(result["models"], X_test)
        parts = {"train": regression_metrics(y_train, scale.predict(result["models"], X_train)),
                 "validation": regression_metrics(y_train[held], oof[held]),
                 "test": regression_metrics(y_test, p_test)}
        linear = regression_metrics(y_test, LinearRegression().fit(X_train, y_train)
                                    .predict(X_test))
        print(f"Diabetes: {len(result['models'])} member(s), epochs run "
              f"{result['epochs_run']}, {fit_time.seconds:.1f} s, backend {args.backend}")
        print_regression_report({**parts, "(linear reg., test)": linear})
        cv = None
        if args.cv:
            with Timer() as cv_time:
                cv = cross_validate(X, y, args)
            print(f"{args.cv}-fold cross-validation of the recipe ({cv_time.seconds:.1f} s): "
                  f"R² {cv['r2_mean']:.4f} ± {cv['r2_std']:.4f} (linear regression "
                  f"{cv['linear_regression_r2_mean']:.4f} ± {cv['linear_regression_r2_std']:.4f})")

        plot_learning_curves({f"m{i + 1}": h for i, h in enumerate(result["histories"])},
                             f"{args.out}/learning_curves.png", keys=["loss", "r2"],
                             title="Diabetes: ensemble members, standardised target "
                                   "(dashed: held-out fold)")
        plot_predictions(y_test, p_test, f"{args.out}/predictions.png", parts["test"]["r2"],
                         title="Diabetes test set")
    return write_metrics(args.out, "Diabetes", parts["test"], epochs_run=max(result["epochs_run"]),
                         backend=args.backend, seconds=total.seconds, args=args,
                         member_epochs=result["epochs_run"],
                         best_epochs=[e + 1 for e in result["best_epochs"]],
                         train=parts["train"], validation=parts["validation"],
                         linear_regression_test=linear, cv=cv)


if __name__ == "__main__":
    run_main(main)

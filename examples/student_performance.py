"""Student Performance: predict the Performance Index (10-100) of 10,000 students (regression).

Kaggle's "Student Performance (Multiple Linear Regression)" data: hours studied, previous
scores, extracurricular activities (yes/no), sleep hours, sample papers practised. Split:
``train_test_split(test_size=0.2, random_state=42)``. Features and target are standardised with
statistics of the training rows.

Model: 5-16-1 (ReLU, MSE loss), Adam 3e-3 with a cosine decay to 0 over 200 epochs, batch 64.
The schedule ends at lr = 0, so the weights settle without early stopping:

1. a curve run trains on 90 % of the training rows and watches the other 10 % (``random_state=0``)
   per epoch: the learning curves and the R² curve show that the fixed schedule does not
   overfit;
2. the final model is an ensemble of ``--members`` networks (seeds ``1000 seed + k``,
   k = 0, 1, ...) trained on all training rows with that schedule; their mean is the prediction.

The data are very nearly linear (ordinary least squares reaches R² 0.9890 on the test rows; the
target is rounded to whole points), so a small network is enough and a larger one only fits
noise; averaging a few seeds removes most of what SGD noise is left.

    python examples/student_performance.py --data-home ../shared/data

Writes ``OUT/metrics.json``, ``OUT/learning_curves.png`` and ``OUT/r2_curve.png``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from _common import (
    Timer,
    make_parser,
    plot_learning_curves,
    print_regression_report,
    progress,
    regression_metrics,
    run_main,
    save_figure,
    write_metrics,
)

import xpnn
from xpnn.datasets import load_student_performance


def parse_args(argv=None):
    parser = make_parser(__doc__.splitlines()[0], epochs=200, batch_size=64,
                         out="runs/student_performance")
    parser.add_argument("--hidden", default="16", help="comma-separated hidden widths")
    parser.add_argument("--lr", type=float, default=3e-3, help="initial Adam learning rate")
    parser.add_argument("--members", type=int, default=5,
                        help="networks in the final ensemble (trained on all training rows)")
    return parser.parse_args(argv)


def plot_r2_curve(history, path, linear_val_r2, best_epoch) -> None:
    """R² on the training and validation rows per epoch, zoomed on the top of the range."""
    train, val = history.history["r2"], history.history["val_r2"]
    epochs = np.arange(1, len(train) + 1)
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.plot(epochs, train, lw=1.4, label="train")
    ax.plot(epochs, val, lw=1.4, ls="--", label="validation")
    ax.axhline(linear_val_r2, color="C3", lw=1, ls=":",
               label=f"linear regression, validation ({linear_val_r2:.4f})")
    ax.axvline(best_epoch + 1, color="0.5", lw=0.8, ls=":", label="best epoch")
    top = max(max(train), max(val), linear_val_r2)
    ax.set_ylim(top - 0.02, top + 0.002)
    ax.set_xlabel("epoch")
    ax.set_ylabel("R²")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Student Performance: R² per epoch", fontsize=10)
    save_figure(fig, path)


def main(argv=None) -> dict:
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import train_test_split

    args = parse_args(argv)
    with Timer() as total:
        X, y = load_student_performance(data_home=args.data_home)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2,
                                                            random_state=42)
        X_fit, X_val, y_fit, y_val = train_test_split(X_train, y_train, test_size=0.1,
                                                      random_state=0)
        x_mean, x_std = X_fit.mean(axis=0), X_fit.std(axis=0)
        y_mean, y_std = float(y_fit.mean()), float(y_fit.std())

        def sx(a):
            return (a - x_mean) / x_std

        def sy(a):
            return ((a - y_mean) / y_std).reshape(-1, 1)

        hidden = [int(h) for h in args.hidden.split(",") if h]

        def train(X_rows, y_rows, seed, validation=None, callbacks=()):
            model = xpnn.mlp([X.shape[1], *hidden, 1], output=None, backend=args.backend,
                             dtype="float32", seed=seed)
            # Cosine decay reaching 0 in the last epoch.
            decay = xpnn.schedules.CosineDecay(args.lr, max(args.epochs - 1, 1))
            model.compile(loss="mse", optimizer=xpnn.Adam(decay), metrics=["r2"])
            history = model.fit(sx(X_rows), sy(y_rows), epochs=args.epochs,
                                batch_size=args.batch_size, validation_data=validation,
                                callbacks=callbacks, verbose=0)
            return model, history

        with Timer() as fit_time:
            # 1. curve run: 90 % of the training rows, the other 10 % watched every epoch
            curve_model, history = train(X_fit, y_fit, args.seed, (sx(X_val), sy(y_val)),
                                         [progress(args, "student (curves)")])
            # 2. final ensemble on all training rows
            members = [train(X_train, y_train, args.seed * 1000 + k)[0]
                       for k in range(args.members)]

        def predict(models, a):
            mean = sum(xpnn.to_numpy(m.predict(sx(a))).ravel() for m in models) / len(models)
            return mean * y_std + y_mean

        parts = {"train": regression_metrics(y_train, predict(members, X_train)),
                 "validation (curve run)": regression_metrics(y_val,
                                                              predict([curve_model], X_val)),
                 "test": regression_metrics(y_test, predict(members, X_test))}
        best_epoch = int(np.argmin(history.history["val_loss"]))
        linear_val = LinearRegression().fit(X_fit, y_fit)
        linear = LinearRegression().fit(X_train, y_train)
        linear_parts = {"validation": regression_metrics(y_val, linear_val.predict(X_val)),
                        "test": regression_metrics(y_test, linear.predict(X_test))}
        print(f"Student Performance: {args.members} networks x {args.epochs} epochs (plus a "
              f"curve run) in {fit_time.seconds:.1f} s, backend {args.backend}")
        print_regression_report({**parts, "(linear reg., test)": linear_parts["test"]})

        plot_learning_curves(history, f"{args.out}/learning_curves.png", keys=["loss"],
                             title="Student Performance (standardised target)",
                             best_epoch=best_epoch)
        plot_r2_curve(history, f"{args.out}/r2_curve.png", linear_parts["validation"]["r2"],
                      best_epoch)
    return write_metrics(args.out, "Student Performance", parts["test"],
                         epochs_run=len(history.epoch), backend=args.backend,
                         seconds=total.seconds, args=args, members=args.members,
                         train=parts["train"], validation=parts["validation (curve run)"],
                         linear_regression=linear_parts)


if __name__ == "__main__":
    run_main(main)

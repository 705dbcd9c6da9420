"""Optimizers compared: SGD with momentum, RMSprop and Adam on the Diabetes regression.

The paper's figure: the same 10-64-1 network (ReLU, Dropout 0.5, MSE loss on the standardised
target, batch 32), from the same initial weights, trained by each optimizer for the same number
of epochs.
Split: ``train_test_split(test_size=0.2, random_state=42)``, then 20 % of the training rows
(``random_state=0``) for validation. Each run keeps the weights of its best validation epoch,
which are scored on the test rows.

    python examples/optimizers.py

Writes ``OUT/metrics.json``, ``OUT/optimizers.png`` (training and validation loss per epoch)
and ``OUT/learning_curves.png`` (loss and R²).
"""

from __future__ import annotations

from _common import (
    Timer,
    make_parser,
    plot_learning_curves,
    progress,
    regression_metrics,
    run_main,
    write_metrics,
)

import xpnn
from xpnn.datasets import load_diabetes


def parse_args(argv=None):
    parser = make_parser(__doc__.splitlines()[0], epochs=150, batch_size=32,
                         out="runs/optimizers")
    parser.add_argument("--hidden", default="64", help="comma-separated hidden widths")
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--sgd-lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--rmsprop-lr", type=float, default=1e-3)
    parser.add_argument("--adam-lr", type=float, default=1e-3)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    from sklearn.model_selection import train_test_split

    args = parse_args(argv)
    optimizers = {
        f"SGD+momentum {args.momentum:g}": lambda: xpnn.SGD(args.sgd_lr, momentum=args.momentum),
        "RMSprop": lambda: xpnn.RMSprop(args.rmsprop_lr),
        "Adam": lambda: xpnn.Adam(args.adam_lr),
    }
    with Timer() as total:
        X, y = load_diabetes()
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2,
                                                            random_state=42)
        X_fit, X_val, y_fit, y_val = train_test_split(X_train, y_train, test_size=0.2,
                                                      random_state=0)
        x_mean, x_std = X_fit.mean(axis=0), X_fit.std(axis=0)
        y_mean, y_std = float(y_fit.mean()), float(y_fit.std())

        def sx(a):
            return (a - x_mean) / x_std

        def sy(a):
            return ((a - y_mean) / y_std).reshape(-1, 1)

        hidden = [int(h) for h in args.hidden.split(",") if h]
        histories, results = {}, {}
        for name, make_optimizer in optimizers.items():
            model = xpnn.mlp([X.shape[1], *hidden, 1], output=None, dropout=args.dropout,
                             backend=args.backend, dtype="float32", seed=args.seed)
            model.compile(loss="mse", optimizer=make_optimizer(), metrics=["r2"])
            # patience = epochs: never stops early, but ends with the best validation weights
            best = xpnn.EarlyStopping(monitor="val_loss", patience=args.epochs,
                                      restore_best_weights=True)
            with Timer() as fit_time:
                histories[name] = model.fit(
                    sx(X_fit), sy(y_fit), epochs=args.epochs, batch_size=args.batch_size,
                    validation_data=(sx(X_val), sy(y_val)),
                    callbacks=[best, progress(args, name)])

            def predict(a, model=model):
                return xpnn.to_numpy(model.predict(sx(a))).ravel() * y_std + y_mean

            results[name] = {
                "best_epoch": best.best_epoch + 1, "seconds": fit_time.seconds,
                "optimizer": model.optimizer.get_config(),
                "train": regression_metrics(y_fit, predict(X_fit)),
                "validation": regression_metrics(y_val, predict(X_val)),
                "test": regression_metrics(y_test, predict(X_test)),
            }

        print(f"Diabetes, {args.hidden.replace(',', '-')} network, {args.epochs} epochs, "
              f"backend {args.backend}; weights of the best validation epoch:")
        print(f"{'optimizer':<20}{'best epoch':>11}{'val loss':>10}{'val R²':>8}"
              f"{'test R²':>9}{'seconds':>9}")
        for name, r in results.items():
            val_loss = min(histories[name].history["val_loss"])
            print(f"{name:<20}{r['best_epoch']:>11}{val_loss:>10.4f}"
                  f"{r['validation']['r2']:>8.4f}{r['test']['r2']:>9.4f}{r['seconds']:>9.1f}")

        plot_learning_curves(histories, f"{args.out}/optimizers.png", keys=["loss"],
                             title="Diabetes: training (solid) and validation (dashed) loss")
        plot_learning_curves(histories, f"{args.out}/learning_curves.png", keys=["loss", "r2"],
                             title="Diabetes: SGD+momentum vs RMSprop vs Adam")
    return write_metrics(args.out, "Optimizers (Diabetes)",
                         {name: r["test"] for name, r in results.items()},
                         epochs_run=args.epochs, backend=args.backend, seconds=total.seconds,
                         args=args, optimizers=results)


if __name__ == "__main__":
    run_main(main)

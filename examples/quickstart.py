"""Quickstart: train an MLP on scikit-learn's bundled 8x8 digits, offline, in seconds.

1,797 images of handwritten digits (8x8 pixels, 0-16), shipped with scikit-learn, so nothing is
downloaded. Split: ``train_test_split(test_size=0.2, random_state=42, stratify=y)``; 10 % of the
training images held out for early stopping. Model: 64-128-64-10 (ReLU, Dropout 0.2, softmax),
Adam 1e-3, batch 32, up to 100 epochs.

    python examples/quickstart.py

Prints scikit-learn's classification report; writes ``OUT/metrics.json``,
``OUT/learning_curves.png`` and ``OUT/confusion_matrix.png``.
"""

from __future__ import annotations

import numpy as np
from _common import (
    Timer,
    classification_summary,
    make_parser,
    plot_confusion_matrix,
    plot_learning_curves,
    progress,
    run_main,
    write_metrics,
)

import xpnn


def parse_args(argv=None):
    parser = make_parser(__doc__.splitlines()[0], epochs=100, batch_size=32,
                         out="runs/quickstart")
    parser.add_argument("--patience", type=int, default=10)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    args = parse_args(argv)
    with Timer() as total:
        X, y = load_digits(return_X_y=True)
        X = X.astype(np.float32) / 16.0
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.2, random_state=42, stratify=y)
        X_fit, X_val, y_fit, y_val = train_test_split(
            X_train, y_train, test_size=0.1, random_state=0, stratify=y_train)

        model = xpnn.mlp([64, 128, 64, 10], output="softmax", dropout=0.2,
                         backend=args.backend, dtype="float32", seed=args.seed)
        model.compile(loss="crossentropy", optimizer=xpnn.Adam(1e-3), metrics=["accuracy"])
        if not args.quiet:
            model.summary()
        stop = xpnn.EarlyStopping(monitor="val_loss", patience=args.patience,
                                  restore_best_weights=True)
        history = model.fit(X_fit, y_fit, epochs=args.epochs, batch_size=args.batch_size,
                            validation_data=(X_val, y_val),
                            callbacks=[stop, progress(args, "digits")])

        test = model.evaluate(X_test, y_test)
        y_pred = np.argmax(xpnn.to_numpy(model.predict(X_test)), axis=1)
        print(f"8x8 digits: {len(history.epoch)} epochs (best {stop.best_epoch + 1}), "
              f"backend {args.backend}; test set of {len(y_test)} images:")
        summary = classification_summary(y_test, y_pred)
        plot_learning_curves(history, f"{args.out}/learning_curves.png",
                             title="8x8 digits: 64-128-64-10 MLP", best_epoch=stop.best_epoch)
        plot_confusion_matrix(y_test, y_pred, f"{args.out}/confusion_matrix.png",
                              title=f"8x8 digits test set: accuracy {summary['accuracy']:.4f}")
    print(f"done in {total.seconds:.1f} s; figures and metrics.json in {args.out}/")
    return write_metrics(args.out, "8x8 digits (quickstart)",
                         {"accuracy": summary["accuracy"], "loss": test["loss"],
                          "macro_f1": summary["macro_f1"]},
                         epochs_run=len(history.epoch), backend=args.backend,
                         seconds=total.seconds, args=args, best_epoch=stop.best_epoch + 1,
                         report=summary["report"])


if __name__ == "__main__":
    run_main(main)

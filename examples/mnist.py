"""MNIST or Fashion-MNIST with a multilayer perceptron.

The paper's experiment: 28x28 images, flattened to 784 inputs, classified into 10 classes.
Recipe: pixels scaled to [0, 1]; 784-1024-512-10 with ReLU, Dropout on the inputs and after
each hidden layer (MNIST: 0.2 and 0.5, as in Srivastava et al., 2014; Fashion-MNIST, whose
classes overlap more and which the network underfits at that rate: 0.1 and 0.3); Adam 1e-3 with
a cosine decay to 0 over 30 epochs; batch 128; 5,000 validation images split off the 60,000
training images (stratified) for early stopping on the validation accuracy (the weights of the
best epoch are kept); the 10,000 test images are only used at the end.

    python examples/mnist.py --data-home ../shared/data                  # digits
    python examples/mnist.py --kind fashion --data-home ../shared/data   # Fashion-MNIST

Writes ``OUT/metrics.json``, ``OUT/learning_curves.png`` and ``OUT/confusion_matrix.png``.
"""

from __future__ import annotations

import numpy as np
from _common import (
    Timer,
    classification_summary,
    make_parser,
    plot_confusion_matrix,
    plot_learning_curves,
    run_main,
    write_metrics,
)

import xpnn
from xpnn.datasets import FASHION_MNIST_CLASSES, load_mnist

#: Defaults that differ between the two data sets.
RECIPES = {
    "mnist": {"dropout": 0.5, "input_dropout": 0.2},
    "fashion": {"dropout": 0.3, "input_dropout": 0.1},
}


def parse_args(argv=None):
    parser = make_parser(__doc__.splitlines()[0], epochs=30, batch_size=128, out="runs/mnist")
    parser.add_argument("--kind", choices=["mnist", "fashion"], default="mnist")
    parser.add_argument("--hidden", default="1024,512",
                        help="comma-separated hidden layer widths")
    parser.add_argument("--dropout", type=float, default=None,
                        help="after each hidden layer (default: the --kind's recipe)")
    parser.add_argument("--input-dropout", type=float, default=None,
                        help="on the input pixels (default: the --kind's recipe)")
    parser.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate")
    parser.add_argument("--val-size", type=int, default=5000,
                        help="training images held out for early stopping")
    parser.add_argument("--monitor", default="val_accuracy",
                        help="early-stopping quantity (val_accuracy or val_loss)")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N training and N/5 test images (smoke tests)")
    args = parser.parse_args(argv)
    for name, value in RECIPES[args.kind].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.kind == "fashion" and args.out == "runs/mnist":
        args.out = "runs/fashion"
    return args


def main(argv=None) -> dict:
    from sklearn.model_selection import train_test_split

    args = parse_args(argv)
    with Timer() as total:
        (X, y), (X_test, y_test) = load_mnist(args.kind, data_home=args.data_home)
        if args.limit:
            X, y = X[:args.limit], y[:args.limit]
            X_test, y_test = X_test[:max(args.limit // 5, 100)], y_test[:max(args.limit // 5, 100)]
        X = X.astype(np.float32) / 255.0
        X_test = X_test.astype(np.float32) / 255.0
        val_size = min(args.val_size, len(X) // 5)
        X_train, X_val, y_train, y_val = train_test_split(
            X, y, test_size=val_size, random_state=0, stratify=y)

        hidden = [int(h) for h in args.hidden.split(",") if h]
        model = xpnn.mlp([784, *hidden, 10], output="softmax", dropout=args.dropout,
                         input_dropout=args.input_dropout, backend=args.backend,
                         dtype="float32", seed=args.seed)
        # Cosine decay reaching 0 in the last epoch.
        decay = xpnn.schedules.CosineDecay(args.lr, max(args.epochs - 1, 1))
        model.compile(loss="crossentropy", optimizer=xpnn.Adam(decay), metrics=["accuracy"])
        if not args.quiet:
            model.summary()
            print(f"train {len(X_train)}, validation {len(X_val)}, test {len(X_test)} images")
        stop = xpnn.EarlyStopping(monitor=args.monitor, patience=args.patience,
                                  restore_best_weights=True)
        with Timer() as fit_time:
            history = model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                                validation_data=(X_val, y_val),
                                callbacks=[stop], verbose=0 if args.quiet else 1)

        val = model.evaluate(X_val, y_val, batch_size=2000)
        test = model.evaluate(X_test, y_test, batch_size=2000)
        y_pred = np.argmax(xpnn.to_numpy(model.predict(X_test, batch_size=2000)), axis=1)
        names = list(FASHION_MNIST_CLASSES) if args.kind == "fashion" else None
        title = "Fashion-MNIST" if args.kind == "fashion" else "MNIST"
        print(f"{title}: {len(history.epoch)} epochs in {fit_time.seconds:.1f} s "
              f"(best epoch {stop.best_epoch + 1}), backend {args.backend}")
        summary = classification_summary(y_test, y_pred, target_names=names)
        print(f"validation accuracy {val['accuracy']:.4f}, test accuracy "
              f"{summary['accuracy']:.4f}")

        plot_learning_curves(history, f"{args.out}/learning_curves.png",
                             title=f"{title}: {args.hidden.replace(',', '-')} MLP",
                             best_epoch=stop.best_epoch)
        plot_confusion_matrix(y_test, y_pred, f"{args.out}/confusion_matrix.png", labels=names,
                              title=f"{title} test set: accuracy {summary['accuracy']:.4f}")
    return write_metrics(
        args.out, title, {"accuracy": summary["accuracy"], "loss": test["loss"],
                          "macro_f1": summary["macro_f1"]},
        epochs_run=len(history.epoch), backend=args.backend, seconds=total.seconds, args=args,
        best_epoch=stop.best_epoch + 1, fit_seconds=fit_time.seconds,
        validation={"accuracy": val["accuracy"], "loss": val["loss"]},
        train={"accuracy": history.history["accuracy"][stop.best_epoch],
               "loss": history.history["loss"][stop.best_epoch]},
        report=summary["report"])


if __name__ == "__main__":
    run_main(main)

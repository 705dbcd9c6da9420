"""MNIST on several processes: synchronous data-parallel training with xpnn.distributed.

The same script runs as one process or as N MPI ranks, unchanged, and trains the same model
(784-512-256-10, ReLU, Dropout 0.2, Adam 1e-3, global batch 512, early stopping on the
validation loss): every rank loads the same data, takes its slice of each global batch, and the
gradients are summed over the ranks in one allreduce per step.

    python examples/distributed_mnist.py --data-home ../shared/data              # one process
    mpiexec -n 2 python examples/distributed_mnist.py --data-home ../shared/data  # two ranks
    mpiexec -hosts a,b -ppn 2 -n 4 python examples/distributed_mnist.py ...       # two machines

(``pip install "xpnn[mpi]"`` brings mpi4py and ``mpiexec``.) Rank 0 prints, and writes
``OUT/model.npz`` and ``OUT/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import xpnn
from xpnn.datasets import load_mnist


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=os.environ.get("XPNN_DATA"),
                        help="folder with mnist/ (default: $XPNN_DATA or xpnn's data home)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=512, help="global batch")
    parser.add_argument("--hidden", default="512,256")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/distributed_mnist")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only N training and N/5 test images (smoke tests)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    comm = xpnn.distributed.init()                 # size 1 without mpiexec
    say = print if comm.is_root else (lambda *a, **k: None)

    (X, y), (X_test, y_test) = load_mnist("mnist", data_home=args.data_home)
    X = X.reshape(len(X), -1).astype(np.float32) / 255.0
    X_test = X_test.reshape(len(X_test), -1).astype(np.float32) / 255.0
    if args.limit:
        X, y = X[:args.limit], y[:args.limit]
        X_test, y_test = X_test[:args.limit // 5], y_test[:args.limit // 5]
    cut = len(X) * 11 // 12                        # 55,000 training, 5,000 validation images
    X_train, y_train, X_val, y_val = X[:cut], y[:cut], X[cut:], y[cut:]

    sizes = [784, *(int(h) for h in args.hidden.split(",") if h), 10]
    layers = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [xpnn.Dense(n_in, n_out), xpnn.ReLU(), xpnn.Dropout(0.2)]
    layers += [xpnn.Dense(sizes[-2], sizes[-1]), xpnn.Softmax()]
    model = xpnn.Sequential(*layers, seed=args.seed)
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(1e-3), metrics=["accuracy"])
    say(f"{comm.size} rank(s), {comm.threads or 'default'} BLAS thread(s) each; "
        f"global batch {args.batch_size}")

    stop = xpnn.EarlyStopping(monitor="val_loss", patience=3)
    t0 = time.perf_counter()
    history = model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(X_val, y_val), callbacks=[stop], comm=comm)
    seconds = time.perf_counter() - t0
    test = model.evaluate(X_test, y_test, batch_size=2000)

    os.makedirs(args.out, exist_ok=True)
    model.save(os.path.join(args.out, "model.npz"))    # rank 0 writes; the others wait
    result = {"ranks": comm.size, "threads_per_rank": comm.threads, "epochs_run":
              len(history.epoch), "best_epoch": stop.best_epoch + 1, "fit_seconds": seconds,
              "test_accuracy": test["accuracy"], "test_loss": test["loss"],
              "val_loss": stop.best}
    say(f"{len(history.epoch)} epochs in {seconds:.1f} s: test accuracy "
        f"{test['accuracy']:.4f}, test loss {test['loss']:.4f}")
    if comm.is_root:
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

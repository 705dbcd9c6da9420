"""XOR: the classic problem a single-layer perceptron cannot solve.

A 2-4-1 network (tanh hidden layer, sigmoid output) trained with Adam on the four points with
binary cross-entropy. There is no separate test set: XOR has only four points, so the "test"
metrics are on those four points, as in the paper.

    python examples/xor.py --backend torch

Writes ``OUT/metrics.json``, ``OUT/decision_surface.png`` and ``OUT/learning_curves.png``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from _common import (
    Timer,
    classification_summary,
    make_parser,
    plot_learning_curves,
    progress,
    run_main,
    save_figure,
    write_metrics,
)

import xpnn
from xpnn.datasets import load_xor


def parse_args(argv=None):
    parser = make_parser(__doc__.splitlines()[0], epochs=300, out="runs/xor")
    parser.add_argument("--hidden", type=int, default=4, help="hidden units")
    parser.add_argument("--lr", type=float, default=0.05)
    return parser.parse_args(argv)


def plot_decision_surface(model, X, y, path, title=""):
    """P(class 1) over the unit square, with the four training points."""
    grid = np.linspace(-0.25, 1.25, 121)
    gx, gy = np.meshgrid(grid, grid)
    points = np.column_stack([gx.ravel(), gy.ravel()])
    p = xpnn.to_numpy(model.predict(points)).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(4.4, 3.8))
    surface = ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 21), cmap="RdBu_r", alpha=0.85)
    ax.contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.2)
    fig.colorbar(surface, ax=ax, label="P(y = 1)")
    for label, marker in ((0, "o"), (1, "s")):
        pts = X[y == label]
        ax.scatter(pts[:, 0], pts[:, 1], marker=marker, s=90, c="white", edgecolors="k",
                   linewidths=1.5, label=f"y = {label}", zorder=3)
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_aspect("equal")
    ax.legend(loc="center", fontsize=7, framealpha=0.9)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    with Timer() as total:
        X, y = load_xor()
        model = xpnn.Sequential(
            xpnn.Dense(2, args.hidden, init="glorot"), xpnn.Tanh(),
            xpnn.Dense(args.hidden, 1, init="glorot"), xpnn.Sigmoid(),
            backend=args.backend, dtype="float32", seed=args.seed)
        model.compile(loss="binary_crossentropy", optimizer=xpnn.Adam(args.lr),
                      metrics=["accuracy"])
        history = model.fit(X, y, epochs=args.epochs, batch_size=4, shuffle=False,
                            callbacks=[progress(args, "xor")])
        result = model.evaluate(X, y)
        p = xpnn.to_numpy(model.predict(X)).ravel()
        y_pred = (p > 0.5).astype(int)
        if not args.quiet:
            for xi, yi, pi in zip(X, y, p, strict=True):
                print(f"  {xi.astype(int)} -> {pi:.4f}  (target {yi})")
        summary = classification_summary(y, y_pred, print_report=not args.quiet)
        print(f"XOR on {args.backend}: accuracy {summary['accuracy']:.2f}, "
              f"loss {result['loss']:.4f} after {len(history.epoch)} epochs")
        plot_decision_surface(model, X, y, f"{args.out}/decision_surface.png",
                              title=f"XOR, 2-{args.hidden}-1 network ({args.backend})")
        plot_learning_curves(history, f"{args.out}/learning_curves.png", title="XOR")
    return write_metrics(args.out, "XOR", {"accuracy": summary["accuracy"],
                                           "loss": result["loss"]},
                         epochs_run=len(history.epoch), backend=args.backend,
                         seconds=total.seconds, args=args, predictions=p.tolist())


if __name__ == "__main__":
    run_main(main)

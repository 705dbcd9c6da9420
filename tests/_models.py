"""The small networks (and data) the tests build again and again: import them, do not redefine
them.

``from _models import classifier, mlp`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import numpy as np

import xpnn

ACTIVATIONS = {"relu": xpnn.ReLU, "tanh": xpnn.Tanh}


def mlp(backend="numpy", dtype="float32", seed=0, *, n_in=4, hidden=8, k=3, activation="relu",
        dropout=None):
    """``Dense(n_in, hidden) → activation [→ Dropout(dropout)] → Dense(hidden, k) → Softmax``,
    not compiled."""
    layers = [xpnn.Dense(n_in, hidden), ACTIVATIONS[activation]()]
    if dropout is not None:
        layers.append(xpnn.Dropout(dropout))
    layers += [xpnn.Dense(hidden, k), xpnn.Softmax()]
    return xpnn.Sequential(*layers, backend=backend, dtype=dtype, seed=seed)


def classifier(backend="numpy", dtype="float32", seed=0, *, optimizer="adam",
               metrics=("accuracy",), **shape):
    """:func:`mlp` (``shape``: its keyword arguments) compiled with the cross-entropy loss."""
    model = mlp(backend, dtype, seed, **shape)
    return model.compile("crossentropy", optimizer, list(metrics))


# ---------------------------------------------------------------------- data and checks
def blobs(n=60, seed=0, spread=2.0):
    """Three Gaussian classes in four features, ``spread`` apart: ``(X (n, 4), labels (n,))``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    X = rng.normal(size=(n, 4)) + spread * np.eye(3, 4)[y]
    return X, y


def assert_weights_equal(a, b):
    """Two lists of weights (``get_weights()``) are bitwise equal."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


class Crash(Exception):
    pass


class CrashAt(xpnn.Callback):
    """Raises Crash before the ``at``-th training step of the run (counted from 0)."""

    def __init__(self, at):
        self.at, self.seen = at, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen == self.at:
            raise Crash
        self.seen += 1

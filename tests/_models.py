"""Small models the tests build again and again (import them; do not redefine them)."""

from __future__ import annotations

import xpnn


def classifier(n_in=4, hidden=8, k=2, backend="numpy", dtype="float32", seed=0,
               optimizer="adam", metrics=("accuracy",)):
    """Dense(n_in, hidden) → ReLU → Dense(hidden, k) → Softmax, compiled with cross-entropy."""
    model = xpnn.Sequential(xpnn.Dense(n_in, hidden), xpnn.ReLU(), xpnn.Dense(hidden, k),
                            xpnn.Softmax(), backend=backend, dtype=dtype, seed=seed)
    return model.compile(loss="crossentropy", optimizer=optimizer, metrics=list(metrics))


def dropout_classifier(n_in=4, hidden=8, k=2, backend="numpy", dtype="float32", seed=0,
                       rate=0.2):
    """:func:`classifier` with Dropout(rate) after the hidden activation."""
    model = xpnn.Sequential(xpnn.Dense(n_in, hidden), xpnn.ReLU(), xpnn.Dropout(rate),
                            xpnn.Dense(hidden, k), xpnn.Softmax(), backend=backend, dtype=dtype,
                            seed=seed)
    return model.compile(loss="crossentropy", optimizer="adam", metrics=["accuracy"])

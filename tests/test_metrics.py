"""Metrics of xpnn.metrics, through evaluate and fit."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from _models import blobs, mlp

from xpnn.backend import to_numpy

small_classifier = partial(mlp, dropout=0.2)     # 4 → 8 → 3


def test_metrics_for_labels_and_onehot(backend):
    X, y = blobs()
    model = small_classifier(backend)
    model.compile(loss="crossentropy", metrics=["accuracy", "mae", "r2"])
    proba = to_numpy(model.predict(X)).astype(np.float64)
    onehot = np.eye(3)[y]
    by_label, by_onehot = model.evaluate(X, y), model.evaluate(X, onehot)
    assert by_label == pytest.approx(by_onehot, rel=1e-6)
    assert by_label["accuracy"] == pytest.approx(np.mean(proba.argmax(axis=1) == y))
    assert by_label["mae"] == pytest.approx(np.mean(np.abs(proba - onehot)), rel=1e-5)
    model.fit(X, y, epochs=1, verbose=0)            # the metrics also run inside fit

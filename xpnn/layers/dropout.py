"""Inverted dropout."""

from __future__ import annotations

import numpy as np

from .._validation import check_real
from .base import Layer


class Dropout(Layer):
    """Zero each input with probability ``p`` while training and scale the rest by ``1/(1-p)``.

    ``y = x ⊙ m / (1 - p)`` with ``m ~ Bernoulli(1 - p)`` drawn on the host from the model's seeded
    generator (so every backend drops the same units); ``dL/dx = δ ⊙ m / (1 - p)``.
    At inference ``y = x``.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_real("p", p, "Dropout", 0.0, 1.0, high_open=True)

    def build(self, backend, dtype, rng, in_features):
        super().build(backend, dtype, rng, in_features)
        self.rng = rng

    def forward(self, x, training=False):
        if not training or self.p == 0.0:
            self.scale = None
            return x
        # The mask is built on the host in the model's dtype, so the transfer is the only work
        # on the device (no float64 copy to send and cast there).
        keep = self.rng.random(tuple(x.shape)) >= self.p
        scale = np.multiply(keep, 1.0 / (1.0 - self.p), dtype=self.dtype)
        self.scale = self.backend.asarray(scale, dtype=self.dtype)
        return x * self.scale

    def backward(self, delta):
        return delta if self.scale is None else delta * self.scale

    def get_config(self):
        return {"p": self.p}

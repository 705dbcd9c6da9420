"""Element-wise activations and Softmax.

Each ``backward`` multiplies the incoming ``δ = dL/dy`` by the derivative of the activation
(the chain rule); Softmax, whose Jacobian is not diagonal, applies its Jacobian-vector product.
"""

from __future__ import annotations

from .._validation import check_real
from .base import Layer


class Identity(Layer):
    """``y = x``; ``dL/dx = δ``."""

    def forward(self, x, training=False):
        return x

    def backward(self, delta):
        return delta

    def output_bound(self, m):
        return m


class ReLU(Layer):
    """``y = max(x, 0)``; ``dL/dx = δ · [x > 0]``.

    The forward pass takes the larger of ``x`` and 0 (``maximum``) instead of multiplying by a
    0/1 mask, so ``-inf`` gives 0 rather than ``-inf · 0 = NaN``; NaN stays NaN (as the fast
    path). Adding ``+0.0`` makes a ``-0.0`` input ``+0.0`` on every backend (the sign of
    ``maximum(-0.0, 0)`` is left to the implementation): the output is exactly
    ``where(x <= 0, 0, x)``, at a fraction of ``where``'s cost on NumPy.
    """

    def forward(self, x, training=False):
        xp = self.xp
        if training:
            self.mask = xp.astype(x > 0, x.dtype)
        y = xp.maximum(x, xp.zeros_like(x))
        y += 0.0
        return y

    def backward(self, delta):
        return delta * self.mask

    def output_bound(self, m):
        return m


class LeakyReLU(Layer):
    """``y = x`` for ``x > 0`` else ``α x``; ``dL/dx = δ · (1 if x > 0 else α)``.

    The forward pass selects (``where``), so ``-inf`` gives ``α · (-inf)`` (0 when ``α = 0``),
    never ``-inf · 0 = NaN``.

    Parameters
    ----------
    negative_slope : float
        ``α``, the slope for negative inputs (PyTorch's default 0.01); finite.
    """

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = check_real("negative_slope", negative_slope, "LeakyReLU")

    def forward(self, x, training=False):
        xp = self.xp
        alpha = self.negative_slope
        if training:
            pos = xp.astype(x > 0, x.dtype)
            self.slope = pos + alpha * (1.0 - pos)
        neg = alpha * x if alpha != 0 else xp.zeros_like(x)
        return xp.where(x <= 0, neg, x)

    def backward(self, delta):
        return delta * self.slope

    def output_bound(self, m):
        return m * max(1.0, abs(self.negative_slope))

    def get_config(self):
        return {"negative_slope": self.negative_slope}


def sigmoid(xp, x):
    """Numerically stable logistic function ``1 / (1 + exp(-x))`` (no overflow for large |x|)."""
    e = xp.exp(-xp.abs(x))                  # in (0, 1]: never overflows
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class Sigmoid(Layer):
    """``y = σ(x) = 1 / (1 + e^{-x})``; ``dL/dx = δ · y (1 - y)``."""

    def forward(self, x, training=False):
        y = sigmoid(self.xp, x)
        if training:
            self.y = y
        return y

    def backward(self, delta):
        return delta * self.y * (1.0 - self.y)

    def output_bound(self, m):
        return 1.0


class Tanh(Layer):
    """``y = tanh(x)``; ``dL/dx = δ · (1 - y²)``."""

    def forward(self, x, training=False):
        y = self.xp.tanh(x)
        if training:
            self.y = y
        return y

    def backward(self, delta):
        return delta * (1.0 - self.y * self.y)

    def output_bound(self, m):
        return 1.0


def softmax(xp, z):
    """Row-wise softmax ``exp(z - max z) / Σ exp(z - max z)`` of a (N, K) array."""
    e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


def softmax_and_log(xp, z):
    """``(softmax(z), log softmax(z))`` from one shift, exponential and sum, the logarithm
    computed stably as ``z - max z - log Σ exp(z - max z)``; the first is :func:`softmax`'s
    numbers."""
    shifted = z - xp.max(z, axis=1, keepdims=True)
    e = xp.exp(shifted)
    s = xp.sum(e, axis=1, keepdims=True)
    return e / s, shifted - xp.log(s)


class Softmax(Layer):
    """``y_k = exp(x_k) / Σ_j exp(x_j)`` over the features of each row.

    Backward is the Jacobian-vector product ``dL/dx = y ⊙ (δ - Σ_k δ_k y_k)``, correct for any
    loss. (With cross-entropy the model fuses both into the simpler ``p - t``.)
    """

    def forward(self, x, training=False):
        y = softmax(self.xp, x)
        if training:
            self.y = y
        return y

    def backward(self, delta):
        xp = self.xp
        return self.y * (delta - xp.sum(delta * self.y, axis=1, keepdims=True))

    def output_bound(self, m):
        return 1.0                # the softmax of finite logits is finite

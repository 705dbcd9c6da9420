"""Layer normalization."""

from __future__ import annotations

import numpy as np

from .._validation import check_int, check_real
from .base import Layer, Parameter


class LayerNorm(Layer):
    r"""Normalize each row over its features, then scale and shift: Keras's and PyTorch's
    ``LayerNormalization``/``LayerNorm`` over the last axis (Ba, Kiros & Hinton, 2016).

    For a row x (F,)::

        μ = mean(x)        σ² = mean((x - μ)²)        (biased variance, as PyTorch)
        x̂ = (x - μ) / sqrt(σ² + ε)
        y = γ ⊙ x̂ + β                                  γ, β (F,), start at 1 and 0

    Backward, with ``g = δ ⊙ γ`` and ``r = 1 / sqrt(σ² + ε)``::

        dL/dγ = Σ_n δ ⊙ x̂          dL/dβ = Σ_n δ
        dL/dx = r · (g - mean(g) - x̂ ⊙ mean(g ⊙ x̂))      (means over the features)

    Parameters
    ----------
    n_features : int
        Width F of the input.
    eps : float
        ``ε`` > 0, added to the variance. Default 1e-5 (PyTorch's).
    """

    def __init__(self, n_features: int, eps: float = 1e-5):
        super().__init__()
        self.in_features = check_int("n_features", n_features, "LayerNorm", 1)
        self.eps = check_real("eps", eps, "LayerNorm", 0.0, low_open=True)

    def param_shapes(self, in_features):
        return [("gamma", (self.in_features,)), ("beta", (self.in_features,))]

    def build(self, backend, dtype, rng, in_features):
        self.check_width(in_features)
        super().build(backend, dtype, rng, in_features)
        f = self.in_features
        self.gamma = Parameter("gamma", backend.asarray(np.ones(f), dtype=dtype))
        self.beta = Parameter("beta", backend.zeros((f,), dtype))
        self.params = [self.gamma, self.beta]

    def forward(self, x, training=False):
        self.check_input(x)
        xp = self.xp
        centered = x - xp.mean(x, axis=1, keepdims=True)
        r = 1.0 / xp.sqrt(xp.mean(centered * centered, axis=1, keepdims=True) + self.eps)
        x_hat = centered * r
        if training:
            self.x_hat, self.r = x_hat, r
        return x_hat * self.gamma.data + self.beta.data

    def backward(self, delta):
        xp = self.xp
        x_hat = self.x_hat
        self.gamma.grad = xp.sum(delta * x_hat, axis=0)
        self.beta.grad = xp.sum(delta, axis=0)
        if not self.input_grad_needed:
            return None
        g = delta * self.gamma.data
        return self.r * (g - xp.mean(g, axis=1, keepdims=True)
                         - x_hat * xp.mean(g * x_hat, axis=1, keepdims=True))

    def to_onnx(self, g, x, name):
        # ONNX: the means as ``MatMul`` with a (F, 1) column of 1/F (the same nodes on every opset),
        # ``Sub``, ``Sqrt``, ``Div``, ``Mul``, ``Add``.
        f = self.in_features
        avg = g.const(f"{name}.avg", np.full((f, 1), 1.0 / f, dtype=g.dtype))
        centered = g.node("Sub", [x, g.node("MatMul", [x, avg])])
        var = g.node("MatMul", [g.node("Mul", [centered, centered]), avg])
        eps = g.const(f"{name}.eps", np.asarray([self.eps], g.dtype))
        x_hat = g.node("Div", [centered, g.node("Sqrt", [g.node("Add", [var, eps])])])
        return g.node("Add", [g.node("Mul", [x_hat, g.weight(f"{name}.gamma", self.gamma.data)]),
                              g.weight(f"{name}.beta", self.beta.data)])

    def get_config(self):
        return {"n_features": self.in_features,
                **({"eps": self.eps} if self.eps != 1e-5 else {})}

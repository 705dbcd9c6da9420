"""The fully connected (dense) layer."""

from __future__ import annotations

import math

from .._validation import check_int, check_real
from .base import Layer, Parameter

INITS = ("he", "glorot")


class Dense(Layer):
    r"""Fully connected layer: ``y = x W + b``.

    Shapes: ``x`` (N, in_features), ``W`` (in_features, out_features), ``b`` (out_features,),
    ``y`` (N, out_features).

    Backward, given ``δ = dL/dy`` of shape (N, out_features)::

        dL/dW = xᵀ · δ          (in_features, out_features)
        dL/db = Σ_n δ[n]        (out_features,)
        dL/dx = δ · Wᵀ          (N, in_features)

    The products are written with ``@``, so ``x`` may also be a SciPy sparse matrix on the NumPy
    backend (as the first layer, which needs no ``dL/dx``): ``x W`` and ``xᵀ δ`` are then
    SciPy's sparse products and ``x`` is never densified (L-BFGS in :mod:`xpnn.sklearn` trains
    on sparse data this way).

    Parameters
    ----------
    in_features : int or None
        Input width. ``None`` lets the model infer it from the data at the first ``fit``
        (only for the first layer).
    out_features : int
        Output width (number of units).
    init : {"he", "glorot"}
        ``"he"``: W ~ Normal(0, sqrt(2 / in_features)), for ReLU networks (He et al., 2015).
        ``"glorot"``: W ~ Uniform(±sqrt(6 / (in + out))), for tanh/sigmoid (Glorot & Bengio, 2010).
        Biases start at zero.
    bias : bool
        Whether to learn ``b``.
    weight_decay : float
        L2 penalty ``λ`` on this layer's weights ``W`` only (never the bias): backward adds
        ``λ · W`` to ``dL/dW``, the gradient of ``(λ/2)·||W||²`` added to every batch's loss.
        This is ``torch.optim``'s ``weight_decay`` restricted to one weight matrix, and how
        :mod:`xpnn.sklearn` implements scikit-learn's ``alpha``. The penalty is not included in
        the loss value ``fit`` logs. Default 0 (off).
    """

    def __init__(self, in_features: int | None, out_features: int, init: str = "he",
                 bias: bool = True, weight_decay: float = 0.0):
        super().__init__()
        if out_features is None:
            raise ValueError("Dense: out_features is required")
        if in_features is not None:
            in_features = check_int("in_features", in_features, "Dense", 1)
        out_features = check_int("out_features", out_features, "Dense", 1)
        if init not in INITS:
            raise ValueError(f"Dense: init must be one of {INITS}, got {init!r}")
        weight_decay = check_real("weight_decay", weight_decay, "Dense", 0.0)
        self.in_features = in_features
        self.out_features = out_features
        self.init = init
        self.use_bias = bool(bias)
        self.weight_decay = weight_decay
        self.x = None

    def output_features(self, in_features):
        return self.out_features

    def param_shapes(self, in_features):
        return [("W", (in_features, self.out_features))] + (
            [("b", (self.out_features,))] if self.use_bias else [])

    def build(self, backend, dtype, rng, in_features):
        if in_features is None or in_features < 1:
            raise ValueError(f"Dense: the input must have at least one feature, got "
                             f"in_features={in_features!r}")
        super().build(backend, dtype, rng, in_features)
        self.in_features = n_in = int(in_features)
        n_out = self.out_features
        if self.init == "he":
            W = rng.normal(0.0, math.sqrt(2.0 / n_in), size=(n_in, n_out))
        else:
            limit = math.sqrt(6.0 / (n_in + n_out))
            W = rng.uniform(-limit, limit, size=(n_in, n_out))
        self.W = Parameter("W", backend.asarray(W, dtype=dtype))
        self.params = [self.W]
        if self.use_bias:
            self.b = Parameter("b", backend.zeros((n_out,), dtype))
            self.params.append(self.b)
        else:
            self.b = None

    def forward(self, x, training=False):
        if training:
            self.x = x
        y = x @ self.W.data                                 # y = x·W + b
        if self.b is not None:
            y += self.b.data
        return y

    def output_bound(self, m):
        # |x W + b| <= m · maxⱼ Σᵢ |Wᵢⱼ| + max |b|
        xp = self.xp
        column = float(xp.max(xp.sum(xp.abs(self.W.data), axis=0)))
        bias = 0.0 if self.b is None else float(xp.max(xp.abs(self.b.data)))
        return m * column + bias if m else bias

    def backward(self, delta):
        xp = self.xp
        self.W.grad = self.x.T @ delta                      # dW = xᵀ·δ
        if self.weight_decay:                               # + λW: gradient of (λ/2)||W||²
            self.W.grad = self.W.grad + self.weight_decay * self.W.data
        if self.b is not None:
            self.b.grad = xp.sum(delta, axis=0)             # db = Σδ
        if not self.input_grad_needed:                      # first layer: nobody needs dx
            return None
        return delta @ self.W.data.T                        # dx = δ·Wᵀ

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "init": self.init, "bias": self.use_bias,
                **({"weight_decay": self.weight_decay} if self.weight_decay else {})}

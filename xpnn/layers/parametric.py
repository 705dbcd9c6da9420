"""Parametric activations (RealMLP's): a learned blend of an activation and the identity."""

from __future__ import annotations

import numpy as np

from .scale import PerFeature

#: SELU's constants (Klambauer et al., 2017).
SELU_SCALE, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772


def _selu(xp, x):
    """SELU and its derivative: ``λx`` for x > 0, else ``λα(e^x - 1)``."""
    e = xp.exp(xp.minimum(x, xp.zeros_like(x)))
    pos = x > 0
    return (xp.where(pos, SELU_SCALE * x, (SELU_SCALE * SELU_ALPHA) * (e - 1.0)),
            xp.where(pos, xp.full_like(x, SELU_SCALE), (SELU_SCALE * SELU_ALPHA) * e))


def _mish(xp, x):
    """Mish ``x · tanh(softplus(x))`` and its derivative ``t + x σ(x) (1 - t²)``, from one
    exponential: with ``e = eˣ``, ``t = tanh(log(1 + e)) = n / (n + 2)`` for ``n = e (e + 2)``
    and ``σ(x) = e / (1 + e)``. ``x`` is capped at 20 inside the exponential (beyond it
    ``t = σ = 1`` in float64 already), so nothing overflows."""
    e = xp.exp(xp.minimum(x, xp.full_like(x, 20.0)))
    n = e * (e + 2.0)
    t = n / (n + 2.0)
    return x * t, t + (x * e / (1.0 + e)) * (1.0 - t * t)


def _relu(xp, x):
    pos = x > 0
    return xp.where(pos, x, xp.zeros_like(x)), xp.astype(pos, x.dtype)


FUNCTIONS = {"selu": _selu, "mish": _mish, "relu": _relu}


class ParametricActivation(PerFeature):
    r"""``y = x + α ⊙ (f(x) - x)``: the activation ``f`` blended per feature with the identity,
    ``α`` (F,) learned and starting at 1 (so the layer starts as ``f``). RealMLP's
    ``use_parametric_act`` (Holzmüller et al., 2024), with SELU for classification and Mish
    for regression in its defaults.

    Backward::

        dL/dα = Σ_n δ ⊙ (f(x) - x)         dL/dx = δ ⊙ (1 + α ⊙ (f'(x) - 1))

    Parameters
    ----------
    n_features : int
        Width F of the input.
    activation : {"selu", "mish", "relu"}
        ``f``. SELU: ``λx`` (x > 0) or ``λα(eˣ - 1)``; Mish: ``x · tanh(log(1 + eˣ))``.
    """

    param_name = "alpha"

    def __init__(self, n_features: int, activation: str = "selu"):
        super().__init__(n_features)
        if activation not in FUNCTIONS:
            raise ValueError(f"ParametricActivation: activation must be one of "
                             f"{tuple(FUNCTIONS)}, got {activation!r}")
        self.activation = activation

    def forward(self, x, training=False):
        self.check_input(x)
        fx, dfx = FUNCTIONS[self.activation](self.xp, x)
        gap = fx - x
        if training:
            self.gap, self.dfx = gap, dfx
        return x + self.alpha.data * gap

    def backward(self, delta):
        self.alpha.grad = self.xp.sum(delta * self.gap, axis=0)
        if not self.input_grad_needed:
            return None
        return delta * (1.0 + self.alpha.data * (self.dfx - 1.0))

    def to_onnx(self, g, x, name):
        # ONNX: ``f`` from elementary operators (``Where``/``Exp`` for SELU, ``Relu``, ``Log``,
        # ``Exp``, ``Abs``, ``Tanh`` for Mish), then ``x + α (f(x) - x)``.
        def const(label, value):
            return g.const(f"{name}.{label}", np.asarray([value], g.dtype))

        if self.activation == "relu":
            fx = g.node("Relu", [x])
        elif self.activation == "selu":
            zero = const("zero", 0.0)
            neg = g.node("Mul", [g.node("Sub", [g.node("Exp", [g.node("Min", [x, zero])]),
                                                const("one", 1.0)]),
                                 const("scale_alpha", SELU_SCALE * SELU_ALPHA)])
            fx = g.node("Where", [g.node("Greater", [x, zero]),
                                  g.node("Mul", [x, const("scale", SELU_SCALE)]), neg])
        else:
            softplus = g.node("Add", [g.node("Relu", [x]), g.node("Log", [g.node("Add", [
                const("one", 1.0), g.node("Exp", [g.node("Neg", [g.node("Abs", [x])])])])])])
            fx = g.node("Mul", [x, g.node("Tanh", [softplus])])
        gap = g.node("Sub", [fx, x])
        return g.node("Add", [x, g.node("Mul", [g.weight(f"{name}.alpha", self.alpha.data),
                                                gap])])

    def get_config(self):
        return {"n_features": self.in_features, "activation": self.activation}



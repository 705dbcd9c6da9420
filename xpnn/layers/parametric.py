"""Parametric activations (RealMLP's): a learned blend of an activation and the identity.

Each activation ``f`` is written as two functions of the layer's input, chosen to cost few
passes over the batch (elementwise arrays of the batch's size are what this layer spends its
time on): ``gap`` gives ``f(x) - x`` as ``c · g`` (a Python constant ``c`` folded into ``α``,
which is (F,), instead of a pass over the batch) and keeps what the derivative needs;
``slope`` computes ``α ⊙ (f'(x) - 1)`` from that, only when ``backward`` runs (inference
keeps nothing).
"""

from __future__ import annotations

import numpy as np

from .._compiled import host_arrays, loaded_kernels
from .scale import PerFeature

#: SELU's constants (Klambauer et al., 2017).
SELU_SCALE, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772
#: Mish: beyond this input ``tanh(softplus(x)) = 1`` in float64, so the exponential is capped
#: there (nothing overflows) and ``f(x) - x`` is at most 1e-15.
MISH_CAP = 20.0


def _selu_gap(xp, x):
    r"""SELU ``f(x) = λ max(x, 0) + λα (e^{min(x, 0)} - 1)`` (``λx`` for x > 0, else
    ``λα(eˣ - 1)``), as ``f(x) - x = (λ - 1) max(x, 0) - min(x, 0) + λα (e^{min(x, 0)} - 1)``
    (``c = 1``); keeps ``(x, e^{min(x, 0)})``."""
    low = xp.minimum(x, 0.0)                        # min(x, 0)
    e = xp.exp(low)
    g = e * (SELU_SCALE * SELU_ALPHA)
    g -= SELU_SCALE * SELU_ALPHA
    g -= low
    high = x - low                                  # max(x, 0)
    high *= SELU_SCALE - 1.0
    g += high
    return g, 1.0, (x, e)


def _selu_slope(xp, cache, alpha):
    r"""``α (f'(x) - 1)`` with ``f'(x) = λ`` for x > 0, ``λα eˣ`` otherwise."""
    x, e = cache
    u = xp.where(x > 0, xp.asarray(SELU_SCALE, dtype=x.dtype), e * (SELU_SCALE * SELU_ALPHA))
    u -= 1.0
    u *= alpha
    return u


def _mish_gap(xp, x):
    r"""Mish ``f(x) = x · tanh(softplus(x))`` from one exponential: with ``e = eˣ``,
    ``a = 1 + e`` and ``d = a² + 1``, ``tanh(log(1 + e)) = 1 - 2/d``, so
    ``f(x) - x = -2x/d``: ``c = -2`` and ``g = q = x/d``, with ``x`` capped at
    ``MISH_CAP`` (inside ``e`` and in ``q``). Keeps ``(q, a, d)``."""
    q = xp.minimum(x, MISH_CAP)
    a = xp.exp(q)
    a += 1.0                                        # a = 1 + e
    d = a * a
    d += 1.0                                        # d = (1 + e)² + 1
    q /= d                                          # q = x / d
    return q, -2.0, (q, a, d)


def _mish_slope(xp, cache, alpha):
    r"""``α (f'(x) - 1)``: ``f'(x) = t + x σ(x) (1 - t²)`` with ``t = 1 - 2/d``,
    ``σ(x) = e/a`` and ``1 - t² = 4a²/d²``, so ``f'(x) - 1 = 4 (q e a - 1/2) / d``."""
    q, a, d = cache
    u = a - 1.0                                     # e
    u *= a
    u *= q
    u -= 0.5
    u /= d
    u *= 4.0 * alpha
    return u


def _relu_gap(xp, x):
    r"""ReLU: ``f(x) - x = -min(x, 0)`` (``c = -1``); keeps ``x``."""
    return xp.minimum(x, 0.0), -1.0, x


def _relu_slope(xp, x, alpha):
    r"""``α (f'(x) - 1) = -α`` where x <= 0, else 0."""
    u = xp.astype(x <= 0, x.dtype)
    u *= -alpha
    return u


#: name -> (gap, slope)
FUNCTIONS = {"selu": (_selu_gap, _selu_slope), "mish": (_mish_gap, _mish_slope),
             "relu": (_relu_gap, _relu_slope)}


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
    #: ``(g, c, kept)`` of the last training forward (``f(x) - x = c · g`` and what the
    #: derivative needs); inference keeps nothing.
    cache = None

    def __init__(self, n_features: int, activation: str = "selu"):
        super().__init__(n_features)
        if activation not in FUNCTIONS:
            raise ValueError(f"ParametricActivation: activation must be one of "
                             f"{tuple(FUNCTIONS)}, got {activation!r}")
        self.activation = activation

    def forward(self, x, training=False):
        self.check_input(x)
        kernels = (loaded_kernels() if self.activation == "mish" and x.ndim == 2
                   and host_arrays(x, self.alpha.data) else None)
        if kernels is not None:
            return self._mish_compiled(kernels, x, training)
        g, c, kept = FUNCTIONS[self.activation][0](self.xp, x)     # f(x) - x = c · g
        if training:
            self.cache = (g, c, kept)
            y = g * (c * self.alpha.data)
        else:                                   # nothing keeps g: y takes its place
            y = g
            y *= c * self.alpha.data
        y += x                                                       # x + α ⊙ (f(x) - x)
        return y

    def _mish_compiled(self, kernels, x, training):
        """Mish's forward with NumPy's ``min`` and ``exp`` and the rest in one compiled pass
        (:func:`xpnn.fastpath.numba_kernels.mish_blend_forward`): the same operations, so
        the numbers of :func:`_mish_gap` and the blend, in fewer passes over the batch."""
        q = np.minimum(x, MISH_CAP)
        a = np.exp(q)
        d, y = np.empty_like(x), np.empty_like(x)
        kernels.mish_blend_forward(x, q, a, -2.0 * self.alpha.data, x.dtype.type(1.0), d, y)
        if training:
            self.cache = (q, -2.0, (q, a, d))
        return y

    def backward(self, delta):
        xp = self.xp
        g, c, kept = self.cache
        if (self.activation == "mish" and self.input_grad_needed
                and delta.shape == kept[0].shape):
            kernels = loaded_kernels() if host_arrays(delta, *kept, self.alpha.data) else None
            if kernels is not None:           # the passes below in one compiled loop
                sums, dx = np.empty_like(self.alpha.data), np.empty_like(delta)
                one = delta.dtype.type(1.0)
                kernels.mish_blend_backward(delta, *kept, 4.0 * self.alpha.data,
                                            delta.dtype.type(0.5), one, sums, dx)
                self.alpha.grad = c * sums
                return dx
        self.alpha.grad = c * xp.sum(delta * g, axis=0)             # Σ_n δ ⊙ (f(x) - x)
        if not self.input_grad_needed:
            return None
        dx = FUNCTIONS[self.activation][1](xp, kept, self.alpha.data)    # α ⊙ (f'(x) - 1)
        dx += 1.0
        dx *= delta                                                  # δ ⊙ (1 + α ⊙ (f' - 1))
        return dx

    def output_bound(self, m):
        # y = (1 - α) x + α f(x), so |y| <= max |1 - α| · m + max |α| · sup |f|
        # over |x| <= m: sup |f| = m for ReLU and Mish (|x · tanh(·)| <= |x|),
        # λ · max(m, α_SELU) for SELU.
        xp, a = self.xp, self.alpha.data
        f = SELU_SCALE * max(m, SELU_ALPHA) if self.activation == "selu" else m
        return float(xp.max(xp.abs(1.0 - a))) * m + float(xp.max(xp.abs(a))) * f

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



"""A learned scale per feature (RealMLP's front scaling layer)."""

from __future__ import annotations

import numpy as np

from .._validation import check_int
from .base import Layer, Parameter


class PerFeature(Layer):
    """Base of the layers that learn one number per feature, starting at 1 (:class:`Scale`,
    :class:`~xpnn.ParametricActivation`): the parameter is named :attr:`param_name`."""

    param_name = "s"

    def __init__(self, n_features: int):
        super().__init__()
        self.in_features = check_int("n_features", n_features, type(self).__name__, 1)

    def param_shapes(self, in_features):
        return [(self.param_name, (self.in_features,))]

    def build(self, backend, dtype, rng, in_features):
        self.check_width(in_features)
        super().build(backend, dtype, rng, in_features)
        param = Parameter(self.param_name, backend.asarray(np.ones(self.in_features),
                                                           dtype=dtype))
        setattr(self, self.param_name, param)
        self.params = [param]


class Scale(PerFeature):
    r"""``y = x ⊙ s``: every feature multiplied by its own learned factor.

    Shapes: x (N, F), s (F,) starting at 1, y (N, F). Backward::

        dL/ds = Σ_n δ ⊙ x          dL/dx = δ ⊙ s

    RealMLP (Holzmüller et al., 2024) puts one in front of its first ``Dense`` (its "front
    scale"), so training can weigh the features before they mix, a soft feature selection.

    Parameters
    ----------
    n_features : int
        Width F of the input.
    """

    def forward(self, x, training=False):
        self.check_input(x)
        if training:
            self.x = x
        return x * self.s.data

    def backward(self, delta):
        self.s.grad = self.xp.sum(delta * self.x, axis=0)
        if not self.input_grad_needed:
            return None
        return delta * self.s.data

    def output_bound(self, m):
        # |x ⊙ s| <= m · max |s|.
        return m * float(self.xp.max(self.xp.abs(self.s.data)))

    def to_onnx(self, g, x, name):
        # ONNX: ``Mul(x, s)``.
        return g.node("Mul", [x, g.weight(f"{name}.s", self.s.data)])

    def get_config(self):
        return {"n_features": self.in_features}

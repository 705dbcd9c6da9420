"""Stochastic gradient descent with (Nesterov) momentum, as ``torch.optim.SGD``."""

from __future__ import annotations

import numpy as np

from .base import Optimizer, StateSpec, _check_fraction, _check_positive


class SGD(Optimizer):
    r"""Stochastic gradient descent.

    With gradient ``g`` (plus ``λ θ`` when ``weight_decay = λ``) and momentum ``μ``::

        b ← g                  at the first step,  b ← μ b + g  afterwards
        d ← g + μ b            (nesterov)   or   d ← b   (classical)   or   d ← g  (μ = 0)
        θ ← θ - lr · d

    This is exactly ``torch.optim.SGD`` (dampening 0).

    Parameters
    ----------
    lr : float or xpnn.schedules.Schedule or dict
        Learning rate, >= 0, or a schedule of the epoch (or its ``to_config()`` dict).
    momentum : float
        μ, in [0, 1); 0 for plain gradient descent.
    nesterov : bool
        Nesterov momentum (needs ``momentum > 0``).
    weight_decay : float
        λ >= 0, L2 penalty added to the gradient.
    """

    STATE = StateSpec(buffers=("momentum_buffer",), needs={"momentum_buffer": "momentum"},
                      from_gradient=("momentum_buffer",))

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(lr)
        self.momentum = _check_fraction("momentum", momentum, "SGD")
        self.weight_decay = _check_positive("weight_decay", weight_decay, "SGD", allow_zero=True)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"SGD: nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("SGD: nesterov momentum needs momentum > 0")
        self.nesterov = bool(nesterov)

    def update(self, param, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * param.data
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad * 1.0          # a copy of g
            else:
                buf *= self.momentum
                buf += grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        param.data -= self.lr * grad

    def get_config(self):
        return {"lr": self.lr_config(), "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

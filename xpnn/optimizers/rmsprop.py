"""RMSprop, as ``torch.optim.RMSprop`` (not centered)."""

from __future__ import annotations

from .base import Optimizer, StateSpec, _check_fraction, _check_positive


class RMSprop(Optimizer):
    r"""Divide the gradient by a running root-mean-square of recent gradients (Hinton, 2012).

    With gradient ``g`` (plus ``λ θ`` for ``weight_decay = λ``)::

        s ← ρ s + (1 - ρ) g²                 (s starts at 0)
        u ← g / (√s + ε)                     (ε outside the square root)
        b ← μ b + u;  θ ← θ - lr · b         (momentum μ > 0, b starts at 0)
        θ ← θ - lr · u                       (μ = 0)

    Identical to ``torch.optim.RMSprop`` (``rho`` is PyTorch's ``alpha``; same defaults).

    Parameters
    ----------
    lr : float or xpnn.schedules.Schedule or dict
        Learning rate, >= 0, or a schedule of the epoch (or its ``to_config()`` dict).
    rho : float
        ρ in [0, 1), decay of the running mean of squares ``s``.
    eps : float
        ε > 0, added to the denominator.
    momentum : float
        μ in [0, 1); 0 for none.
    weight_decay : float
        λ >= 0, L2 penalty added to the gradient.
    """

    STATE = StateSpec(buffers=("square_avg", "momentum_buffer"), nonnegative=("square_avg",),
                      needs={"momentum_buffer": "momentum"})

    def __init__(self, lr: float = 0.01, rho: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(lr)
        self.rho = _check_fraction("rho", rho, "RMSprop")
        self.eps = _check_positive("eps", eps, "RMSprop")
        self.momentum = _check_fraction("momentum", momentum, "RMSprop")
        self.weight_decay = _check_positive("weight_decay", weight_decay, "RMSprop",
                                            allow_zero=True)

    def update(self, param, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * param.data
        if "square_avg" not in state:
            state["square_avg"] = grad * 0.0
        s = state["square_avg"]
        s *= self.rho
        s += (1.0 - self.rho) * (grad * grad)
        u = grad / (s ** 0.5 + self.eps)
        if self.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad * 0.0
            b = state["momentum_buffer"]
            b *= self.momentum
            b += u
            u = b
        param.data -= self.lr * u

    def get_config(self):
        return {"lr": self.lr_config(), "rho": self.rho, "eps": self.eps, "momentum": self.momentum,
                "weight_decay": self.weight_decay}

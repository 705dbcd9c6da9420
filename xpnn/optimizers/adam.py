"""Adam and AdamW, as ``torch.optim.Adam`` and ``torch.optim.AdamW``."""

from __future__ import annotations

import math

from .base import Optimizer, StateSpec, _check_fraction, _check_positive, compiled_views


class Adam(Optimizer):
    r"""Adaptive moment estimation (Kingma & Ba, 2015) with bias correction.

    At step ``t = 1, 2, ...`` with gradient ``g`` (plus ``λ θ`` for ``weight_decay = λ``, the
    "L2" form; see :class:`AdamW` for decoupled decay)::

        m ← β₁ m + (1 - β₁) g
        v ← β₂ v + (1 - β₂) g²
        θ ← θ - (lr / (1 - β₁ᵗ)) · m / (√v / √(1 - β₂ᵗ) + ε)

    ε is added outside the square root, exactly as ``torch.optim.Adam``.

    Parameters
    ----------
    lr : float or xpnn.schedules.Schedule or dict
        Learning rate, >= 0, or a schedule of the epoch (or its ``to_config()`` dict).
    beta1 : float
        β₁ in [0, 1), decay of the first moment ``m``.
    beta2 : float
        β₂ in [0, 1), decay of the second moment ``v``.
    eps : float
        ε > 0, added to the denominator.
    weight_decay : float
        λ >= 0, L2 penalty added to the gradient.
    """

    STATE = StateSpec(buffers=("exp_avg", "exp_avg_sq"), counts_steps=True,
                      nonnegative=("exp_avg_sq",))

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(lr)
        owner = type(self).__name__
        self.beta1 = _check_fraction("beta1", beta1, owner)
        self.beta2 = _check_fraction("beta2", beta2, owner)
        self.eps = _check_positive("eps", eps, owner)
        self.weight_decay = _check_positive("weight_decay", weight_decay, owner, allow_zero=True)

    def update(self, param, grad, state):
        return self._adam_step(param, grad, state, l2=self.weight_decay)

    def _adam_step(self, param, grad, state, l2=0.0, decay=1.0):
        """One step on ``param`` with L2 decay ``l2`` (Adam) or the weights first multiplied by
        ``decay`` (AdamW). On NumPy with Numba, one compiled pass
        (:func:`xpnn.fastpath.numba_kernels.adam_update`, the fast trainers' kernel) that also
        says whether the new weights are finite; otherwise in-place array passes, the same
        operations in the same order (returns None: finiteness unknown)."""
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = grad * 0.0
            state["exp_avg_sq"] = grad * 0.0
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        # lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε) = (lr √(1-β₂ᵗ)/(1-β₁ᵗ)) · m / (√v + ε √(1-β₂ᵗ))
        bc2 = math.sqrt(1.0 - self.beta2 ** t)
        step_size = self.lr / (1.0 - self.beta1 ** t) * bc2
        eps = self.eps * bc2
        flat = compiled_views(param.data, grad, m, v)
        if flat is not None:
            c = flat[0].dtype.type          # scalars in the arrays' dtype, as NumPy casts them
            return flat[-1].adam_update(*flat[:4], c(self.beta1), c(self.beta2),
                                        c(1.0 - self.beta1), c(1.0 - self.beta2), c(eps),
                                        c(step_size), c(l2), c(decay))
        if decay != 1.0:
            param.data *= decay                             # θ ← θ (1 - lr λ)
        if l2:
            grad = grad + l2 * param.data                   # g ← g + λ θ
        # In place, with 2 temporaries (the same numbers as the formulas written out)
        m *= self.beta1
        m += (1.0 - self.beta1) * grad                      # m = β₁ m + (1 - β₁) g
        v *= self.beta2
        square = grad * grad
        square *= 1.0 - self.beta2
        v += square                                         # v = β₂ v + (1 - β₂) g²
        step = v ** 0.5
        step += eps                                         # √v + ε √(1 - β₂ᵗ)
        step = m / step
        step *= step_size
        param.data -= step
        return None

    def get_config(self):
        return {"lr": self.lr_config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    First shrink the weights, ``θ ← θ (1 - lr λ)``, then take the plain :class:`Adam` step on the
    unmodified gradient. Matches ``torch.optim.AdamW`` (default ``weight_decay=0.01``).

    Parameters
    ----------
    lr : float or xpnn.schedules.Schedule or dict
        Learning rate, >= 0, or a schedule of the epoch (or its ``to_config()`` dict).
    beta1 : float
        β₁ in [0, 1), decay of the first moment ``m``.
    beta2 : float
        β₂ in [0, 1), decay of the second moment ``v``.
    eps : float
        ε > 0, added to the denominator.
    weight_decay : float
        λ >= 0, decoupled decay: the weights shrink by ``lr · λ`` of themselves at each step.
    """

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(lr, beta1, beta2, eps, weight_decay)

    def update(self, param, grad, state):
        decay = 1.0 - self.lr * self.weight_decay if self.weight_decay else 1.0
        return self._adam_step(param, grad, state, decay=decay)

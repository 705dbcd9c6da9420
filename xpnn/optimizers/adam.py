"""Adam and AdamW, as ``torch.optim.Adam`` and ``torch.optim.AdamW``."""

from __future__ import annotations

import math

import numpy as np

from .._compiled import compiled_views
from .base import Optimizer, StateSpec, _check_fraction, _check_positive

#: Parameters of at most this many elements are updated in groups (:meth:`Adam.step`): for
#: them NumPy's per-call cost outweighs the arithmetic.
GROUP_SIZE = 4096


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
        return self._adam_step(param, grad, state, *self._decay(self.lr, self.weight_decay))

    def _decay(self, lr, weight_decay):
        """``(l2, decay)`` of :meth:`_adam_step`: Adam adds ``λ θ`` to the gradient."""
        return weight_decay, 1.0

    def _adam_step(self, param, grad, state, l2=0.0, decay=1.0):
        """One step on ``param`` with L2 decay ``l2`` (Adam) or the weights first multiplied by
        ``decay`` (AdamW); returns what :meth:`_adam_arrays` does."""
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = grad * 0.0
            state["exp_avg_sq"] = grad * 0.0
        state["step"] += 1
        return self._adam_arrays(param.data, grad, state["exp_avg"], state["exp_avg_sq"],
                                 state["step"], self.lr, l2, decay)

    def _adam_arrays(self, p, g, m, v, t, lr, l2, decay):
        """Step ``t`` on the arrays ``p`` (updated in place), ``g``, ``m``, ``v``; returns
        whether the new ``p`` is finite, or None on a device (where asking would synchronise:
        the caller checks when it needs to). On NumPy with the fast trainers' kernels loaded,
        one compiled pass (:func:`xpnn.fastpath.numba_kernels.adam_update`) that finds that out
        too; otherwise in-place array passes, the same operations in the same order."""
        # lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε) = (lr √(1-β₂ᵗ)/(1-β₁ᵗ)) · m / (√v + ε √(1-β₂ᵗ))
        bc2 = math.sqrt(1.0 - self.beta2 ** t)
        step_size = lr / (1.0 - self.beta1 ** t) * bc2
        eps = self.eps * bc2
        flat = compiled_views(p, g, m, v)
        if flat is not None:
            c = flat[0].dtype.type          # scalars in the arrays' dtype, as NumPy casts them
            return flat[-1].adam_update(*flat[:4], c(self.beta1), c(self.beta2),
                                        c(1.0 - self.beta1), c(1.0 - self.beta2), c(eps),
                                        c(step_size), c(l2), c(decay))
        if decay != 1.0:
            p *= decay                                      # θ ← θ (1 - lr λ)
        if l2:
            g = g + l2 * p                                  # g ← g + λ θ
        # In place, with 2 temporaries (the same numbers as the formulas written out)
        m *= self.beta1
        m += (1.0 - self.beta1) * g                         # m = β₁ m + (1 - β₁) g
        v *= self.beta2
        square = g * g
        square *= 1.0 - self.beta2
        v += square                                         # v = β₂ v + (1 - β₂) g²
        step = v ** 0.5
        step += eps                                         # √v + ε √(1 - β₂ᵗ)
        step = m / step
        step *= step_size
        p -= step
        if type(p) is np.ndarray:       # on the host the check costs no synchronisation
            return bool(np.isfinite(p).all())
        return None

    def step(self, params):
        # Optimizer.step (its docstring is this method's), with the small NumPy parameters
        # that share lr_factor, wd_factor and step count updated together: gathered into one
        # array (their moments live in one, the state dicts hold views of it), one update,
        # the new weights written back in place. The same operations on every element, so
        # the same numbers; a few array calls instead of a dozen per bias or feature vector.
        if len(self.state) != len(params):
            self.state = [{} for _ in params]
        if type(self).update not in (Adam.update, AdamW.update):
            return super().step(params)         # a subclass's own rule: one by one
        groups = {}
        for i, p in enumerate(params):
            d = p.data
            if (type(d) is np.ndarray and d.size <= GROUP_SIZE and type(p.grad) is np.ndarray
                    and p.grad.dtype == d.dtype):
                groups.setdefault((p.lr_factor, p.wd_factor, d.dtype,
                                   self.state[i].get("step")), []).append(i)
        grouped = [g for g in groups.values() if len(g) > 1]
        if not grouped:
            return super().step(params)
        reports = [None] * len(params)
        done, flats = set(), self.__dict__.get("_flat", {})
        self._flat = {}                 # the groups' moments, kept for this step's groups only
        for members in grouped:
            ok = self._group_step([params[i] for i in members],
                                  [self.state[i] for i in members], flats)
            for i in members:
                reports[i] = ok
            done.update(members)
        for i, (p, state) in enumerate(zip(params, self.state, strict=True)):
            if i not in done:
                reports[i] = (self.update(p, p.grad, state)
                              if p.lr_factor == 1.0 and p.wd_factor == 1.0
                              else self._update_scaled(p, state))
        self._close_step(reports)

    def _group_step(self, params, states, flats):
        """One step of the parameters ``params`` (same factors, dtype and step count) as one
        flat array; returns what :meth:`_adam_arrays` does."""
        grad = np.concatenate([p.grad.reshape(-1) for p in params])
        flat = self._flat_moments(params, states, grad, flats)
        data = np.concatenate([p.data.reshape(-1) for p in params])
        t = states[0]["step"] + 1
        for state in states:
            state["step"] = t
        lr = self.lr * params[0].lr_factor
        ok = self._adam_arrays(data, grad, *flat, t, lr,
                               *self._decay(lr, self.weight_decay * params[0].wd_factor))
        lo = 0
        for p in params:
            hi = lo + p.data.size
            p.data[...] = data[lo:hi].reshape(p.data.shape)
            lo = hi
        return ok

    def _flat_moments(self, params, states, grad, flats):
        """``(m, v)``, flat arrays whose slices the parameters' state dicts hold as views (from
        ``flats``, the last step's, or made again from the dicts when one holds other arrays:
        a fresh state, a load, a restored snapshot)."""
        key = tuple(id(s) for s in states)
        flat = flats.get(key)
        if flat is not None and all(s.get("exp_avg") is vm and s.get("exp_avg_sq") is vv
                                    for s, vm, vv in zip(states, *flat[2:], strict=True)):
            self._flat[key] = flat
            return flat[:2]
        if "step" in states[0]:
            m = np.concatenate([s["exp_avg"].reshape(-1) for s in states])
            v = np.concatenate([s["exp_avg_sq"].reshape(-1) for s in states])
        else:
            m, v = grad * 0.0, grad * 0.0                   # as the first single update
            for s in states:
                s["step"] = 0
        views_m, views_v, lo = [], [], 0
        for p, s in zip(params, states, strict=True):
            hi = lo + p.data.size
            s["exp_avg"] = m[lo:hi].reshape(p.data.shape)
            s["exp_avg_sq"] = v[lo:hi].reshape(p.data.shape)
            views_m.append(s["exp_avg"])
            views_v.append(s["exp_avg_sq"])
            lo = hi
        self._flat[key] = (m, v, views_m, views_v)
        return m, v

    def __getstate__(self):
        # A copy or pickle would hold the moments twice and the views as copies: drop the flat
        # arrays; the next step gathers them again from the state dicts.
        state = self.__dict__.copy()
        state.pop("_flat", None)
        return state

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

    def _decay(self, lr, weight_decay):
        """``(l2, decay)``: AdamW shrinks the weights by ``lr · λ`` of themselves."""
        return 0.0, (1.0 - lr * weight_decay if weight_decay else 1.0)

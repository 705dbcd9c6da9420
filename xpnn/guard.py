"""Finiteness checks of many arrays at the cost of one device synchronisation.

``Sequential.fit`` guarantees that after a step either every weight is finite or training
stopped with the last finite weights restored. The fast NumPy trainer learns this from its
optimizer update itself (``trainer.update()`` returns it, computed in the same pass); the
generic path takes the optimizer's report (``Optimizer.params_finite``: Adam's update says so on
the host) and otherwise asks :func:`all_finite` about the parameters after ``optimizer.step``.

Finite weights can still give infinite outputs (``x·W`` overflows float32): at the end of every
epoch ``fit`` asks :func:`outputs_bounded` whether the network's outputs are finite for inputs
as large as the training data's, and checks the outputs on the data only when that bound is
inconclusive.
"""

from __future__ import annotations

import math

import numpy as np


def finite_flag(xp, arrays):
    """A 0-d boolean array of namespace ``xp``: True when every element of every array in
    ``arrays`` is finite (True for no arrays). Stays on the device: no synchronisation."""
    flag = None
    for a in arrays:
        f = xp.all(xp.isfinite(a))
        flag = f if flag is None else xp.logical_and(flag, f)
    return flag


def all_finite(xp, arrays) -> bool:
    """Whether every element of every array in ``arrays`` is finite, as a Python bool (one
    device synchronisation on a GPU, however many arrays)."""
    flag = finite_flag(xp, arrays)
    return True if flag is None else bool(flag)


def layer_bound(layer, m: float) -> float:
    """An upper bound on ``|y|`` for ``y = layer(x)`` in inference over every ``x`` with
    ``|x| <= m``: the layer's ``Layer.output_bound`` (Dense: ``m · maxⱼ Σᵢ |Wᵢⱼ| + max |b|``;
    the bounded activations 1), or inf when its class changed ``forward`` after the class
    that wrote the bound (a user's subclass of a layer with a bound)."""
    cls = type(layer)
    owner = next(c for c in cls.__mro__ if "output_bound" in vars(c))
    if cls.forward is not owner.forward:
        return math.inf
    return layer.output_bound(m)


def outputs_bounded(model, max_abs_input: float) -> bool:
    """Whether every intermediate and output value of ``model`` (inference mode) is finite for
    any input with ``|x| <= max_abs_input``, by a bound propagated through the layers: one
    reduction per Dense, no data. False means only that the bound says nothing (the outputs
    must then be checked on the data)."""
    largest = float(np.finfo(model.dtype).max)
    m = float(max_abs_input)
    for layer in model.layers:
        if not m <= largest:          # (NaN too)
            return False
        m = layer_bound(layer, m)
    return m <= largest


__all__ = ["all_finite", "finite_flag", "layer_bound", "outputs_bounded"]


def quiet():
    """NumPy's floating-point warnings silenced (a context manager), for inside a training
    step: a step that overflows is caught by the finiteness checks, and
    :class:`~xpnn.errors.TrainingDivergedError` says what happened."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")

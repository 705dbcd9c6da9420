"""Finiteness checks of many arrays at the cost of one device synchronisation.

``Sequential.fit`` guarantees that after a step either every weight is finite or training
stopped with the last finite weights restored. The fast NumPy trainer learns this from its
optimizer update itself (``trainer.update()`` returns it, computed in the same pass); the
generic path asks :func:`all_finite` about the parameters after ``optimizer.step``.

Finite weights can still give infinite outputs (``x·W`` overflows float32): at the end of every
epoch ``fit`` asks :func:`outputs_bounded` whether the network's outputs are finite for inputs
as large as the training data's, and checks the outputs on the data only when that bound is
inconclusive.
"""

from __future__ import annotations

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


def layer_bound(layer, m: float, xp) -> float:
    """An upper bound on ``|y|`` for ``y = layer(x)`` in inference over every ``x`` with
    ``|x| <= m``. Dense: ``m · maxⱼ Σᵢ |Wᵢⱼ| + max |b|``; the bounded activations give 1
    (Softmax of finite logits is finite); other layers give their
    ``Layer.output_bound`` (inf when they do not know one)."""
    kind = type(layer).__name__
    if kind in ("ReLU", "Identity", "Dropout"):
        return m
    if kind in ("Sigmoid", "Tanh", "Softmax"):
        return 1.0
    if kind == "LeakyReLU":
        return m * max(1.0, abs(layer.negative_slope))
    if kind == "Rescaling":
        return m * abs(layer.scale) + abs(layer.offset)
    if kind == "Dense":
        column = float(xp.max(xp.sum(xp.abs(layer.W.data), axis=0)))
        bias = 0.0 if layer.b is None else float(xp.max(xp.abs(layer.b.data)))
        return m * column + bias if m else bias
    return layer.output_bound(m)


def outputs_bounded(model, max_abs_input: float) -> bool:
    """Whether every intermediate and output value of ``model`` (inference mode) is finite for
    any input with ``|x| <= max_abs_input``, by a bound propagated through the layers: one
    reduction per Dense, no data. False means only that the bound says nothing (the outputs
    must then be checked on the data)."""
    import numpy as np

    largest = float(np.finfo(model.dtype).max)
    m = float(max_abs_input)
    xp = model.backend.xp
    for layer in model.layers:
        if not m <= largest:          # (NaN too)
            return False
        m = layer_bound(layer, m, xp)
    return m <= largest


__all__ = ["all_finite", "finite_flag", "layer_bound", "outputs_bounded"]


def quiet():
    """NumPy's floating-point warnings silenced (a context manager), for inside a training
    step: a step that overflows is caught by the finiteness checks, and
    :class:`~xpnn.errors.TrainingDivergedError` says what happened."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")

"""Finiteness checks of many arrays at the cost of one device synchronisation.

``Sequential.fit`` guarantees that after a step either every weight is finite or training
stopped with the last finite weights restored. The fast NumPy trainer learns this from its
optimizer update itself (``trainer.update()`` returns it, computed in the same pass); the
generic path asks :func:`all_finite` about the parameters after ``optimizer.step``.
"""

from __future__ import annotations


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


__all__ = ["all_finite", "finite_flag"]

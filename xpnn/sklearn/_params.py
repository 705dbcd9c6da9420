"""Checks of an estimator's constructor parameters, run by ``fit`` (as scikit-learn does).

Each raises ``ValueError("<Estimator>: <param> must be <expected>, got <value>")``.
"""

from __future__ import annotations

import numbers

import numpy as np


class ParamChecks:
    """The checks, bound to one estimator whose attributes hold the parameters."""

    def __init__(self, estimator):
        self.estimator = estimator
        self.name = type(estimator).__name__

    def bad(self, param, expected):
        """Raise the ValueError for ``param``, which must be ``expected``."""
        value = getattr(self.estimator, param)
        raise ValueError(f"{self.name}: {param} must be {expected}, got {value!r}")

    def real(self, param, low, high=None, low_open=False, high_open=True):
        """``param`` is a finite real number in ``[low, high)`` (ends as ``low_open`` and
        ``high_open`` say; ``high=None``: no upper end)."""
        v = getattr(self.estimator, param)
        if (not isinstance(v, numbers.Real) or isinstance(v, bool) or not np.isfinite(v)
                or (v <= low if low_open else v < low)
                or (high is not None and (v >= high if high_open else v > high))):
            lo = "(" if low_open else "["
            hi = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
            self.bad(param, f"a number in {lo}{low}, {hi}")

    def integer(self, param, low):
        """``param`` is an int (not a bool) ``>= low``."""
        v = getattr(self.estimator, param)
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low:
            self.bad(param, f"an int >= {low}")

    def layer_sizes(self, param):
        """``param`` is an int or a sequence of ints, each ``>= 1``; returns them as a list."""
        sizes = getattr(self.estimator, param)
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else sizes
        try:
            sizes = list(sizes)
        except TypeError:
            self.bad(param, "an int or a sequence of ints >= 1")
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
                   for s in sizes):
            self.bad(param, "an int or a sequence of ints >= 1")
        return [int(s) for s in sizes]

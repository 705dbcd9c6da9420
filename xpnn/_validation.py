"""Checks for hyperparameters: one place that says what a valid number is.

Every constructor argument that is a number goes through :func:`check_real` or
:func:`check_int`. Both accept Python and NumPy scalars (``np.float32(1e-3)``, ``np.int64(4)``),
refuse ``bool`` (``lr=True`` is a mistake, not 1.0), strings and non-finite values, and return a
plain Python ``float`` / ``int``, so hyperparameters stay JSON-serialisable and never carry a
NumPy dtype into the arithmetic. The error names the owner, the parameter, the allowed range and
the value received::

    ValueError: Adam: eps must be a finite number > 0, got inf
    ValueError: Adam: beta1 must be in [0, 1), got 1.0
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def _interval(low, high, low_open, high_open) -> str:
    low = None if low is None else f"{low:g}"
    high = None if high is None else f"{high:g}"
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def check_real(name: str, value, owner: str, low=None, high=None, *, low_open: bool = False,
               high_open: bool = False) -> float:
    """``value`` as a Python float, after checking it is a finite real number in the interval.

    Parameters
    ----------
    name, owner : str
        For the message: the parameter (``"lr"``) and who takes it (``"Adam"``).
    value : object
        What the caller passed.
    low, high : float or None
        Bounds (None: unbounded on that side).
    low_open, high_open : bool
        Whether the bound itself is excluded (``low=0, low_open=True`` means ``> 0``).

    Raises
    ------
    ValueError
        Not a real number (bool, str, complex, None...), NaN or infinite, or out of range.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        x = float(value)
        ok = math.isfinite(x)
        if ok and low is not None:
            ok = x > low if low_open else x >= low
        if ok and high is not None:
            ok = x < high if high_open else x <= high
    if not ok:
        where = _interval(low, high, low_open, high_open)
        what = where if where.startswith("in ") else f"a finite number {where}".rstrip()
        raise ValueError(f"{owner}: {name} must be {what}, got {value!r}")
    return x


def check_int(name: str, value, owner: str, low=None, high=None) -> int:
    """``value`` as a Python int, after checking it is an integer (not a bool) in
    ``[low, high]``; raises ValueError naming owner, parameter, range and value."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok:
        n = int(value)
        ok = (low is None or n >= low) and (high is None or n <= high)
    if not ok:
        where = _interval(low, high, False, False)
        raise ValueError(f"{owner}: {name} must be an int{' ' + where if where else ''}, "
                         f"got {value!r}")
    return n


def dtype_name(dtype, allowed=("float32", "float64")) -> str | None:
    """The name (``"float32"``) of a floating dtype given as a name, a NumPy dtype or a type
    object (``np.float64``, ``np.dtype("float32")``; ``float`` is float64, as NumPy reads it),
    or None when it is none of ``allowed``."""
    name = None
    if isinstance(dtype, (str, type, np.dtype)) and not isinstance(dtype, bool):
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    return name if name in allowed else None


def check_dtype(dtype, owner: str, allowed=("float32", "float64")) -> str:
    """:func:`dtype_name` of ``dtype``; raises ValueError naming ``owner``, the allowed dtypes
    and the value when it is none of them."""
    name = dtype_name(dtype, allowed)
    if name is None:
        raise ValueError(f"{owner}: dtype must be one of {allowed} (a name, a NumPy dtype or "
                         f"a type such as np.float32), got {dtype!r}")
    return name


def _floats(config, prefix=""):
    """``(name, value)`` of every float in a JSON-like configuration (nested: ``lr.initial``)."""
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, float):
            yield name, value
        elif isinstance(value, (dict, list, tuple)):
            yield from _floats(value, name + ".")


def check_config_in_dtype(config: dict, dtype: str, owner: str) -> None:
    """Raise ValueError when a float of ``config`` (a layer's or an optimizer's
    ``get_config()``) is finite as a Python float but beyond the range of the model's
    ``dtype`` (``LeakyReLU(3.5e38)`` in a float32 model would compute with inf)."""
    largest = float(np.finfo(dtype).max)
    for name, value in _floats(config):
        if abs(value) > largest:
            raise ValueError(f"{owner}: {name}={value!r} is beyond the {dtype} range of the "
                             f"model (largest {largest:.3g}): use a smaller value or "
                             "dtype='float64'")

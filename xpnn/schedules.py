"""Learning-rate schedules: ``lr = schedule(epoch)`` for epochs ``0, 1, 2, ...``.

A schedule is a small callable object with its formula in its docstring. Use it either way:

* as an optimizer's learning rate, ``Adam(lr=CosineDecay(1e-3, epochs=50))``: ``fit`` then sets
  ``optimizer.lr = schedule(epoch)`` at the start of every epoch (before the callbacks'
  ``on_epoch_begin``), and ``optimizer.lr`` is ``schedule(0)`` until the first epoch;
* with the callback, ``LearningRateScheduler(CosineDecay(1e-3, epochs=50))``.

``epoch`` is the index ``fit`` gives its callbacks, or a fractional epoch ``e + b / n`` (batch
``b`` of ``n``) when a scheduler callback updates every step (``update_freq="batch"``, as
RealMLP applies its schedules). The same schedules also drive other hyperparameters, through
:class:`~xpnn.WeightDecayScheduler` and :class:`~xpnn.DropoutScheduler`. Schedules are plain
data:
``schedule.get_config()`` is JSON, :func:`from_config` rebuilds the object, and a model whose
optimizer has a schedule saves and loads it with the rest of its configuration.

The formulas are those of ``torch.optim.lr_scheduler`` stepped once per epoch (``StepLR``,
``ExponentialLR``, ``CosineAnnealingLR`` up to ``T_max``, ``LinearLR`` for the warm-up), and
RealMLP's (Holzmüller et al., 2024; pytabkit's ``models/training/scheduling.py``):
:class:`CosLog` (``coslog4``) and :class:`FlatCosineDecay` (``flat_cos``).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from ._validation import check_int, check_real


def _number(owner, name, value, low=None, low_open=False, integer=False):
    """A checked hyperparameter (:mod:`xpnn._validation`): an int, or a finite real number."""
    if integer:
        return check_int(name, value, owner, low=low)
    return check_real(name, value, owner, low=low, low_open=low_open)


class Schedule:
    """Base class: subclasses implement :meth:`lr` and :meth:`get_config`.

    Calling the schedule, ``schedule(epoch)``, returns ``lr(epoch)`` as a Python float. A second
    argument (the current rate, as :class:`~xpnn.LearningRateScheduler` passes to plain
    functions) is accepted and ignored.
    """

    def lr(self, epoch: float) -> float:
        """The learning rate of ``epoch``.

        Parameters
        ----------
        epoch : int or float
            0-based epoch, possibly fractional (``e + b / n`` at batch ``b`` of ``n``).

        Returns
        -------
        float
            The rate.
        """
        raise NotImplementedError

    def __call__(self, epoch, lr=None) -> float:
        owner = type(self).__name__
        if isinstance(epoch, Integral):
            epoch = _number(owner, "epoch", epoch, low=0, integer=True)
        else:                            # a fractional epoch: a step inside an epoch
            epoch = _number(owner, "epoch", epoch, low=0)
        return float(self.lr(epoch))

    def get_config(self) -> dict:
        """Constructor arguments, JSON-serialisable."""
        raise NotImplementedError

    def to_config(self) -> dict:
        """``{"class": name, "config": get_config()}``, read back by :func:`from_config`."""
        return {"class": type(self).__name__, "config": self.get_config()}

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """``lr(e) = value``.

    Parameters
    ----------
    value : float
        The rate, > 0.
    """

    def __init__(self, value: float):
        self.value = _number("Constant", "value", value, low=0, low_open=True)

    def lr(self, epoch):
        return self.value

    def get_config(self):
        return {"value": self.value}


class StepDecay(Schedule):
    """``lr(e) = initial · gamma ** floor(e / step_size)``: divide by ``1/gamma`` every
    ``step_size`` epochs (``torch.optim.lr_scheduler.StepLR``).

    Parameters
    ----------
    initial : float
        Rate of epochs ``0 .. step_size-1``.
    step_size : int
        Epochs between two decays.
    gamma : float
        Factor applied at each decay.
    """

    def __init__(self, initial: float, step_size: int, gamma: float = 0.1):
        self.initial = _number("StepDecay", "initial", initial, low=0, low_open=True)
        self.step_size = _number("StepDecay", "step_size", step_size, low=1, integer=True)
        self.gamma = _number("StepDecay", "gamma", gamma, low=0, low_open=True)

    def lr(self, epoch):
        return self.initial * self.gamma ** (epoch // self.step_size)

    def get_config(self):
        return {"initial": self.initial, "step_size": self.step_size, "gamma": self.gamma}


class ExponentialDecay(Schedule):
    """``lr(e) = initial · rate ** (e / decay_epochs)`` (with ``staircase``,
    ``floor(e / decay_epochs)``). With ``decay_epochs=1`` this is
    ``torch.optim.lr_scheduler.ExponentialLR(gamma=rate)``; the parameters are those of
    ``keras.optimizers.schedules.ExponentialDecay`` counted in epochs.

    Parameters
    ----------
    initial : float
    rate : float
        Factor per ``decay_epochs`` epochs (``0 < rate``; below 1 to decay).
    decay_epochs : int
    staircase : bool
        Decay in steps rather than smoothly.
    """

    def __init__(self, initial: float, rate: float, decay_epochs: int = 1,
                 staircase: bool = False):
        self.initial = _number("ExponentialDecay", "initial", initial, low=0, low_open=True)
        self.rate = _number("ExponentialDecay", "rate", rate, low=0, low_open=True)
        self.decay_epochs = _number("ExponentialDecay", "decay_epochs", decay_epochs, low=1,
                                    integer=True)
        self.staircase = bool(staircase)

    def lr(self, epoch):
        p = epoch / self.decay_epochs
        return self.initial * self.rate ** (math.floor(p) if self.staircase else p)

    def get_config(self):
        return {"initial": self.initial, "rate": self.rate, "decay_epochs": self.decay_epochs,
                "staircase": self.staircase}


class CosineDecay(Schedule):
    """Half a cosine from ``initial`` down to ``final`` over ``epochs`` epochs::

        lr(e) = final + (initial - final) · (1 + cos(π · min(e, epochs) / epochs)) / 2

    so ``lr(0) = initial`` and ``lr(epochs) = final`` (and after). This is
    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=epochs, eta_min=final)`` for
    ``e <= epochs``, and Keras's ``CosineDecay`` with ``alpha = final / initial``. Training for
    ``epochs`` epochs, the last one runs at a small rate above ``final``; give
    ``epochs = n - 1`` to reach ``final`` in the last of ``n`` epochs.

    Parameters
    ----------
    initial : float
    epochs : int
        Length of the decay, >= 1.
    final : float
        Rate at the end of the decay, >= 0.
    """

    def __init__(self, initial: float, epochs: int, final: float = 0.0):
        self.initial = _number("CosineDecay", "initial", initial, low=0, low_open=True)
        self.epochs = _number("CosineDecay", "epochs", epochs, low=1, integer=True)
        self.final = _number("CosineDecay", "final", final, low=0)

    def lr(self, epoch):
        e = min(epoch, self.epochs)
        return self.final + 0.5 * (self.initial - self.final) * (
            1.0 + math.cos(math.pi * e / self.epochs))

    def get_config(self):
        return {"initial": self.initial, "epochs": self.epochs, "final": self.final}


class Warmup(Schedule):
    """A linear warm-up of ``epochs`` epochs in front of another schedule::

        lr(e) = start + (s(0) - start) · (e + 1) / (epochs + 1)     for e < epochs
        lr(e) = s(e - epochs)                                        for e >= epochs

    The rate climbs in equal steps from ``start`` towards the schedule's first rate ``s(0)``,
    reached at epoch ``epochs``, where the wrapped schedule starts at its own epoch 0. No epoch
    runs at ``start`` itself (with ``start=0`` the first epoch already trains).

    Parameters
    ----------
    schedule : Schedule or float
        What follows the warm-up (a number: a constant rate).
    epochs : int
        Warm-up epochs, >= 1.
    start : float
        Rate the line starts from, >= 0.

    Examples
    --------
    >>> schedule = Warmup(CosineDecay(1e-3, epochs=45), epochs=5)     # 50 epochs in all
    >>> [round(schedule(epoch), 6) for epoch in (0, 4, 5, 49)]
    [0.000167, 0.000833, 0.001, 1e-06]
    """

    def __init__(self, schedule, epochs: int, start: float = 0.0):
        if isinstance(schedule, Real) and not isinstance(schedule, bool):
            schedule = Constant(schedule)
        if not isinstance(schedule, Schedule):
            raise TypeError(f"Warmup: schedule must be an xpnn.schedules.Schedule or a number, "
                            f"got {type(schedule).__name__}")
        self.schedule = schedule
        self.epochs = _number("Warmup", "epochs", epochs, low=1, integer=True)
        self.start = _number("Warmup", "start", start, low=0)

    def lr(self, epoch):
        if epoch >= self.epochs:
            return self.schedule(epoch - self.epochs)
        target = self.schedule(0)
        return self.start + (target - self.start) * (epoch + 1) / (self.epochs + 1)

    def get_config(self):
        return {"schedule": self.schedule.to_config(), "epochs": self.epochs,
                "start": self.start}


class CosLog(Schedule):
    """RealMLP's ``coslog4``: ``cycles`` cosine cycles, evenly spaced in log-time, each ending
    at 0 and the next one twice as long::

        t     = min(e, epochs) / epochs                       (progress, 0 → 1)
        lr(e) = peak · (1 - cos(2π · log₂(1 + (2^cycles - 1) · t))) / 2

    ``lr`` is 0 at ``t = 0`` and at the end of each cycle, ``t = (2^i - 1) / (2^cycles - 1)``
    for ``i = 1 .. cycles`` (with 4 cycles ``t = 1/15, 3/15, 7/15, 1``), and ``peak`` halfway
    through each cycle in log-time. This is ``CoslogFunc(n_cycles)`` of pytabkit
    (``models/training/scheduling.py``, Holzmüller et al., "Better by default", 2024), a
    function of the fraction of training done, which pytabkit evaluates before every step;
    use it per step, ``LearningRateScheduler(CosLog(...), update_freq="batch")``, so that
    the first epoch does not train at rate 0.

    Parameters
    ----------
    peak : float
        Highest rate, > 0 (RealMLP's ``lr``).
    epochs : int
        Length of the schedule, >= 1 (the epochs trained).
    cycles : int
        Number of cycles, >= 1.

    Examples
    --------
    >>> schedule = CosLog(0.2, epochs=15)           # cycles end at epochs 1, 3, 7 and 15
    >>> [round(schedule(epoch), 6) for epoch in (0, 1, 3, 7, 15)]
    [0.0, 0.0, 0.0, 0.0, 0.0]
    >>> [round(schedule(2 ** k - 1), 6) for k in (0.5, 1.5, 2.5, 3.5)]     # the peaks
    [0.2, 0.2, 0.2, 0.2]
    """

    def __init__(self, peak: float, epochs: int, cycles: int = 4):
        self.peak = _number("CosLog", "peak", peak, low=0, low_open=True)
        self.epochs = _number("CosLog", "epochs", epochs, low=1, integer=True)
        self.cycles = _number("CosLog", "cycles", cycles, low=1, integer=True)

    def lr(self, epoch):
        t = min(epoch, self.epochs) / self.epochs
        phase = math.log2(1.0 + (2.0 ** self.cycles - 1.0) * t)
        return self.peak * 0.5 * (1.0 - math.cos(2.0 * math.pi * phase))

    def get_config(self):
        return {"peak": self.peak, "epochs": self.epochs, "cycles": self.cycles}


class FlatCosineDecay(Schedule):
    """RealMLP's ``flat_cos``: constant for the first ``flat`` fraction of training, then half
    a cosine down to ``final``::

        t     = min(e, epochs) / epochs
        lr(e) = initial                                               for t < flat
        lr(e) = final + (initial - final) · (1 + cos(π · u)) / 2,     u = (t - flat) / (1 - flat)

    pytabkit (``models/training/scheduling.py``) defines ``flat_cos`` as
    ``combine_scheds([0.5, 0.5], [ConstantSchedule(1.0), cos_sched.scaled(1., 0.)])``: this
    with ``flat=0.5, final=0``; RealMLP_TD multiplies its dropout rate and its weight decay by
    it, evaluated before every step (:class:`~xpnn.DropoutScheduler`,
    :class:`~xpnn.WeightDecayScheduler` with ``update_freq="batch"``). fastai calls the same
    shape ``fit_flat_cos``.

    Parameters
    ----------
    initial : float
        Value of the flat part, >= 0.
    epochs : int
        Length of the schedule, >= 1.
    flat : float
        Fraction of the schedule at ``initial``, in [0, 1).
    final : float
        Value at the end, >= 0.

    Examples
    --------
    >>> schedule = FlatCosineDecay(0.02, epochs=10)
    >>> [round(schedule(epoch), 6) for epoch in (0, 4.9, 5, 7.5, 10)]
    [0.02, 0.02, 0.02, 0.01, 0.0]
    """

    def __init__(self, initial: float, epochs: int, flat: float = 0.5, final: float = 0.0):
        self.initial = _number("FlatCosineDecay", "initial", initial, low=0)
        self.epochs = _number("FlatCosineDecay", "epochs", epochs, low=1, integer=True)
        self.flat = check_real("flat", flat, "FlatCosineDecay", 0.0, 1.0, high_open=True)
        self.final = _number("FlatCosineDecay", "final", final, low=0)

    def lr(self, epoch):
        t = min(epoch, self.epochs) / self.epochs
        if t < self.flat:
            return self.initial
        u = (t - self.flat) / (1.0 - self.flat)
        return self.final + 0.5 * (self.initial - self.final) * (1.0 + math.cos(math.pi * u))

    def get_config(self):
        return {"initial": self.initial, "epochs": self.epochs, "flat": self.flat,
                "final": self.final}


SCHEDULES = {cls.__name__: cls for cls in (Constant, StepDecay, ExponentialDecay, CosineDecay,
                                           Warmup, CosLog, FlatCosineDecay)}


def from_config(spec: dict) -> Schedule:
    """The schedule described by ``schedule.to_config()``.

    Parameters
    ----------
    spec : dict
        ``{"class": name, "config": {...}}``.

    Returns
    -------
    Schedule
        A new schedule equal to the one that wrote ``spec``.
    """
    if not isinstance(spec, dict) or spec.get("class") not in SCHEDULES:
        raise ValueError(f"not a schedule configuration (expected {{'class': one of "
                         f"{sorted(SCHEDULES)}, 'config': {{...}}}}), got {spec!r}")
    config = dict(spec.get("config", {}))
    if spec["class"] == "Warmup":
        config["schedule"] = from_config(config["schedule"])
    return SCHEDULES[spec["class"]](**config)


__all__ = ["Constant", "CosLog", "CosineDecay", "ExponentialDecay", "FlatCosineDecay",
           "SCHEDULES", "Schedule", "StepDecay", "Warmup", "from_config"]

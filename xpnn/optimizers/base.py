"""The :class:`Optimizer` interface.

An optimizer holds hyperparameters (plain Python floats, so they can be changed between epochs:
``model.optimizer.lr = 1e-4``) and per-parameter state (momentum buffers, moment estimates), one
``dict`` per parameter in the model's parameter order. ``step(params)`` applies one update using
each ``param.grad``. Updates are written in place (``p.data -= ...``), exactly as ``torch.optim``
writes them, so a parameter keeps its identity (and any buffer it is a view of).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._validation import check_real
from ..schedules import Schedule, from_config


@dataclass(frozen=True)
class StateSpec:
    """The per-parameter state an optimizer keeps, declared once per class (``STATE``).

    Every parameter's state dict holds, after its first update, each buffer of :attr:`buffers`
    that is in use (an array of the parameter's shape and dtype) and, with :attr:`counts_steps`,
    ``"step"``: the updates it has seen. The flat-buffer trainers (:mod:`xpnn.fastpath`) give
    each buffer in use one flat array, in this order, and pass them to the optimizer's kernel;
    :mod:`xpnn.serialization` stores and checks exactly these entries.

    Attributes
    ----------
    buffers : tuple of str
        Names of the arrays shaped like the parameter.
    counts_steps : bool
        Whether ``"step"`` is kept (bias correction).
    nonnegative : tuple of str
        Buffers that never hold a negative value (running squares).
    needs : dict
        ``{buffer: hyperparameter}``: the buffer exists only when that hyperparameter is
        non-zero (a momentum buffer without momentum).
    from_gradient : tuple of str
        Buffers whose first value is the gradient itself rather than an update of zeros
        (SGD's momentum buffer, ``b ← g``): a trainer tells its kernel whether they exist yet.
    """

    buffers: tuple = ()
    counts_steps: bool = False
    nonnegative: tuple = ()
    needs: dict = field(default_factory=dict)
    from_gradient: tuple = ()

    def in_use(self, optimizer) -> tuple:
        """The buffers ``optimizer`` keeps with its current hyperparameters."""
        return tuple(b for b in self.buffers
                     if b not in self.needs or getattr(optimizer, self.needs[b]))

    @property
    def keys(self) -> frozenset:
        """Every entry a state dict may have."""
        return frozenset(self.buffers) | ({"step"} if self.counts_steps else frozenset())


class Optimizer:
    """Base class: subclasses implement :meth:`update` for one parameter and declare the
    per-parameter state it keeps in ``STATE`` (a :class:`~xpnn.optimizers.StateSpec`).

    ``lr`` is a number or a schedule from :mod:`xpnn.schedules` (or its ``to_config()`` dict).
    With a schedule, ``self.schedule`` holds it, ``self.lr`` starts at ``schedule(0)`` and
    ``fit`` sets ``self.lr = schedule(epoch)`` at the start of every epoch; ``get_config``
    gives the schedule's configuration as ``"lr"``, so saving and loading keep it.

    Parameters
    ----------
    lr : float or xpnn.schedules.Schedule or dict
        Learning rate, >= 0, or a schedule of the epoch (or its ``to_config()`` dict).

    Attributes
    ----------
    state : list of dict
        One dict per parameter, in the model's parameter order, holding the entries of
        ``STATE`` (empty before the first step).
    iterations : int
        Steps taken.
    """

    #: The per-parameter state :meth:`update` keeps.
    STATE = StateSpec()
    #: After :meth:`step`: True (False) when every update reported that its new weights are
    #: all finite (one of them not), None when some update did not say (the caller checks).
    params_finite = None

    def __init__(self, lr):
        owner = type(self).__name__
        if isinstance(lr, dict):
            lr = from_config(lr)
        self.schedule = lr if isinstance(lr, Schedule) else None
        if self.schedule is not None:
            lr = self.schedule(0)
        elif callable(lr):
            raise TypeError(f"{owner}: lr must be a number or an xpnn.schedules object, got "
                            f"{lr!r}; for a plain function use "
                            "xpnn.LearningRateScheduler(function)")
        self.lr = lr               # checked by the setter: one rule for every lr
        self.state: list[dict] = []
        self.iterations = 0

    @property
    def lr(self) -> float:
        """The learning rate, a finite Python float >= 0, as ``torch.optim`` takes it;
        checked whenever it is set (by the constructor, a schedule, a callback,
        ``model.optimizer.lr = ...`` or :func:`xpnn.load`), by one rule: 0 is allowed
        everywhere (a schedule may end at 0, and a model saved then loads again), negative,
        NaN and infinite rates are refused."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = check_real("lr", value, type(self).__name__, 0.0)

    def step(self, params) -> None:
        """Update every parameter from its ``grad``: :meth:`update` on each, in order, each
        with its own ``lr_factor`` and ``wd_factor`` (see :class:`~xpnn.Parameter`).

        Parameters
        ----------
        params : list of Parameter
            The model's parameters (``model.params``), each with its ``grad`` set; the same
            list, in the same order, at every step (the state is matched by position).
        """
        if len(self.state) != len(params):
            self.state = [{} for _ in params]
        self._close_step([self.update(p, p.grad, state)
                          if p.lr_factor == 1.0 and p.wd_factor == 1.0
                          else self._update_scaled(p, state)
                          for p, state in zip(params, self.state, strict=True)])

    def _close_step(self, reports) -> None:
        """End a step: :attr:`params_finite` from the updates' ``reports``; count it."""
        self.params_finite = (False if any(r is False for r in reports) else
                              True if all(r is True for r in reports) else None)
        self.iterations += 1

    def _update_scaled(self, param, state):
        """:meth:`update` with ``lr · param.lr_factor`` and ``weight_decay ·
        param.wd_factor``, as a ``torch.optim`` parameter group with those values."""
        lr, decay = self._lr, getattr(self, "weight_decay", 0.0)
        self._lr = lr * param.lr_factor
        if decay:
            self.weight_decay = decay * param.wd_factor
        try:
            return self.update(param, param.grad, state)
        finally:
            self._lr = lr
            if decay:
                self.weight_decay = decay

    def update(self, param, grad, state: dict):
        """Apply one update to ``param.data`` in place, keeping what it needs in ``state``;
        returns whether the new ``param.data`` is finite when the update can tell without a
        device synchronisation (a compiled kernel's own pass, a check on the host), otherwise
        None.

        Parameters
        ----------
        param : Parameter
            The parameter; ``param.data`` (any shape) is updated in place.
        grad : array
            Gradient of the loss with respect to ``param.data``, of the same shape.
        state : dict
            This parameter's state (``STATE``'s buffers and ``"step"``); empty at the first
            update, filled in place.
        """
        raise NotImplementedError

    def reset(self) -> None:
        """Forget all state (moments, step counts), as if freshly constructed."""
        self.state = []
        self.iterations = 0

    def lr_config(self):
        """``lr`` as ``get_config`` gives it: the number, or the schedule's ``to_config()``."""
        return self.lr if self.schedule is None else self.schedule.to_config()

    def get_config(self) -> dict:
        """Constructor arguments, JSON-serialisable."""
        return {"lr": self.lr_config()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check_positive(name, value, owner, allow_zero=False) -> float:
    """``value`` as a float, checked to be finite and > 0 (>= 0 with ``allow_zero``)."""
    return check_real(name, value, owner, 0.0, low_open=not allow_zero)


def _check_fraction(name, value, owner) -> float:
    """``value`` as a float, checked to be in [0, 1)."""
    return check_real(name, value, owner, 0.0, 1.0, high_open=True)

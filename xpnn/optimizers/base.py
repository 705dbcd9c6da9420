"""The :class:`Optimizer` interface.

An optimizer holds hyperparameters (plain Python floats, so they can be changed between epochs:
``model.optimizer.lr = 1e-4``) and per-parameter state (momentum buffers, moment estimates), one
``dict`` per parameter in the model's parameter order. ``step(params)`` applies one update using
each ``param.grad``. Updates are written in place (``p.data -= ...``), exactly as ``torch.optim``
writes them, so a parameter keeps its identity (and any buffer it is a view of).
"""

from __future__ import annotations

from ..schedules import Schedule, from_config


class Optimizer:
    """Base class: subclasses implement :meth:`update` for one parameter.

    ``lr`` is a number or a schedule from :mod:`xpnn.schedules` (or its ``to_config()`` dict).
    With a schedule, ``self.schedule`` holds it, ``self.lr`` starts at ``schedule(0)`` and
    ``fit`` sets ``self.lr = schedule(epoch)`` at the start of every epoch; ``get_config``
    gives the schedule's configuration as ``"lr"``, so saving and loading keep it.
    """

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
        _check_positive("lr", lr, owner)
        self.lr = float(lr)
        self.state: list[dict] = []
        self.iterations = 0

    def step(self, params) -> None:
        """Update every parameter from its ``grad``."""
        if len(self.state) != len(params):
            self.state = [{} for _ in params]
        for p, state in zip(params, self.state, strict=True):
            self.update(p, p.grad, state)
        self.iterations += 1

    def update(self, param, grad, state: dict) -> None:
        """Apply one update to ``param.data`` in place, keeping what it needs in ``state``."""
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


def _check_positive(name, value, owner, allow_zero=False):
    ok = isinstance(value, (int, float)) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner}: {name} must be a number {bound}, got {value!r}")


def _check_fraction(name, value, owner):
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value!r}")

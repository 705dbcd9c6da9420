"""The :class:`Optimizer` interface.

An optimizer holds hyperparameters (plain Python floats, so they can be changed between epochs:
``model.optimizer.lr = 1e-4``) and per-parameter state (momentum buffers, moment estimates), one
``dict`` per parameter in the model's parameter order. ``step(params)`` applies one update using
each ``param.grad``. Updates are written in place (``p.data -= ...``), exactly as ``torch.optim``
writes them, so a parameter keeps its identity (and any buffer it is a view of).
"""

from __future__ import annotations

from .._validation import check_real


class Optimizer:
    """Base class: subclasses implement :meth:`update` for one parameter."""

    def __init__(self, lr: float):
        self.lr = lr
        self.state: list[dict] = []
        self.iterations = 0

    @property
    def lr(self) -> float:
        """The learning rate, a finite Python float > 0; checked whenever it is set (by the
        constructor, a callback or ``model.optimizer.lr = ...``)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = check_real("lr", value, type(self).__name__, 0.0, low_open=True)

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

    def get_config(self) -> dict:
        """Constructor arguments, JSON-serialisable."""
        return {"lr": self.lr}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check_positive(name, value, owner, allow_zero=False) -> float:
    """``value`` as a float, checked to be finite and > 0 (>= 0 with ``allow_zero``)."""
    return check_real(name, value, owner, 0.0, low_open=not allow_zero)


def _check_fraction(name, value, owner) -> float:
    """``value`` as a float, checked to be in [0, 1)."""
    return check_real(name, value, owner, 0.0, 1.0, high_open=True)

"""The :class:`Optimizer` interface.

An optimizer holds hyperparameters (plain Python floats, so they can be changed between epochs:
``model.optimizer.lr = 1e-4``) and per-parameter state (momentum buffers, moment estimates), one
``dict`` per parameter in the model's parameter order. ``step(params)`` applies one update using
each ``param.grad``. Updates are written in place (``p.data -= ...``), exactly as ``torch.optim``
writes them, so a parameter keeps its identity (and any buffer it is a view of).
"""

from __future__ import annotations


class Optimizer:
    """Base class: subclasses implement :meth:`update` for one parameter."""

    def __init__(self, lr: float):
        _check_positive("lr", lr, type(self).__name__)
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

    def get_config(self) -> dict:
        """Constructor arguments, JSON-serialisable."""
        return {"lr": self.lr}

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

"""Optimizers following ``torch.optim``'s update rules: SGD, RMSprop, Adam, AdamW."""

from .adam import Adam, AdamW
from .base import Optimizer, StateSpec
from .rmsprop import RMSprop
from .sgd import SGD

OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def get_optimizer(optimizer) -> Optimizer:
    """An :class:`Optimizer` from an instance, a class or a name (``"adam"``, ``"sgd"``...)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer()
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key in OPTIMIZERS:
            return OPTIMIZERS[key]()
    raise ValueError(f"unknown optimizer {optimizer!r}; valid names are: "
                     f"{', '.join(OPTIMIZERS)}")


__all__ = ["SGD", "Adam", "AdamW", "OPTIMIZERS", "Optimizer", "RMSprop", "StateSpec",
           "get_optimizer"]

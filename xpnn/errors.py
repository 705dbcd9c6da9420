"""Exceptions raised by xpnn: the bottom of the import graph (it imports nothing of xpnn)."""

from __future__ import annotations


class TrainingDivergedError(FloatingPointError):
    """The loss or the weights became NaN or infinite; the weights from before the bad step were
    kept."""


def diverged(value, epoch: int, batch: int, what: str = "loss") -> TrainingDivergedError:
    """The error for a non-finite ``what`` (``"loss"`` or ``"weights"``) at 0-based ``epoch`` and
    ``batch``."""
    return TrainingDivergedError(
        f"{what} became {value} at epoch {epoch + 1}, batch {batch + 1}: training stopped and "
        "the weights from before this step were kept (try a lower learning rate, or scale the "
        "inputs)")


__all__ = ["TrainingDivergedError", "diverged"]

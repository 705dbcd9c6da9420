"""Where a training run stands: the :class:`Position` a backup stores and a resume continues from.

A run is at the start of an epoch (``Position(epoch, 0)``) or inside one. Inside an epoch an exact
resume needs more than the batch index: the random generator's state at the epoch's start (it
gives the epoch's permutation), its state now (the next Dropout masks), and the epoch's running
sums (loss, weight, the metrics' states), so the epoch's logs come out as if it had never
stopped. Its JSON form is what model files store under ``training.position``
(:mod:`xpnn.serialization`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Position", "check_rng_state"]

_AT_EPOCH_START = ("epoch", "batch")
_FLOAT_MAX = 1.7976931348623157e308
_INSIDE_EPOCH = ("epoch", "batch", "epoch_rng", "rng", "loss", "weight", "metrics")


@dataclass(frozen=True)
class Position:
    """A training run's position (immutable).

    Attributes
    ----------
    epoch : int
        The epoch being trained (or, at an epoch's start, the next one).
    batch : int
        Batches of ``epoch`` already trained (0 at its start).
    epoch_rng, rng : dict or None
        The host generator's ``bit_generator.state`` at the epoch's start and now (None at an
        epoch's start).
    loss, weight : float
        The epoch's running sums ``Σ loss_b · rows_b`` and ``Σ rows_b`` (or sample weights).
    metrics : list of dict
        Every compiled metric's ``Metric.get_state()`` (in data-parallel training, summed over
        the ranks).
    """

    epoch: int
    batch: int = 0
    epoch_rng: dict | None = None
    rng: dict | None = None
    loss: float = 0.0
    weight: float = 0.0
    metrics: tuple = ()

    @property
    def inside_epoch(self) -> bool:
        """Whether the position is inside an epoch (it then carries the generator and sums)."""
        return self.epoch_rng is not None

    def to_json(self) -> dict:
        """The JSON form: ``{"epoch", "batch"}`` at an epoch's start, else every field."""
        if not self.inside_epoch:
            return {"epoch": int(self.epoch), "batch": int(self.batch)}
        return {"epoch": int(self.epoch), "batch": int(self.batch), "epoch_rng": self.epoch_rng,
                "rng": self.rng, "loss": float(self.loss), "weight": float(self.weight),
                "metrics": list(self.metrics)}

    @classmethod
    def from_json(cls, data, n_metrics: int | None = None) -> Position:
        """The Position of :meth:`to_json`'s form, checked (keys, types, generator states,
        ``n_metrics`` metric states when given). Raises ValueError saying what is wrong."""
        if not isinstance(data, dict) or not {"epoch", "batch"} <= set(data):
            raise ValueError("bad training position")
        allowed = _INSIDE_EPOCH if len(data) > 2 else _AT_EPOCH_START
        unknown = sorted(set(data) - set(allowed))
        missing = sorted(set(allowed) - set(data))
        if unknown or missing:
            raise ValueError(f"the training position has unknown entries {unknown}" if unknown
                             else f"the training position lacks {missing}")
        if not (_is_count(data["epoch"]) and _is_count(data["batch"])):
            raise ValueError("bad training position")
        if len(data) == 2:
            if data["batch"] != 0:
                raise ValueError("training position inside an epoch without its state")
            return cls(data["epoch"], 0)
        check_rng_state(data["epoch_rng"], "random generator state of the training position")
        check_rng_state(data["rng"], "random generator state of the training position")
        for key in ("loss", "weight"):
            v = data[key]
            if not _is_real(v) or (key == "weight" and v < 0):
                text = repr(v)
                raise ValueError(f"training position {key} "
                                 f"{text if len(text) <= 60 else text[:60] + '...'}")
        metrics = data["metrics"]
        if not isinstance(metrics, list) or (n_metrics is not None
                                             and len(metrics) != n_metrics):
            raise ValueError("training position: metric states do not match the compiled "
                             "metrics")
        for m in metrics:
            if not _is_metric_state(m):
                raise ValueError("bad metric state in the training position")
        return cls(data["epoch"], data["batch"], data["epoch_rng"], data["rng"],
                   float(data["loss"]), float(data["weight"]), tuple(metrics))


def check_rng_state(rng, what="the random generator state") -> None:
    """Raise ValueError(``"bad " + what``) unless ``rng`` is a PCG64 ``bit_generator.state``."""
    ok = (isinstance(rng, dict) and set(rng) == {"bit_generator", "state", "has_uint32",
                                                  "uinteger"}
          and isinstance(rng["state"], dict) and set(rng["state"]) == {"state", "inc"}
          and rng["bit_generator"] == "PCG64" and rng["has_uint32"] in (0, 1)
          and _is_count(rng["uinteger"], 2**32 - 1)
          and all(_is_count(v, 2**128 - 1) for v in rng["state"].values()))
    if not ok:
        raise ValueError(f"bad {what}")


def _is_count(value, high=2**63 - 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high


def _is_real(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) if isinstance(value, float) else abs(value) <= _FLOAT_MAX


def _is_metric_state(m) -> bool:
    if not isinstance(m, dict) or set(m) != {"totals", "dtype", "count"}:
        return False
    totals = m["totals"]
    if not _is_count(m["count"]) or (totals is None) != (m["dtype"] is None):
        return False
    return totals is None or (m["dtype"] in ("float32", "float64") and isinstance(totals, list)
                              and len(totals) <= 8 and all(_is_real(v) for v in totals))

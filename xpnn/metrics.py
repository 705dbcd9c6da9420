"""Metrics accumulated on the device over an epoch and read once at its end.

Each metric keeps running sums as backend arrays (``update`` never synchronises with the host);
``result()`` returns a Python float. Names: ``"accuracy"``, ``"mae"``, ``"r2"``.
"""

from __future__ import annotations


class Metric:
    """Base class: ``reset()``, ``update(y_pred, t)`` per batch, ``result()`` per epoch."""

    name = "metric"

    def __init__(self):
        self.reset()

    def reset(self):
        self.totals = None
        self.count = 0

    def get_state(self) -> dict:
        """The running sums as JSON-able data (exact: each float is the device value)."""
        return {"totals": None if self.totals is None else [float(v) for v in self.totals],
                "dtype": None if self.totals is None else (
                    "float64" if "64" in str(self.totals[0].dtype) else "float32"),
                "count": int(self.count)}

    def set_state(self, backend, state):
        """Continue from :meth:`get_state`'s data, the sums on ``backend``."""
        totals = state["totals"]
        self.totals = None if totals is None else [
            backend.asarray(v, dtype=state["dtype"]) for v in totals]
        self.count = state["count"]

    def _accumulate(self, *values):
        self.totals = list(values) if self.totals is None else [
            a + b for a, b in zip(self.totals, values, strict=True)]

    def update(self, xp, y_pred, t):
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError


def _dense_targets(xp, t, like):
    """Targets shaped and typed like ``like``: integer class labels (N,) become one-hot rows."""
    if t.ndim == 1:
        classes = xp.arange(like.shape[1], dtype=t.dtype, device=t.device)
        return xp.astype(t[:, None] == classes, like.dtype)
    return t


class Accuracy(Metric):
    """Fraction of correct predictions.

    * K > 1 outputs with integer labels or one-hot rows: ``argmax(y) == label``;
    * one output, or multi-label (binary cross-entropy): ``(y > 0.5) == (t > 0.5)`` element-wise.
    """

    name = "accuracy"
    #: Set by the model for binary cross-entropy, where K > 1 outputs are independent labels.
    multilabel = False

    def update(self, xp, y_pred, t):
        if y_pred.shape[1] > 1 and not self.multilabel:
            pred = xp.argmax(y_pred, axis=1)
            label = t if t.ndim == 1 else xp.argmax(t, axis=1)
            correct = xp.sum(xp.astype(pred == xp.astype(label, pred.dtype), y_pred.dtype))
            n = y_pred.shape[0]
        else:
            correct = xp.sum(xp.astype((y_pred > 0.5) == (t > 0.5), y_pred.dtype))
            n = y_pred.shape[0] * y_pred.shape[1]
        self._accumulate(correct)
        self.count += n

    def result(self):
        return float(self.totals[0]) / self.count if self.count else float("nan")


class MeanAbsoluteError(Metric):
    """``mean |y - t|`` over all elements."""

    name = "mae"

    def update(self, xp, y_pred, t):
        t = _dense_targets(xp, t, y_pred)
        self._accumulate(xp.sum(xp.abs(y_pred - t)))
        self.count += y_pred.shape[0] * y_pred.shape[1]

    def result(self):
        return float(self.totals[0]) / self.count if self.count else float("nan")


class R2Score(Metric):
    """Coefficient of determination ``R² = 1 - Σ(t - y)² / Σ(t - t̄)²``, averaged over outputs
    (scikit-learn's ``r2_score`` with ``multioutput="uniform_average"``)."""

    name = "r2"

    def update(self, xp, y_pred, t):
        t = _dense_targets(xp, t, y_pred)
        self._accumulate(xp.sum((t - y_pred) ** 2, axis=0), xp.sum(t, axis=0),
                         xp.sum(t * t, axis=0))
        self.count += y_pred.shape[0]

    def result(self):
        import numpy as np

        from .backend import to_numpy

        sse, s, ss = (to_numpy(a).astype(np.float64) for a in self.totals)
        sst = ss - s * s / self.count
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(sst > 0, 1.0 - sse / sst, np.where(sse > 0, 0.0, 1.0))
        return float(np.mean(r2))


METRICS = {"accuracy": Accuracy, "acc": Accuracy, "mae": MeanAbsoluteError,
           "mean_absolute_error": MeanAbsoluteError, "r2": R2Score}


def get_metric(metric) -> Metric:
    """A fresh :class:`Metric` from a name or instance."""
    if isinstance(metric, Metric):
        return type(metric)()
    if isinstance(metric, str) and metric.lower() in METRICS:
        return METRICS[metric.lower()]()
    raise ValueError(f"unknown metric {metric!r}; valid names are: {', '.join(METRICS)}")

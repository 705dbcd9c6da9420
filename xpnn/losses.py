"""Loss functions with hand-written gradients.

A loss turns the network output ``y`` (N, K) and prepared targets ``t`` into a scalar ``L`` and
gives ``δ = dL/dy`` to start backpropagation:

* :class:`MSE` — ``L = mean((y - t)²)`` over all N·K elements; ``δ = 2 (y - t) / (N K)``.
* :class:`BinaryCrossEntropy` — ``L = -mean(t log p + (1 - t) log(1 - p))`` over all elements.
* :class:`CategoricalCrossEntropy` — ``L = -(1/N) Σ_n Σ_k t_nk log p_nk`` with integer labels
  (N,) or one-hot targets (N, K).
* :class:`Poisson` — half the Poisson deviance on a log-mean output ``z = log μ`` (log link),
  averaged over all N·K elements.

With per-sample weights ``w`` (``fit(..., sample_weight=w)``) each loss is the weighted mean of
its per-row values ``L = Σ_n w_n ℓ_n / Σ_n w_n`` (``numpy.average``, as scikit-learn), and every
``1/N`` in a gradient becomes ``w_n / Σ w``; ``w = None`` is the plain mean.

When the model ends in Sigmoid (Softmax) and the loss is the binary (categorical) cross-entropy,
the model skips the final activation while training and calls :meth:`Loss.forward_logits` on the
logits ``z`` instead: the value is computed with log-sum-exp (never ``log 0``) and the gradient
with respect to the logits collapses to ``δ = (p - t) / N`` (``/ (N K)`` for the binary case).
"""

from __future__ import annotations

import numpy as np

from ._validation import check_real
from .layers.activations import sigmoid, softmax_and_log
from .metrics import _dense_targets as dense_targets


class Loss:
    """Base class. ``forward`` returns a 0-d array (stays on the device); ``backward`` returns δ."""

    name = "loss"
    #: The output activation whose fused path this loss has (``"Softmax"``, ``"Sigmoid"``, None).
    fuses_with: str | None = None

    def bind(self, xp):
        """Use the array namespace ``xp`` (the model's backend) from now on.

        Parameters
        ----------
        xp : module
            The array API namespace of the model's backend.

        Returns
        -------
        Loss
            ``self``.
        """
        self.xp = xp
        return self

    def prepare_targets(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """Check host targets ``y`` against an output of width ``n_outputs`` and return them in the
        layout :meth:`forward` expects. Raises ``ValueError`` naming what is wrong.

        Parameters
        ----------
        y : numpy.ndarray
            Targets on the host, as given to ``fit``.
        n_outputs : int
            Width K of the network's output.

        Returns
        -------
        numpy.ndarray
            The targets in the loss's layout.
        """
        y = _as_2d(y, n_outputs, self.name)
        return y.astype(np.float64, copy=False)

    def forward(self, y_pred, t, w=None):
        """The loss value; remembers what :meth:`backward` needs.

        Parameters
        ----------
        y_pred : array of shape (N, K)
            The network's output.
        t : array
            Prepared targets (:meth:`prepare_targets`), on the model's backend.
        w : array of shape (N,) or None
            Per-sample weights (None: the plain mean).

        Returns
        -------
        array of shape ()
            ``L``, a 0-d array that stays on the device.
        """
        raise NotImplementedError

    def backward(self):
        """``δ = dL/dy`` for the last :meth:`forward`.

        Returns
        -------
        array of shape (N, K)
            The gradient with respect to the network's output.
        """
        raise NotImplementedError

    def forward_logits(self, z, t, w=None):
        """The loss of ``activation(z)`` computed from the logits ``z`` (the fused path).

        Parameters
        ----------
        z : array of shape (N, K)
            The logits, the input of the final Softmax or Sigmoid.
        t : array
            Prepared targets.
        w : array of shape (N,) or None
            Per-sample weights.

        Returns
        -------
        array of shape ()
            ``L``, computed stably (log-sum-exp).
        """
        raise NotImplementedError(f"{type(self).__name__} has no fused path")

    def backward_logits(self):
        """``δ = dL/dz`` for the last :meth:`forward_logits`: ``(p - t)`` times the row factors.

        Returns
        -------
        array of shape (N, K)
            The gradient with respect to the logits.
        """
        raise NotImplementedError(f"{type(self).__name__} has no fused path")

    def _weigh(self, rows, w):
        """The weighted mean ``Σ w_n ℓ_n / Σ w_n`` of per-row losses ``rows`` (N,); remembers the
        row factors ``w_n / Σ w`` (N, 1) for the gradient in ``self.row_scale``."""
        xp = self.xp
        total = xp.sum(w)
        self.row_scale = (w / total)[:, None]
        return xp.sum(rows * w) / total

    def get_config(self) -> dict:
        """Constructor arguments, JSON-serialisable (used by ``save``/``load``)."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _LabelSmoothing:
    """``label_smoothing`` of the cross-entropies, as Keras: the targets are mixed with the
    uniform distribution before the loss sees them (so every formula of the loss, fused or not,
    holds unchanged with the smoothed targets)."""

    label_smoothing = 0.0

    def _set_label_smoothing(self, value):
        self.label_smoothing = check_real("label_smoothing", value, type(self).__name__, 0.0,
                                          1.0)

    def get_config(self):
        """Constructor arguments that differ from the defaults (saved with the model).

        Returns
        -------
        dict
            ``{"label_smoothing": ε}`` when ε > 0, else empty.
        """
        return {"label_smoothing": self.label_smoothing} if self.label_smoothing else {}


def _clip(xp, x, low: float, high: float):
    """``min(max(x, low), high)`` element-wise, as two element-wise passes.

    Not ``xp.clip``: array-api-compat implements it for NumPy and CuPy with masked assignments,
    which on CuPy read a count back from the device (a host synchronisation) on every call.
    """
    return xp.minimum(xp.maximum(x, low), high)


def _as_2d(y: np.ndarray, n_outputs: int, loss: str) -> np.ndarray:
    if y.ndim == 1 and n_outputs == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != n_outputs:
        raise ValueError(
            f"{loss}: y must have shape (n_samples, {n_outputs}) to match the model's "
            f"{n_outputs} outputs" + (" (or (n_samples,))" if n_outputs == 1 else "")
            + f", got shape {y.shape}"
        )
    return y


class MSE(Loss):
    """Mean squared error ``L = (1 / (N K)) Σ (y - t)²``; ``δ = 2 (y - t) / (N K)``."""

    name = "mse"

    def forward(self, y_pred, t, w=None):
        self.diff = y_pred - t
        self.row_scale = None
        if w is not None:
            return self._weigh(self.xp.mean(self.diff * self.diff, axis=1), w)
        return self.xp.mean(self.diff * self.diff)

    def backward(self):
        if self.row_scale is not None:
            return (2.0 / self.diff.shape[1]) * self.diff * self.row_scale
        n = self.diff.shape[0] * self.diff.shape[1]
        return (2.0 / n) * self.diff


class BinaryCrossEntropy(_LabelSmoothing, Loss):
    """Binary cross-entropy on probabilities ``p`` (N, K), averaged over all N·K elements.

    ``L = -mean(t log p + (1 - t) log(1 - p))``, ``δ = (p - t) / (p (1 - p) N K)``.
    Fused with Sigmoid (logits ``z``): ``L = mean(max(z, 0) - z t + log(1 + e^{-|z|}))``,
    ``dL/dz = (σ(z) - t) / (N K)``. Targets are in [0, 1], shape (N,) or (N, K).

    Parameters
    ----------
    label_smoothing : float
        ``ε`` in [0, 1] (Keras's): the targets become ``t (1 - ε) + ε / 2`` before the loss.
        Default 0.
    """

    name = "binary_crossentropy"
    fuses_with = "Sigmoid"

    def __init__(self, label_smoothing: float = 0.0):
        self._set_label_smoothing(label_smoothing)

    def _smooth(self, t):
        ls = self.label_smoothing
        return t * (1.0 - ls) + 0.5 * ls if ls else t

    def prepare_targets(self, y, n_outputs):
        y = super().prepare_targets(y, n_outputs)
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{self.name}: targets must lie in [0, 1], got values in "
                             f"[{y.min():g}, {y.max():g}]")
        return y

    def forward(self, p, t, w=None):
        xp = self.xp
        eps = float(xp.finfo(p.dtype).eps)
        self.p = _clip(xp, p, eps, 1.0 - eps)
        self.t = t = self._smooth(t)
        self.row_scale = None
        terms = t * xp.log(self.p) + (1.0 - t) * xp.log(1.0 - self.p)
        if w is not None:
            return -self._weigh(xp.mean(terms, axis=1), w)
        return -xp.mean(terms)

    def backward(self):
        k = self.p.shape[1]
        if self.row_scale is not None:
            return (self.p - self.t) / (self.p * (1.0 - self.p) * k) * self.row_scale
        n = self.p.shape[0] * k
        return (self.p - self.t) / (self.p * (1.0 - self.p) * n)

    def forward_logits(self, z, t, w=None):
        xp = self.xp
        self.p = sigmoid(xp, z)
        self.t = t = self._smooth(t)
        self.row_scale = None
        softplus = xp.log1p(xp.exp(-xp.abs(z)))
        terms = z * xp.astype(z > 0, z.dtype) - z * t + softplus
        if w is not None:
            return self._weigh(xp.mean(terms, axis=1), w)
        return xp.mean(terms)

    def backward_logits(self):
        if self.row_scale is not None:
            return (self.p - self.t) / self.p.shape[1] * self.row_scale
        n = self.p.shape[0] * self.p.shape[1]
        return (self.p - self.t) / n


class CategoricalCrossEntropy(_LabelSmoothing, Loss):
    """Categorical cross-entropy ``L = -(1/N) Σ_n log p[n, y_n]``.

    Targets are integer class labels (N,) in ``0..K-1`` or one-hot / probability rows (N, K).
    On probabilities ``p``: ``δ = -t / (p N)``. Fused with Softmax (logits ``z``):
    ``L = mean(logsumexp(z) - Σ_k t_k z_k)`` and ``dL/dz = (softmax(z) - t) / N``.

    Parameters
    ----------
    label_smoothing : float
        ``ε`` in [0, 1] (Keras's): the target rows become ``t (1 - ε) + ε / K`` before the
        loss (RealMLP trains with ε = 0.1). Default 0.
    """

    name = "categorical_crossentropy"
    fuses_with = "Softmax"

    def __init__(self, label_smoothing: float = 0.0):
        self._set_label_smoothing(label_smoothing)

    def prepare_targets(self, y, n_outputs):
        if n_outputs < 2:
            raise ValueError(f"{self.name}: needs at least 2 outputs (use binary_crossentropy "
                             f"with a single Sigmoid output), the model has {n_outputs}")
        if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1 and n_outputs != 1):
            y = y.reshape(-1)
            if y.dtype.kind == "f":
                if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                    raise ValueError(f"{self.name}: class labels must be integers, got "
                                     f"non-integer values")
            elif y.dtype.kind not in "iub":
                raise TypeError(f"{self.name}: class labels must be integers, got dtype "
                                f"{y.dtype}")
            if y.size and (y.min() < 0 or y.max() >= n_outputs):
                raise ValueError(
                    f"{self.name}: class labels must lie in 0..{n_outputs - 1} for a model with "
                    f"{n_outputs} outputs, got labels in {int(y.min())}..{int(y.max())}")
            return y.astype(np.int64)
        y = _as_2d(y, n_outputs, self.name).astype(np.float64)
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{self.name}: one-hot targets must lie in [0, 1]")
        return y

    def _dense_targets(self, xp, t, like):
        """One-hot (N, K) float targets from integer labels (or float targets unchanged),
        smoothed when :attr:`label_smoothing` is set."""
        t = dense_targets(xp, t, like)
        ls = self.label_smoothing
        return t * (1.0 - ls) + ls / like.shape[1] if ls else t

    def forward(self, p, t, w=None):
        xp = self.xp
        eps = float(xp.finfo(p.dtype).smallest_normal)
        self.p = _clip(xp, p, eps, 1.0)
        self.t = self._dense_targets(xp, t, p)
        self.row_scale = None
        if w is not None:
            return -self._weigh(xp.sum(self.t * xp.log(self.p), axis=1), w)
        return -xp.sum(self.t * xp.log(self.p)) / p.shape[0]

    def backward(self):
        if self.row_scale is not None:
            return -self.t / self.p * self.row_scale
        return -self.t / (self.p * self.p.shape[0])

    def forward_logits(self, z, t, w=None):
        xp = self.xp
        self.t = self._dense_targets(xp, t, z)
        self.p, log_p = softmax_and_log(xp, z)
        self.row_scale = None
        if w is not None:
            return -self._weigh(xp.sum(self.t * log_p, axis=1), w)
        return -xp.sum(self.t * log_p) / z.shape[0]

    def backward_logits(self):
        if self.row_scale is not None:
            return (self.p - self.t) * self.row_scale
        return (self.p - self.t) / self.p.shape[0]


class Poisson(Loss):
    """Half the Poisson deviance, on a network output ``z`` read as the log of the Poisson
    mean ``μ = exp(z)`` (log link, ``torch.nn.PoissonNLLLoss(log_input=True)``'s convention:
    the model's predictions are ``exp(output)``).

    ``L = mean(e^z - t z + t log t - t)`` over all N·K elements (``t log t = 0`` at ``t = 0``;
    the constant terms make a perfect fit ``L = 0``, as scikit-learn's ``loss="poisson"``),
    ``δ = (e^z - t) / (N K)``. Targets are counts or rates ``t >= 0``, shape (N,) or (N, K).
    """

    name = "poisson"

    def prepare_targets(self, y, n_outputs):
        y = super().prepare_targets(y, n_outputs)
        if y.size and y.min() < 0:
            raise ValueError(f"{self.name}: targets must be >= 0, got a minimum of {y.min():g}")
        return y

    def forward(self, z, t, w=None):
        xp = self.xp
        self.mu = xp.exp(z)
        self.t = t
        self.row_scale = None
        positive = t > 0
        t_log_t = xp.where(positive, t * xp.log(xp.where(positive, t, xp.ones_like(t))),
                           xp.zeros_like(t))
        terms = self.mu - t * z + t_log_t - t
        if w is not None:
            return self._weigh(xp.mean(terms, axis=1), w)
        return xp.mean(terms)

    def backward(self):
        k = self.mu.shape[1]
        if self.row_scale is not None:
            return (self.mu - self.t) / k * self.row_scale
        return (self.mu - self.t) / (self.mu.shape[0] * k)


#: Loss classes and aliases by name. ``"crossentropy"`` is resolved by the model from its last
#: layer (Sigmoid -> binary, otherwise categorical).
LOSSES = {
    "mse": MSE, "mean_squared_error": MSE,
    "binary_crossentropy": BinaryCrossEntropy, "bce": BinaryCrossEntropy,
    "categorical_crossentropy": CategoricalCrossEntropy,
    "sparse_categorical_crossentropy": CategoricalCrossEntropy,
    "cce": CategoricalCrossEntropy,
    "poisson": Poisson,
}
LOSS_CLASSES = {cls.__name__: cls
                for cls in (MSE, BinaryCrossEntropy, CategoricalCrossEntropy, Poisson)}


def get_loss(loss, last_layer=None) -> Loss:
    """A :class:`Loss` from an instance, a class or a name (``"mse"``, ``"crossentropy"``...)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    if isinstance(loss, str):
        key = loss.lower()
        if key == "crossentropy":
            last = type(last_layer).__name__ if last_layer is not None else None
            if last == "Sigmoid" or getattr(last_layer, "out_features", None) == 1:
                return BinaryCrossEntropy()
            return CategoricalCrossEntropy()
        if key in LOSSES:
            return LOSSES[key]()
        if loss in LOSS_CLASSES:
            return LOSS_CLASSES[loss]()
    valid = ", ".join(sorted({*LOSSES, "crossentropy"}))
    raise ValueError(f"unknown loss {loss!r}; valid names are: {valid}")

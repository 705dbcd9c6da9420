"""A model's training loss and its gradient as a function of one flat parameter vector.

Quasi-Newton optimizers such as ``scipy.optimize.minimize(method="L-BFGS-B")`` work on a vector
``θ`` of all parameters and ask for ``(f(θ), ∇f(θ))``. :class:`FlatObjective` provides that for
a built and compiled :class:`~xpnn.Sequential` on the full data set, with xpnn's own
backpropagation on the model's backend:

    f(θ) = loss(model_θ(X), t, w) + Σ_Dense (λ/2) ||W||²      (λ = the layer's weight_decay)

``θ`` holds the parameters in the order of ``model.params`` (W1, b1, W2, b2, ...), each
flattened in C order, as float64 on the host. One evaluation moves ``θ`` to the device once,
writes it into the parameters, runs ``model._backprop`` (the forward pass, the loss and the
backward pass of the training step, without the optimizer update) and, inside a training run,
the same gradient boundary :meth:`xpnn.training.TrainingRun.sync_gradients` (layers are
used in training mode, so the objective is deterministic only without Dropout), and brings
the gradient and the loss back in a single host transfer.

Sparse ``X`` (a SciPy sparse matrix) is accepted on the NumPy backend: the first layer must be
a :class:`~xpnn.Dense`, whose products ``X W`` and ``Xᵀ δ`` are then SciPy's sparse matmuls;
the matrix is never densified.
"""

from __future__ import annotations

import numpy as np

from .backend import to_numpy
from .layers import Dense

__all__ = ["FlatObjective"]


def _is_sparse(X) -> bool:
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


class FlatObjective:
    """``f(θ), ∇f(θ)`` of ``model`` on ``(X, t)`` with optional sample weights ``w``.

    Parameters
    ----------
    model : Sequential
        Built and compiled; its parameters are overwritten by each call.
    X : array of the model's backend (n_samples, n_features), or a SciPy sparse matrix on the
        NumPy backend.
    t : array of the model's backend
        Targets as the model's loss expects them (:func:`xpnn.inputs.prepare_y`).
    w : array of the model's backend (n_samples,), optional
        Sample weights: the loss is their weighted mean.
    run : xpnn.training.TrainingRun, optional
        A data-parallel run whose ``sync_gradients`` combines every rank's gradient and loss
        (None: one process).

    Attributes
    ----------
    size : int
        Length of ``θ``.
    n_evaluations : int
        Calls so far.
    """

    def __init__(self, model, X, t, w=None, run=None):
        if not model.built or model.loss is None:
            raise ValueError("FlatObjective: the model must be built and compiled")
        self.model, self.X, self.t, self.w, self.run = model, X, t, w, run
        self.params = list(model.params)
        self.shapes = [p.shape for p in self.params]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.size = int(sum(self.sizes))
        self.n_evaluations = 0
        layers = model.layers[:-1] if model._fused else model.layers
        self.sparse = _is_sparse(X)
        if self.sparse:
            if model.backend.family != "numpy":
                raise TypeError("FlatObjective: sparse X needs the numpy backend (got "
                                f"{model.backend.name}); densify it first")
            if not layers or not isinstance(layers[0], Dense):
                raise TypeError("FlatObjective: sparse X needs a Dense first layer")

    def get(self) -> np.ndarray:
        """The model's current parameters as ``θ`` (float64, on the host)."""
        return np.concatenate([np.asarray(to_numpy(p.data), dtype=np.float64).ravel()
                               for p in self.params]) if self.params else np.zeros(0)

    def set(self, theta) -> None:
        """Write ``θ`` into the model's parameters (one host-to-device copy of the vector)."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.size,):
            raise ValueError(f"FlatObjective: theta must have shape ({self.size},), got "
                             f"{theta.shape}")
        be, xp = self.model.backend, self.model.backend.xp
        v = be.asarray(theta, dtype=self.model.dtype)
        start = 0
        for p, shape, n in zip(self.params, self.shapes, self.sizes, strict=True):
            p.data[...] = xp.reshape(v[start:start + n], shape)
            start += n

    def __call__(self, theta):
        """``(f(θ), ∇f(θ))`` as a Python float and a float64 NumPy vector."""
        self.set(theta)
        self.n_evaluations += 1
        model, xp, X = self.model, self.model.backend.xp, self.X
        loss, _ = model._backprop(X, self.t, self.w)   # the training step's walk, without update
        # the gradient boundary of the training steps (data-parallel training combines here)
        if self.run is not None:
            loss = self.run.sync_gradients([p.grad for p in self.params], loss,
                                           X.shape[0] if self.w is None else xp.sum(self.w))

        # + Σ (λ/2)||W||², whose gradient λW the Dense layers already added
        for layer in model.layers:
            if isinstance(layer, Dense) and layer.weight_decay:
                loss = loss + 0.5 * layer.weight_decay * xp.sum(layer.W.data * layer.W.data)
        parts = [xp.reshape(p.grad, (-1,)) for p in self.params]
        parts.append(xp.reshape(xp.astype(loss, parts[0].dtype), (1,)))
        host = np.asarray(to_numpy(xp.concat(parts)), dtype=np.float64)   # the one transfer
        return float(host[-1]), host[:-1]

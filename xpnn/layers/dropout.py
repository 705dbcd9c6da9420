"""Inverted dropout."""

from __future__ import annotations

import numpy as np

from .._compiled import host_arrays, loaded_kernels
from .._validation import check_real
from .base import Layer

#: 2¹⁶: the 16-bit uniform integers of ``keep_mask`` lie in [0, 2¹⁶).
TWO_16 = 2 ** 16


def keep_mask(rng, rows, features, p):
    """A (rows, features) keep-mask with ``P(keep) = 1 - p``, from ``rng``'s raw stream.

    Each 64-bit output of ``rng.bit_generator`` gives four uniform 16-bit integers ``u``
    (lowest quarter first, on every platform), in row-major order; a unit is kept where
    ``u >= round(p · 2¹⁶)``. That is one raw draw for four units and one comparison of two
    bytes (an eighth of the random bits a float64 uniform per unit spends), so a ``p`` is
    dropped with probability ``round(p · 2¹⁶) / 2¹⁶``: within 2⁻¹⁷ of ``p``.

    Parameters
    ----------
    rng : numpy.random.Generator
        The generator (advanced by ``ceil(rows · features / 4)`` raw draws).
    rows, features : int
        Shape of the mask.
    p : float
        Probability of dropping a unit, in [0, 1).

    Returns
    -------
    numpy.ndarray of bool, shape (rows, features)
    """
    n = rows * features
    raw = rng.bit_generator.random_raw((n + 3) // 4)
    quarters = raw.astype("<u8", copy=False).view("<u2")[:n]     # lowest 16 bits first
    threshold = np.uint16(min(round(p * TWO_16), TWO_16 - 1))
    return (quarters >= threshold).reshape(rows, features)


class Dropout(Layer):
    """Zero each input with probability ``p`` while training and scale the rest by ``1/(1-p)``.

    ``y = x ⊙ m / (1 - p)`` with ``m ~ Bernoulli(1 - p)`` drawn on the host from the model's seeded
    generator (so every backend drops the same units; ``xpnn.layers.dropout.keep_mask`` says how);
    ``dL/dx = δ ⊙ m / (1 - p)``. At inference ``y = x``.

    In data-parallel training (``fit(..., comm=...)``) each rank holds a slice of the global
    batch: ``fit`` sets :attr:`batch_slice` to ``(rows, lo, hi)`` and the mask is drawn for all
    ``rows`` of the global batch, of which rows ``lo:hi`` are used, so every rank's generator
    draws the same numbers and the ranks together drop what one process would.

    Parameters
    ----------
    p : float
        Probability of dropping a unit, in [0, 1).
    """

    #: ``(rows of the global batch, lo, hi)`` in data-parallel training, else None.
    batch_slice = None
    #: From a training forward to its backward: the scale array ``m / (1 - p)``, or with the
    #: compiled kernel (``xpnn._compiled.loaded_kernels``) the keep-mask and ``1 / (1 - p)``
    #: (no float mask to build); None at inference.
    scale = None
    keep = None

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_real("p", p, "Dropout", 0.0, 1.0, high_open=True)

    def build(self, backend, dtype, rng, in_features):
        super().build(backend, dtype, rng, in_features)
        self.rng = rng

    def forward(self, x, training=False):
        self.scale = self.keep = None
        if not training or self.p == 0.0:
            return x
        keep = self.draw_mask(x.shape[0], x.shape[1])
        kernels = (loaded_kernels() if x.ndim == 2 and host_arrays(x) and keep.shape == x.shape
                   else None)
        if kernels is not None:       # x ⊙ m / (1 - p) in one compiled pass, same numbers
            self.keep, self.scale = keep, x.dtype.type(1.0 / (1.0 - self.p))
            out = np.empty_like(x)
            kernels.dropout_apply(x, keep, self.scale, out)
            return out
        # The mask is built on the host in the model's dtype, so the transfer is the only work
        # on the device (no float64 copy to send and cast there).
        scale = np.multiply(keep, 1.0 / (1.0 - self.p), dtype=self.dtype)
        self.scale = self.backend.asarray(scale, dtype=self.dtype)
        return x * self.scale

    def draw_mask(self, rows, features, copies=None):
        """The keep-mask (bool, host) for a batch of ``rows`` rows: drawn for the whole global
        batch and cut to this rank's rows under :attr:`batch_slice`.

        Parameters
        ----------
        rows : int
            Rows of this process's batch.
        features : int
            Features of the layer's input.
        copies : int, optional
            After an :class:`~xpnn.EnsembleView` each sample is ``copies`` consecutive rows, which
            share one sample's draw (by default ``rows`` over this rank's samples).

        Returns
        -------
        numpy.ndarray of bool, shape (rows, features), or None
            True where a unit is kept; None when ``p`` is 0.
        """
        if self.p == 0.0:
            return None
        if self.batch_slice is None:
            return keep_mask(self.rng, rows, features, self.p)
        total, lo, hi = self.batch_slice
        if copies is None:
            copies = rows // (hi - lo) if hi > lo else 1
        return keep_mask(self.rng, total * copies, features, self.p)[lo * copies:hi * copies]

    def backward(self, delta):
        if self.scale is None:
            return delta
        if self.keep is None:
            return delta * self.scale
        kernels = loaded_kernels() if host_arrays(delta) else None
        if kernels is None or delta.shape != self.keep.shape:
            return delta * np.multiply(self.keep, self.scale, dtype=delta.dtype)
        out = np.empty_like(delta)                      # δ ⊙ m / (1 - p), as forward
        kernels.dropout_apply(delta, self.keep, self.scale, out)
        return out

    def output_bound(self, m):
        return m                  # inference passes x on

    def get_config(self):
        return {"p": self.p}

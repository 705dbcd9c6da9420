"""Learned embeddings of categorical columns."""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_int
from .base import Layer, uniform_parameters


class Embedding(Layer):
    r"""One learned vector per category, for each categorical column.

    The input holds integer category codes, stored in the model's float dtype: column ``j`` of
    ``x`` (N, n_columns) takes values ``0 .. cardinalities[j] - 1``. Column ``j`` has a table
    ``T_j`` of shape (cardinalities[j] + 1, dim); its last row, index ``cardinalities[j]``, is
    the reserved *unknown/missing* row, which every other value maps to: a negative code, a
    code ``>= cardinalities[j]`` (a category unseen in training), a non-integer, ``±inf`` or
    NaN. (``Sequential.fit``/``predict`` refuse NaN in their input, so encode a missing
    category as ``-1`` there; the layer on its own takes NaN too.) The output puts the
    columns' vectors side by side::

        c_nj = x_nj          if x_nj is an integer in [0, cardinalities[j]) else cardinalities[j]
        y[n, j·dim:(j+1)·dim] = T_j[c_nj]                   y: (N, n_columns · dim)

    Backward scatters ``δ = dL/dy`` into the rows that were used, written as a product with
    the one-hot matrix ``O_j`` (N, cardinalities[j] + 1) of the codes, ``O_j[n, c] = [c_nj = c]``::

        dL/dT_j = O_jᵀ · δ[:, j·dim:(j+1)·dim]      (cardinalities[j] + 1, dim)

    (one matrix product per column: the same code on every backend, array-api-strict
    included, which has no scatter-add). There is no ``dL/dx``: codes are labels, not
    quantities, and ``y`` is a step function of them. The layer is meant to read the model's
    input (first layer, or a block of :class:`Columns`); placed after layers with weights it
    returns zeros as ``dL/dx``.

    Parameters
    ----------
    cardinalities : list of int
        Number of categories of each column (each >= 1).
    dim : int
        Length of each category's vector.

    Notes
    -----
    Tables start at Uniform(±1/sqrt(dim)), as the categorical embeddings of Gorishniy et al.
    (``rtdl``'s ``CategoricalEmbeddings``). The gradient's one-hot product costs
    N · (cardinality + 1) · dim per column and step: for columns with very many categories
    (tens of thousands), hash or group rare categories first.
    """

    def __init__(self, cardinalities: list, dim: int):
        super().__init__()
        if isinstance(cardinalities, (str, bytes)) or not hasattr(cardinalities, "__len__"):
            raise ValueError(f"Embedding: cardinalities must be a list of ints, got "
                             f"{cardinalities!r}")
        if len(cardinalities) == 0:
            raise ValueError("Embedding: cardinalities must name at least one column")
        self.cardinalities = [check_int(f"cardinalities[{j}]", c, "Embedding", 1)
                              for j, c in enumerate(cardinalities)]
        self.dim = check_int("dim", dim, "Embedding", 1)
        self.in_features = len(self.cardinalities)
        self.codes = None

    def output_features(self, in_features):
        return self.in_features * self.dim

    def param_shapes(self, in_features):
        return [(f"T{j}", (c + 1, self.dim)) for j, c in enumerate(self.cardinalities)]

    def build(self, backend, dtype, rng, in_features):
        self.check_width(in_features)
        super().build(backend, dtype, rng, in_features)
        self.tables = uniform_parameters(backend, dtype, rng, 1.0 / math.sqrt(self.dim),
                                         self.param_shapes(in_features))
        self.params = list(self.tables)
        self._constants()

    def bind(self, backend):
        super().bind(backend)
        self._constants()

    def _constants(self):
        """Per-column constants on the device: the cardinalities (model dtype), the first row
        of each column's table in the stacked tables (int64) and each table's row numbers."""
        be, cards = self.backend, self.cardinalities
        self._cards = be.asarray(np.asarray(cards, dtype=self.dtype))
        self._offsets = be.asarray(np.cumsum([0] + [c + 1 for c in cards[:-1]]), dtype="int64")
        self._rows = [be.asarray(np.arange(c + 1), dtype="int64") for c in cards]

    def encode(self, x):
        """The row of each entry of ``x`` in its column's table.

        Parameters
        ----------
        x : array (N, n_columns)
            Category codes in the model's float dtype.

        Returns
        -------
        array of int64 (N, n_columns)
            The code itself when it is an integer in ``[0, cardinalities[j])``, else the
            column's unknown row ``cardinalities[j]``.
        """
        xp, cards = self.xp, self._cards                       # all columns at once
        valid = (x >= 0) & (x < cards) & (xp.floor(x) == x)    # False for NaN and ±inf
        return xp.astype(xp.where(valid, x, xp.broadcast_to(cards, x.shape)), xp.int64)

    def forward(self, x, training=False):
        self.check_input(x)
        xp = self.xp
        codes = self.encode(x)
        if training:
            self.codes, self.x_shape = codes, tuple(x.shape)
        # y_j = T_j[c_j] for every column j: one gather from the tables stacked end to end
        stacked = xp.concat([t.data for t in self.tables], axis=0) if len(self.tables) > 1 \
            else self.tables[0].data
        rows = xp.take(stacked, xp.reshape(codes + self._offsets, (-1,)), axis=0)
        return xp.reshape(rows, (x.shape[0], self.in_features * self.dim))

    def backward(self, delta):
        xp = self.xp
        d = self.dim
        for j, (t, rows) in enumerate(zip(self.tables, self._rows, strict=True)):
            onehot = xp.astype(self.codes[:, j][:, None] == rows, delta.dtype)   # O_j (N, card+1)
            t.grad = onehot.T @ delta[:, j * d:(j + 1) * d]                      # O_jᵀ · δ_j
        if not self.input_grad_needed:
            return None
        return xp.zeros(self.x_shape, dtype=delta.dtype, device=self.backend.device)

    def output_bound(self, m):
        # Every output is a table entry: the largest |T|, whatever the input.
        xp = self.xp
        return max(float(xp.max(xp.abs(t.data))) for t in self.tables)

    def to_onnx(self, g, x, name):
        # ONNX: the codes cleaned as in :meth:`encode`, offset into one stacked table, ``Gather``
        # and ``Reshape``.
        cards = np.asarray(self.cardinalities, dtype=g.dtype)
        offsets = np.cumsum([0] + [c + 1 for c in self.cardinalities[:-1]]).astype(np.int64)
        table = np.concatenate([g.host(t.data) for t in self.tables], axis=0)
        card = g.const(f"{name}.cardinalities", cards)
        nonneg = g.node("GreaterOrEqual", [x, g.const(f"{name}.zero", np.zeros(1, g.dtype))])
        below = g.node("Less", [x, card])
        whole = g.node("Equal", [g.node("Floor", [x]), x])
        valid = g.node("And", [g.node("And", [nonneg, below]), whole])
        codes = g.node("Cast", [g.node("Where", [valid, x, card])], to=g.int64)
        index = g.node("Add", [codes, g.const(f"{name}.offsets", offsets)])
        rows = g.node("Gather", [g.const(f"{name}.table", table), index], axis=0)
        return g.node("Reshape", [rows, g.const(f"{name}.shape", np.asarray(
            [-1, self.in_features * self.dim], dtype=np.int64))])

    def get_config(self):
        return {"cardinalities": list(self.cardinalities), "dim": self.dim}

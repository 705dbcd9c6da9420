"""k networks in one: the layers of BatchEnsemble / TabM ensembles.

TabM (Gorishniy, Kotelnikov & Babenko, "TabM: Advancing Tabular Deep Learning with
Parameter-Efficient Ensembling", ICLR 2025) trains k MLPs at once that share most of their
weights (BatchEnsemble, Wen, Tran & Ba, ICLR 2020). The k members travel through the network as
k rows per sample, sample-major: row ``n·k + i`` of an activation belongs to sample ``n`` and
member ``i``. A model is written::

    Sequential(EnsembleView(k),                         # (N, d) -> (N·k, d)
               BatchEnsembleDense(d, 256, k, r_init="random-signs"), ReLU(), Dropout(0.1),
               BatchEnsembleDense(256, 256, k), ReLU(), Dropout(0.1),
               EnsembleDense(256, n_classes, k), Softmax(),
               EnsembleMean(k))                         # predict: (N·k, C) -> (N, C)

Training: :class:`EnsembleMean` passes the N·k rows on, and the model repeats every target
and sample weight k times, so the loss is the mean of the k members' losses (each member
learns on its own). Inference (``predict``/``evaluate``): it averages the members' outputs
(probabilities after Softmax/Sigmoid, raw values for regression) into (N, n_out).
"""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_int
from .base import Layer, Parameter, uniform_parameters

SCALING_INITS = ("ones", "random-signs", "normal")


class EnsembleView(Layer):
    r"""Give each of the k members its copy of every row: (N, d) -> (N·k, d), sample-major
    (row ``n·k + i`` is sample ``n`` for member ``i``). Backward sums the k copies' deltas:
    ``dL/dx_n = Σ_i δ_{n·k+i}``.

    Parameters
    ----------
    k : int
        Number of ensemble members.
    """

    def __init__(self, k: int):
        super().__init__()
        self.k = check_int("k", k, "EnsembleView", 1)

    #: Rows out per row in: what data-parallel Dropout masks need to know.
    @property
    def rows_per_input(self):
        return self.k

    def build(self, backend, dtype, rng, in_features):
        super().build(backend, dtype, rng, in_features)
        self.width = in_features

    def forward(self, x, training=False):
        self.check_input(x)
        xp = self.xp
        n, d = x.shape
        return xp.reshape(xp.broadcast_to(x[:, None, :], (n, self.k, d)), (n * self.k, d))

    def backward(self, delta):
        xp = self.xp
        n, d = delta.shape[0] // self.k, delta.shape[1]
        return xp.sum(xp.reshape(delta, (n, self.k, d)), axis=1)

    def to_onnx(self, g, x, name):
        """ONNX: ``Unsqueeze`` to (N, 1, d), ``Expand`` to (N, k, d), ``Reshape``."""
        x3 = g.node("Unsqueeze", [x, g.const(f"{name}.axis", np.asarray([1], np.int64))])
        wide = g.node("Expand", [x3, g.const(f"{name}.k", np.asarray([1, self.k, 1], np.int64))])
        return g.node("Reshape", [wide, g.const(f"{name}.flat", np.asarray(
            [-1, self.width], np.int64))])

    def get_config(self):
        return {"k": self.k}


def _members(layer, x):
    """``x`` (N·k, d) viewed as (N, k, d), after checking the rows are a multiple of k."""
    layer.check_input(x, multiple=layer.k)
    return layer.xp.reshape(x, (x.shape[0] // layer.k, layer.k, x.shape[1]))


class BatchEnsembleDense(Layer):
    r"""k dense layers sharing one weight matrix, each with its own input and output scalings
    and bias (BatchEnsemble; TabM's ``LinearBatchEnsemble``). For member i::

        y = ((x ⊙ r_i) W) ⊙ s_i + b_i

    Shapes: x (N·k, in) sample-major, W (in, out) shared, r (k, in), s (k, out), b (k, out),
    y (N·k, out). The shared product is ONE matrix product over all N·k rows.

    Backward, with ``u = x ⊙ r`` (per member), ``h = u W`` and ``g = δ ⊙ s``::

        dL/db_i = Σ_n δ_{n,i}          dL/ds_i = Σ_n δ_{n,i} ⊙ h_{n,i}
        dL/dW   = uᵀ g                 (one product over the N·k rows)
        dL/dr_i = Σ_n (g Wᵀ)_{n,i} ⊙ x_{n,i}          dL/dx = (g Wᵀ) ⊙ r

    Parameters
    ----------
    in_features, out_features : int
    k : int
        Number of ensemble members.
    r_init : {"ones", "random-signs", "normal"}
        Initial ``r``. TabM: ``"random-signs"`` (±1) in the first layer, so that the members
        differ from the start, ``"ones"`` elsewhere (``s`` always starts at ones).
    r_chunks : list of int, optional
        With a random ``r_init``, draw one value per chunk of consecutive input features
        (TabM's ``start_scaling_init_chunks``: the widths of each feature's embedding, so a
        feature's embedding is scaled as a whole). The widths must add up to ``in_features``.
    bias : bool
        Learn ``b``. W and b start at Uniform(±1/sqrt(in_features)); the k biases start equal.
    """

    def __init__(self, in_features: int, out_features: int, k: int, r_init: str = "ones",
                 r_chunks: list | None = None, bias: bool = True):
        super().__init__()
        self.in_features = check_int("in_features", in_features, "BatchEnsembleDense", 1)
        self.out_features = check_int("out_features", out_features, "BatchEnsembleDense", 1)
        self.k = check_int("k", k, "BatchEnsembleDense", 1)
        if r_init not in SCALING_INITS:
            raise ValueError(f"BatchEnsembleDense: r_init must be one of {SCALING_INITS}, got "
                             f"{r_init!r}")
        self.r_init = r_init
        if r_chunks is not None:
            r_chunks = [check_int("r_chunks[i]", c, "BatchEnsembleDense", 1) for c in r_chunks]
            if sum(r_chunks) != self.in_features or r_init == "ones":
                raise ValueError(f"BatchEnsembleDense: r_chunks must add up to in_features="
                                 f"{self.in_features} and needs a random r_init, got "
                                 f"{r_chunks} with r_init={r_init!r}")
        self.r_chunks = r_chunks
        self.use_bias = bool(bias)

    def output_features(self, in_features):
        return self.out_features

    def param_shapes(self, in_features):
        k, n_in, n_out = self.k, self.in_features, self.out_features
        return [("W", (n_in, n_out)), ("r", (k, n_in)), ("s", (k, n_out))] + (
            [("b", (k, n_out))] if self.use_bias else [])

    def build(self, backend, dtype, rng, in_features):
        self.check_width(in_features)
        super().build(backend, dtype, rng, in_features)
        k, n_in, n_out = self.k, self.in_features, self.out_features
        bound = 1.0 / math.sqrt(n_in)
        values = {"W": rng.uniform(-bound, bound, size=(n_in, n_out)),
                  "r": _scaling(rng, self.r_init, k, n_in, self.r_chunks),
                  "s": np.ones((k, n_out))}
        if self.use_bias:
            values["b"] = np.broadcast_to(rng.uniform(-bound, bound, size=n_out), (k, n_out))
        self.params = [Parameter(name, backend.asarray(np.array(values[name]), dtype=dtype))
                       for name, _ in self.param_shapes(in_features)]
        for p in self.params:
            setattr(self, p.name, p)
        if not self.use_bias:
            self.b = None

    def forward(self, x, training=False):
        xp = self.xp
        x3 = _members(self, x)                                        # (N, k, in)
        n = x3.shape[0]
        u = xp.reshape(x3 * self.r.data, (n * self.k, self.in_features))
        h = u @ self.W.data                                           # one GEMM, N·k rows
        h3 = xp.reshape(h, (n, self.k, self.out_features))
        y = h3 * self.s.data
        if self.b is not None:
            y = y + self.b.data
        if training:
            self.x3, self.u, self.h3 = x3, u, h3
        return xp.reshape(y, (n * self.k, self.out_features))

    def backward(self, delta):
        xp = self.xp
        n = delta.shape[0] // self.k
        d3 = xp.reshape(delta, (n, self.k, self.out_features))
        if self.b is not None:
            self.b.grad = xp.sum(d3, axis=0)
        self.s.grad = xp.sum(d3 * self.h3, axis=0)
        g = xp.reshape(d3 * self.s.data, (n * self.k, self.out_features))
        self.W.grad = self.u.T @ g                                    # uᵀ g
        du = xp.reshape(g @ self.W.data.T, (n, self.k, self.in_features))
        self.r.grad = xp.sum(du * self.x3, axis=0)
        if not self.input_grad_needed:
            return None
        return xp.reshape(du * self.r.data, (n * self.k, self.in_features))

    def to_onnx(self, g, x, name):
        """ONNX: ``Reshape`` to (N, k, in), ``Mul`` by r, ``Reshape`` back, one ``MatMul``,
        ``Reshape`` to (N, k, out), ``Mul`` by s, ``Add`` b, ``Reshape``."""
        k = self.k
        x3 = g.node("Reshape", [x, g.const(f"{name}.in3", np.asarray(
            [-1, k, self.in_features], np.int64))])
        u = g.node("Reshape", [g.node("Mul", [x3, g.weight(f"{name}.r", self.r.data)]),
                               g.const(f"{name}.in2", np.asarray([-1, self.in_features],
                                                                  np.int64))])
        h3 = g.node("Reshape", [g.node("MatMul", [u, g.weight(f"{name}.W", self.W.data)]),
                                g.const(f"{name}.out3", np.asarray([-1, k, self.out_features],
                                                                   np.int64))])
        y = g.node("Mul", [h3, g.weight(f"{name}.s", self.s.data)])
        if self.b is not None:
            y = g.node("Add", [y, g.weight(f"{name}.b", self.b.data)])
        return g.node("Reshape", [y, g.const(f"{name}.out2", np.asarray(
            [-1, self.out_features], np.int64))])

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "k": self.k, "r_init": self.r_init,
                **({"r_chunks": list(self.r_chunks)} if self.r_chunks else {}),
                **({} if self.use_bias else {"bias": False})}


def _scaling(rng, init, k, n, chunks):
    """Initial (k, n) scalings: ones, random ±1 or Normal(0, 1), one draw per chunk."""
    if init == "ones":
        return np.ones((k, n))
    chunks = chunks or [1] * n
    draws = rng.normal(size=(k, len(chunks))) if init == "normal" else \
        np.where(rng.random((k, len(chunks))) < 0.5, -1.0, 1.0)
    return np.repeat(draws, chunks, axis=1)


class EnsembleDense(Layer):
    r"""k fully separate dense layers, one per member (TabM's ``LinearEnsemble``, its output
    heads). For member i: ``y = x W_i + b_i``.

    Shapes: x (N·k, in) sample-major, W (k, in, out), b (k, out), y (N·k, out). The members'
    products are one batched matrix product over a (k, N, in) view. Backward::

        dL/dW_i = x_iᵀ δ_i      dL/db_i = Σ_n δ_{n,i}      dL/dx_i = δ_i W_iᵀ

    Parameters
    ----------
    in_features, out_features : int
    k : int
        Number of ensemble members.
    bias : bool
        Learn ``b``. W and b start at Uniform(±1/sqrt(in_features)), drawn for each member.
    """

    def __init__(self, in_features: int, out_features: int, k: int, bias: bool = True):
        super().__init__()
        self.in_features = check_int("in_features", in_features, "EnsembleDense", 1)
        self.out_features = check_int("out_features", out_features, "EnsembleDense", 1)
        self.k = check_int("k", k, "EnsembleDense", 1)
        self.use_bias = bool(bias)

    def output_features(self, in_features):
        return self.out_features

    def param_shapes(self, in_features):
        k, n_in, n_out = self.k, self.in_features, self.out_features
        return [("W", (k, n_in, n_out))] + ([("b", (k, n_out))] if self.use_bias else [])

    def build(self, backend, dtype, rng, in_features):
        self.check_width(in_features)
        super().build(backend, dtype, rng, in_features)
        self.params = uniform_parameters(backend, dtype, rng, 1.0 / math.sqrt(self.in_features),
                                         self.param_shapes(in_features))
        self.W = self.params[0]
        self.b = self.params[1] if self.use_bias else None

    def forward(self, x, training=False):
        xp = self.xp
        xk = xp.permute_dims(_members(self, x), (1, 0, 2))            # (k, N, in)
        y = xk @ self.W.data                                          # (k, N, out)
        if self.b is not None:
            y = y + self.b.data[:, None, :]
        if training:
            self.xk = xk
        n = xk.shape[1]
        return xp.reshape(xp.permute_dims(y, (1, 0, 2)), (n * self.k, self.out_features))

    def backward(self, delta):
        xp = self.xp
        n = delta.shape[0] // self.k
        dk = xp.permute_dims(xp.reshape(delta, (n, self.k, self.out_features)), (1, 0, 2))
        self.W.grad = xp.matrix_transpose(self.xk) @ dk               # x_iᵀ δ_i
        if self.b is not None:
            self.b.grad = xp.sum(dk, axis=1)
        if not self.input_grad_needed:
            return None
        dx = dk @ xp.matrix_transpose(self.W.data)                    # (k, N, in)
        return xp.reshape(xp.permute_dims(dx, (1, 0, 2)), (n * self.k, self.in_features))

    def to_onnx(self, g, x, name):
        """ONNX: ``Reshape``/``Transpose`` to (k, N, in), a batched ``MatMul``, ``Add``, back."""
        k = self.k
        xk = g.node("Transpose", [g.node("Reshape", [x, g.const(f"{name}.in3", np.asarray(
            [-1, k, self.in_features], np.int64))])], perm=[1, 0, 2])
        y = g.node("MatMul", [xk, g.weight(f"{name}.W", self.W.data)])
        if self.b is not None:
            b = np.asarray(g.host(self.b.data), dtype=g.dtype)[:, None, :]
            y = g.node("Add", [y, g.const(f"{name}.b", b)])
        return g.node("Reshape", [g.node("Transpose", [y], perm=[1, 0, 2]), g.const(
            f"{name}.out2", np.asarray([-1, self.out_features], np.int64))])

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "k": self.k, **({} if self.use_bias else {"bias": False})}


class EnsembleMean(Layer):
    r"""The last layer of an ensemble: in training the identity on the N·k member rows (the
    model then repeats each target and sample weight k times, so the loss is the mean of the
    members' losses); at inference the average of the members' outputs::

        y_n = (1/k) Σ_i x_{n·k+i}          (N·k, C) -> (N, C)

    Place it after the output activation, so that ``predict`` averages probabilities. Backward
    (training) is the identity.

    Parameters
    ----------
    k : int
        Number of ensemble members.
    """

    #: Tells the model: repeat targets k times in training, average members at inference.
    averages_members = True

    def __init__(self, k: int):
        super().__init__()
        self.k = check_int("k", k, "EnsembleMean", 1)

    def build(self, backend, dtype, rng, in_features):
        super().build(backend, dtype, rng, in_features)
        self.width = in_features

    def forward(self, x, training=False):
        self.check_input(x, multiple=self.k)
        if training:
            return x
        return mean_of_members(self.xp, x, self.k)

    def backward(self, delta):
        return delta

    def to_onnx(self, g, x, name):
        """ONNX: ``Reshape`` to (N, k, C), ``Transpose`` to (N, C, k), ``MatMul`` with a column
        of 1/k, ``Reshape`` to (N, C) (the same nodes on every opset)."""
        k = self.k
        x3 = g.node("Reshape", [x, g.const(f"{name}.in3", np.asarray([-1, k, self.width],
                                                                      np.int64))])
        avg = g.const(f"{name}.avg", np.full((k, 1), 1.0 / k, dtype=g.dtype))
        m = g.node("MatMul", [g.node("Transpose", [x3], perm=[0, 2, 1]), avg])
        return g.node("Squeeze", [m, g.const(f"{name}.axis", np.asarray([2], np.int64))])

    def get_config(self):
        return {"k": self.k}


def mean_of_members(xp, x, k):
    """The mean of the k members' rows of ``x`` (N·k, C): (N, C)."""
    return xp.mean(xp.reshape(x, (x.shape[0] // k, k, x.shape[1])), axis=1)


def repeat_rows(xp, a, k):
    """Each row of ``a`` (N, ...) repeated k times, sample-major: (N·k, ...)."""
    index = xp.arange(a.shape[0] * k, device=a.device) // k
    return xp.take(a, index, axis=0)

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

    With ``shared_batches=False`` the members train on batches of their own, as TabM's
    default (``share_training_batches=False``): in training the layer is the identity and
    expects rows already laid out per member, row ``j·k + i`` being the ``j``-th sample of
    member ``i``'s batch, with their targets, which :class:`~xpnn.MemberBatches` gives to
    ``fit`` (each epoch every member sees every sample once, in its own order); the model then
    uses the targets as given instead of repeating them. At inference it repeats rows as
    above.

    Parameters
    ----------
    k : int
        Number of ensemble members.
    shared_batches : bool
        Whether all members train on the same batch (default True).
    """

    def __init__(self, k: int, shared_batches: bool = True):
        super().__init__()
        self.k = check_int("k", k, "EnsembleView", 1)
        if not isinstance(shared_batches, (bool, np.bool_)):
            raise ValueError(f"EnsembleView: shared_batches must be True or False, got "
                             f"{shared_batches!r}")
        self.shared_batches = bool(shared_batches)

    @property
    def rows_per_input(self):
        """Rows out per row in while training (k, or 1 without shared batches): what
        data-parallel Dropout masks need to know."""
        return self.k if self.shared_batches else 1

    def build(self, backend, dtype, rng, in_features):
        super().build(backend, dtype, rng, in_features)
        self.width = in_features

    def forward(self, x, training=False):
        if training and not self.shared_batches:       # rows already one per member
            self.check_input(x, multiple=self.k)
            return x
        self.check_input(x)
        xp = self.xp
        n, d = x.shape
        return xp.reshape(xp.broadcast_to(x[:, None, :], (n, self.k, d)), (n * self.k, d))

    def backward(self, delta):
        if not self.shared_batches:
            return delta
        xp = self.xp
        n, d = delta.shape[0] // self.k, delta.shape[1]
        return xp.sum(xp.reshape(delta, (n, self.k, d)), axis=1)

    def to_onnx(self, g, x, name):
        # ONNX: ``Unsqueeze`` to (N, 1, d), ``Expand`` to (N, k, d), ``Reshape``.
        x3 = g.node("Unsqueeze", [x, g.const(f"{name}.axis", np.asarray([1], np.int64))])
        wide = g.node("Expand", [x3, g.const(f"{name}.k", np.asarray([1, self.k, 1], np.int64))])
        return g.node("Reshape", [wide, g.const(f"{name}.flat", np.asarray(
            [-1, self.width], np.int64))])

    def get_config(self):
        return {"k": self.k, **({} if self.shared_batches else {"shared_batches": False})}


class MemberBatches:
    """Training batches for an ensemble whose :class:`EnsembleView` has
    ``shared_batches=False``: a re-iterable of ``(x, y)`` or ``(x, y, w)`` batches for
    ``Sequential.fit`` (one pass per epoch).

    Every pass draws k permutations of the N samples (from ``seed``'s generator, which
    continues from pass to pass); batch b gives member ``i`` the samples
    ``perm_i[b·B:(b+1)·B]``, interleaved sample-major: row ``j·k + i`` is member ``i``'s
    ``j``-th sample. So each member sees every sample once per epoch, in its own order and
    batches, and a batch holds B·k rows (the last one fewer, still a multiple of k).

    Parameters
    ----------
    X, y : arrays (N, ...), host data
    k : int
        Number of ensemble members (the EnsembleView's).
    batch_size : int
        Samples per member and batch (B).
    seed : int or numpy.random.Generator, optional
    sample_weight : array (N,), optional

    Notes
    -----
    Data-parallel ``fit`` splits each batch's rows between the ranks; every rank's share must
    then be whole groups of k rows (the ensemble layers raise otherwise), which a contiguous
    split does not promise: train data-parallel ensembles with shared batches.
    """

    def __init__(self, X, y, k, batch_size, seed=None, sample_weight=None):
        self.X, self.y, self.w = np.asarray(X), np.asarray(y), sample_weight
        if self.w is not None:
            self.w = np.asarray(self.w)
        self.k = check_int("k", k, "MemberBatches", 1)
        self.batch_size = check_int("batch_size", batch_size, "MemberBatches", 1)
        if len(self.y) != len(self.X) or (self.w is not None and len(self.w) != len(self.X)):
            raise ValueError(f"MemberBatches: X has {len(self.X)} rows, y {len(self.y)}"
                             + ("" if self.w is None else f", sample_weight {len(self.w)}"))
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return -(-len(self.X) // self.batch_size)

    def indices(self):
        """One epoch's row indices, batch by batch (arrays of b·k indices)."""
        n, b = len(self.X), self.batch_size
        perms = np.stack([self.rng.permutation(n) for _ in range(self.k)], axis=1)  # (N, k)
        return [perms[lo:lo + b].reshape(-1) for lo in range(0, n, b)]

    def __iter__(self):
        for idx in self.indices():
            yield (self.X[idx], self.y[idx]) if self.w is None else \
                (self.X[idx], self.y[idx], self.w[idx])


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
        self.r_init, self.r_chunks = _check_scaling("BatchEnsembleDense", r_init, r_chunks,
                                                    self.in_features, prefix="r_")
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
        # ONNX: ``Reshape`` to (N, k, in), ``Mul`` by r, ``Reshape`` back, one ``MatMul``,
        # ``Reshape`` to (N, k, out), ``Mul`` by s, ``Add`` b, ``Reshape``.
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


def _check_scaling(owner, init, chunks, width, prefix=""):
    """Validated ``(init, chunks)`` of a per-member scaling of ``width`` features (arguments
    named ``{prefix}init`` and ``{prefix}chunks`` in messages)."""
    i_name, c_name = f"{prefix}init", f"{prefix}chunks"
    if init not in SCALING_INITS:
        raise ValueError(f"{owner}: {i_name} must be one of {SCALING_INITS}, got {init!r}")
    if chunks is not None:
        if isinstance(chunks, (str, bytes)) or not hasattr(chunks, "__iter__"):
            raise ValueError(f"{owner}: {c_name} must be a list of ints, got {chunks!r}")
        chunks = [check_int(f"{c_name}[i]", c, owner, 1) for c in chunks]
        if sum(chunks) != width or init == "ones":
            raise ValueError(f"{owner}: {c_name} must add up to {width} features and needs a "
                             f"random {i_name}, got {chunks} with {i_name}={init!r}")
    return init, chunks


def _scaling(rng, init, k, n, chunks):
    """Initial (k, n) scalings: ones, random ±1 or Normal(0, 1), one draw per chunk."""
    if init == "ones":
        return np.ones((k, n))
    chunks = chunks or [1] * n
    draws = rng.normal(size=(k, len(chunks))) if init == "normal" else \
        np.where(rng.random((k, len(chunks))) < 0.5, -1.0, 1.0)
    return np.repeat(draws, chunks, axis=1)


class EnsembleScale(Layer):
    r"""A learned scaling per member, ``y = x ⊙ r_i`` for member i: TabM-mini's only
    non-shared part (Gorishniy et al., 2025), in front of a plain MLP whose :class:`Dense`
    layers are shared by the members (they act on each of the N·k rows alike)::

        Sequential(EnsembleView(k), EnsembleScale(d, k), Dense(d, 512), ReLU(), ...,
                   EnsembleDense(512, n_out, k), EnsembleMean(k))

    Shapes: x (N·k, F) sample-major, r (k, F), y (N·k, F). Backward::

        dL/dr_i = Σ_n δ_{n,i} ⊙ x_{n,i}          dL/dx_{n,i} = δ_{n,i} ⊙ r_i

    Parameters
    ----------
    n_features : int
        Width F of the input.
    k : int
        Number of ensemble members.
    init : {"random-signs", "normal", "ones"}
        Initial ``r`` (TabM: random ±1).
    chunks : list of int, optional
        Draw one value per chunk of consecutive features (each feature's embedding width), as
        :class:`BatchEnsembleDense`'s ``r_chunks``.
    """

    def __init__(self, n_features: int, k: int, init: str = "random-signs",
                 chunks: list | None = None):
        super().__init__()
        self.in_features = check_int("n_features", n_features, "EnsembleScale", 1)
        self.k = check_int("k", k, "EnsembleScale", 1)
        self.init, self.chunks = _check_scaling("EnsembleScale", init, chunks,
                                                self.in_features)

    def param_shapes(self, in_features):
        return [("r", (self.k, self.in_features))]

    def build(self, backend, dtype, rng, in_features):
        self.check_width(in_features)
        super().build(backend, dtype, rng, in_features)
        self.r = Parameter("r", backend.asarray(
            _scaling(rng, self.init, self.k, self.in_features, self.chunks), dtype=dtype))
        self.params = [self.r]

    def forward(self, x, training=False):
        x3 = _members(self, x)                                        # (N, k, F)
        if training:
            self.x3 = x3
        return self.xp.reshape(x3 * self.r.data, tuple(x.shape))

    def backward(self, delta):
        xp = self.xp
        d3 = xp.reshape(delta, self.x3.shape)
        self.r.grad = xp.sum(d3 * self.x3, axis=0)
        if not self.input_grad_needed:
            return None
        return xp.reshape(d3 * self.r.data, tuple(delta.shape))

    def to_onnx(self, g, x, name):
        # ONNX: ``Reshape`` to (N, k, F), ``Mul`` by r, ``Reshape`` back.
        f = self.in_features
        x3 = g.node("Reshape", [x, g.const(f"{name}.in3", np.asarray([-1, self.k, f],
                                                                      np.int64))])
        y = g.node("Mul", [x3, g.weight(f"{name}.r", self.r.data)])
        return g.node("Reshape", [y, g.const(f"{name}.out2", np.asarray([-1, f], np.int64))])

    def get_config(self):
        return {"n_features": self.in_features, "k": self.k,
                **({} if self.init == "random-signs" else {"init": self.init}),
                **({"chunks": list(self.chunks)} if self.chunks else {})}


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
        # ONNX: ``Reshape``/``Transpose`` to (k, N, in), a batched ``MatMul``, ``Add``, back.
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
        # ONNX: ``Reshape`` to (N, k, C), ``Transpose`` to (N, C, k), ``MatMul`` with a column of
        # 1/k, ``Reshape`` to (N, C) (the same nodes on every opset).
        k = self.k
        x3 = g.node("Reshape", [x, g.const(f"{name}.in3", np.asarray([-1, k, self.width],
                                                                      np.int64))])
        avg = g.const(f"{name}.avg", np.full((k, 1), 1.0 / k, dtype=g.dtype))
        m = g.node("MatMul", [g.node("Transpose", [x3], perm=[0, 2, 1]), avg])
        return g.node("Squeeze", [m, g.const(f"{name}.axis", np.asarray([2], np.int64))])

    def get_config(self):
        return {"k": self.k}


def check_members(layers):
    """Raise a ValueError naming the layer when the ensemble layers of a model do not fit
    together: an :class:`EnsembleView` (only one) before every layer with members, all with its
    k, and an :class:`EnsembleMean` with the same k, if any, last."""
    k, view = 1, None
    for i, layer in enumerate(layers):
        members = getattr(layer, "k", None)
        if members is None:
            continue
        name = f"layer {i} ({type(layer).__name__}(k={members}))"
        if isinstance(layer, EnsembleView):
            if view is not None:
                raise ValueError(f"Sequential: {name} repeats the rows again after {view}")
            k, view = members, name
        elif view is None:
            raise ValueError(f"Sequential: {name} needs an EnsembleView(k={members}) before it "
                             "to give each member its rows")
        elif members != k:
            raise ValueError(f"Sequential: {name} has {members} members but {view} makes {k}")
        if isinstance(layer, EnsembleMean) and i != len(layers) - 1:
            raise ValueError(f"Sequential: {name} must be the last layer")


def mean_of_members(xp, x, k):
    """The mean of the k members' rows of ``x`` (N·k, C): (N, C)."""
    return xp.mean(xp.reshape(x, (x.shape[0] // k, k, x.shape[1])), axis=1)


def repeat_rows(xp, a, k):
    """Each row of ``a`` (N, ...) repeated k times, sample-major: (N·k, ...)."""
    index = xp.arange(a.shape[0] * k, device=a.device) // k
    return xp.take(a, index, axis=0)

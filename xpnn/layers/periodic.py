"""Periodic embeddings of numeric features (PLR, PBLD)."""

from __future__ import annotations

import math

import numpy as np

from .._validation import check_int, check_real
from .base import Layer, Parameter

#: Defaults of each variant: (n_frequencies, dim, sigma).
VARIANTS = {"plr": (48, 24, 0.01), "pbld": (16, 4, 0.1)}


class PeriodicEmbedding(Layer):
    r"""Periodic embeddings of numeric features: each scalar feature becomes a vector of
    ``dim`` numbers computed from sines and cosines of learned frequencies.

    Feature ``j`` of a row, the scalar ``x_j``, goes through its own small network (with
    ``lite=True`` the second, linear step is shared by all features).

    ``variant="plr"`` — PLR, periodic-linear-ReLU (Gorishniy, Rubachev & Babenko, "On
    Embeddings for Numerical Features in Tabular Deep Learning", NeurIPS 2022; the ``rtdl``
    package's ``PeriodicEmbeddings``), with ``k = n_frequencies`` frequencies ``c_j`` (k,)::

        z_j = 2π c_j x_j                          (k,)
        v_j = [cos z_j, sin z_j]                   (2k,)
        e_j = ReLU(v_j W_j + b_j)                  (dim,)      W_j (2k, dim), b_j (dim,)
        y   = [e_1, e_2, ..., e_F]                 (F · dim,)

    ``variant="pbld"`` — PBLD, periodic-bias-linear-densenet (Holzmüller, Grinsztajn &
    Steinwart, "Better by Default", NeurIPS 2024; RealMLP's default in ``pytabkit``), with
    phases ``φ_j`` and no activation, the feature itself appended (the "densenet" part)::

        z_j = 2π c_j x_j + φ_j                     (k,)
        e_j = cos(z_j) W_j + b_j                   (dim - 1,)   W_j (k, dim - 1)
        y   = [e_1, e_2, ..., e_F, x_1, ..., x_F]  (F · dim,)

    Layout of the output (N, n_features · dim): for PLR feature ``j`` fills columns
    ``j·dim .. (j+1)·dim - 1``; for PBLD the F embeddings of ``dim - 1`` numbers come first,
    feature ``j`` in columns ``j·(dim-1) .. (j+1)·(dim-1) - 1``, then the F raw features (as
    pytabkit lays them out).

    Backward, with ``g_j = dL/de_j`` (times ``[e_j > 0]`` for PLR's ReLU)::

        dL/dW_j = Σ_n v_jᵀ g_j          dL/db_j = Σ_n g_j          dL/dv_j = g_j W_jᵀ
        dL/dz_j = -sin z_j ⊙ dL/d(cos z_j) + cos z_j ⊙ dL/d(sin z_j)
        dL/dc_j = Σ_n 2π x_j dL/dz_j    dL/dφ_j = Σ_n dL/dz_j
        dL/dx_j = 2π Σ_k c_jk dL/dz_jk  (+ the appended feature's δ for PBLD)

    Parameters
    ----------
    n_features : int
        Number of numeric features F (the input's width).
    n_frequencies : int, optional
        Frequencies per feature k. Default 48 for PLR, 16 for PBLD.
    dim : int, optional
        Output numbers per feature (for PBLD including the appended raw feature, so
        ``dim >= 2``). Default 24 for PLR, 4 for PBLD.
    sigma : float, optional
        Standard deviation of the initial frequencies. Default 0.01 for PLR (``rtdl``'s
        ``frequency_init_scale``), 0.1 for PBLD (pytabkit's ``plr_sigma``).
    variant : {"plr", "pbld"}
    lite : bool
        Share ``W`` and ``b`` between all features ("PLR(lite)", as TabM uses). Default False.

    Notes
    -----
    Initialisation as the references: PLR's ``c ~ Normal(0, σ²)`` truncated at ±3σ, ``W``
    and ``b`` Uniform(±1/sqrt(2k)); PBLD's ``c ~ Normal(0, σ²)``, ``φ ~ Uniform(-π, π)``,
    ``W`` and ``b`` Uniform(±1/sqrt(k)).
    """

    def __init__(self, n_features: int, n_frequencies: int | None = None, dim: int | None = None,
                 sigma: float | None = None, variant: str = "plr", lite: bool = False):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"PeriodicEmbedding: variant must be one of {tuple(VARIANTS)}, "
                             f"got {variant!r}")
        k0, d0, s0 = VARIANTS[variant]
        self.variant = variant
        self.in_features = check_int("n_features", n_features, "PeriodicEmbedding", 1)
        self.n_frequencies = check_int("n_frequencies", k0 if n_frequencies is None
                                       else n_frequencies, "PeriodicEmbedding", 1)
        self.dim = check_int("dim", d0 if dim is None else dim, "PeriodicEmbedding",
                             2 if variant == "pbld" else 1)
        self.sigma = check_real("sigma", s0 if sigma is None else sigma, "PeriodicEmbedding",
                                0.0, low_open=True)
        if not isinstance(lite, (bool, np.bool_)):
            raise ValueError(f"PeriodicEmbedding: lite must be True or False, got {lite!r}")
        self.lite = bool(lite)

    @property
    def n_features(self):
        """Number of numeric features F (the input's width)."""
        return self.in_features

    def output_features(self, in_features):
        return self.in_features * self.dim

    def _sizes(self):
        """(periodic features per input feature, outputs of the linear step)."""
        if self.variant == "plr":
            return 2 * self.n_frequencies, self.dim
        return self.n_frequencies, self.dim - 1

    def param_shapes(self, in_features):
        f, k = self.in_features, self.n_frequencies
        m, d = self._sizes()
        shapes = [("c", (f, k))] + ([("phi", (f, k))] if self.variant == "pbld" else [])
        return shapes + [("W", (m, d) if self.lite else (f, m, d)),
                         ("b", (d,) if self.lite else (f, d))]

    def build(self, backend, dtype, rng, in_features):
        self.check_width(in_features)
        super().build(backend, dtype, rng, in_features)
        shapes = dict(self.param_shapes(in_features))
        s = self.sigma
        values = {}
        if self.variant == "plr":
            values["c"] = np.clip(rng.normal(0.0, s, size=shapes["c"]), -3 * s, 3 * s)
        else:
            values["c"] = rng.normal(0.0, s, size=shapes["c"])
            values["phi"] = rng.uniform(-math.pi, math.pi, size=shapes["phi"])
        bound = 1.0 / math.sqrt(self._sizes()[0])
        values["W"] = rng.uniform(-bound, bound, size=shapes["W"])
        values["b"] = rng.uniform(-bound, bound, size=shapes["b"])
        self.params = [Parameter(name, backend.asarray(values[name], dtype=dtype))
                       for name in shapes]
        for p in self.params:
            setattr(self, p.name, p)

    def forward(self, x, training=False):
        self.check_input(x)
        xp = self.xp
        n, f = x.shape
        # The batch runs along the last axis: every elementwise pass has rows of N numbers.
        xr = (2.0 * math.pi) * xp.permute_dims(x, (1, 0))[:, None, :]    # 2π x (F, 1, N)
        if self.variant == "plr":
            z = xr * self.c.data[:, :, None]                             # (F, k, N)
            v = xp.concat([xp.cos(z), xp.sin(z)], axis=1)                # (F, 2k, N)
        else:                       # z = c 2πx + φ: a product per feature, (F, k, 2) (F, 2, N)
            xr = xp.concat([xr, xp.ones_like(xr)], axis=1)               # [2π x; 1] (F, 2, N)
            z = xp.stack([self.c.data, self.phi.data], axis=2) @ xr      # (F, k, N)
            v = xp.cos(z)
        h = xp.matrix_transpose(v) @ self.W.data                     # (F, N, d)
        h += self.b.data if self.lite else self.b.data[:, None, :]
        if self.variant == "plr":
            e = xp.where(h > 0, h, xp.zeros_like(h))                 # ReLU
        else:
            e = h
        if training:       # what backward needs: PLR's ReLU looks at h, PBLD's sin at z
            self.cache = (xr, None, v, h) if self.variant == "plr" else (xr, z, v, None)
        y = xp.reshape(xp.permute_dims(e, (1, 0, 2)), (n, f * e.shape[2]))
        return y if self.variant == "plr" else xp.concat([y, x], axis=1)

    def backward(self, delta):
        xp = self.xp
        xr, z, v, h = self.cache                 # xr: 2π x (PLR), [2π x; 1] (PBLD)
        f, n = xr.shape[0], xr.shape[2]
        d = self._sizes()[1]
        g = xp.permute_dims(xp.reshape(delta[:, :f * d], (n, f, d)), (1, 0, 2))   # (F, N, d)
        if self.variant == "plr":
            g = g * xp.astype(h > 0, g.dtype)                                      # ReLU'
        wg = v @ g                                                   # Σ_n vᵀ g per feature
        self.W.grad = xp.sum(wg, axis=0) if self.lite else wg
        self.b.grad = xp.sum(g, axis=(0, 1)) if self.lite else xp.sum(g, axis=1)
        gv = self.W.data @ xp.matrix_transpose(g)                    # dL/dv (F, m, N)
        # gz = ±dL/dz (sign = ±1, exact), the sign folded into the (F, k) results
        if self.variant == "plr":                       # v = [cos z, sin z]
            k = self.n_frequencies
            gz, sign = v[:, :k, :] * gv[:, k:, :], 1.0
            gz -= v[:, k:, :] * gv[:, :k, :]            # cos z dL/d(sin z) - sin z dL/d(cos z)
            self.c.grad = (gz @ xp.matrix_transpose(xr))[:, :, 0]       # Σ_n 2π x dL/dz
        else:
            gz, sign = xp.sin(z), -1.0
            gz *= gv                                    # -dL/dz = sin z ⊙ dL/d(cos z)
            sums = gz @ xp.matrix_transpose(xr)         # -Σ_n dL/dz [2π x, 1] (F, k, 2)
            self.c.grad, self.phi.grad = -sums[:, :, 0], -sums[:, :, 1]
        if not self.input_grad_needed:
            return None
        dx = (sign * 2.0 * math.pi) * (self.c.data[:, None, :] @ gz)[:, 0, :]   # 2π Σ_k c dL/dz
        dx = xp.permute_dims(dx, (1, 0))
        return dx if self.variant == "plr" else dx + delta[:, f * d:]

    def output_bound(self, m):
        # |cos z| <= 1 (and |sin z|) while z = 2π x c (+ φ) is finite, so each
        # embedding is at most maxⱼ Σᵢ |Wᵢⱼ| + max |b|; PBLD passes x on too (m).
        # Inf when z could overflow.
        xp = self.xp
        z = 2.0 * math.pi * m * max(1.0, float(xp.max(xp.abs(self.c.data))))   # and 2π x
        if self.variant == "pbld":
            z += float(xp.max(xp.abs(self.phi.data)))
        if not z <= float(np.finfo(self.dtype).max):
            return math.inf
        column = float(xp.max(xp.sum(xp.abs(self.W.data), axis=-2)))
        h = column + float(xp.max(xp.abs(self.b.data)))
        return h if self.variant == "plr" else max(h, m)

    def to_onnx(self, g, x, name):
        # ONNX: ``Transpose``/``Unsqueeze`` to (F, N, 1), ``Mul``, ``Cos``/``Sin``, a batched
        # ``MatMul``, ``Relu`` (PLR), back to (N, F·d) and, for PBLD, ``Concat`` with ``x``.
        f = self.in_features
        xt = g.node("Unsqueeze", [g.node("Transpose", [x], perm=[1, 0]),
                                  g.const(f"{name}.axis", np.asarray([2], np.int64))])
        c = np.asarray(g.host(self.c.data), dtype=g.dtype)[:, None, :]
        two_pi = g.const(f"{name}.two_pi", np.asarray([2.0 * math.pi], g.dtype))
        z = g.node("Mul", [g.node("Mul", [xt, two_pi]), g.const(f"{name}.c", c)])
        if self.variant == "plr":
            v = g.node("Concat", [g.node("Cos", [z]), g.node("Sin", [z])], axis=2)
        else:
            phi = np.asarray(g.host(self.phi.data), dtype=g.dtype)[:, None, :]
            v = g.node("Cos", [g.node("Add", [z, g.const(f"{name}.phi", phi)])])
        b = np.asarray(g.host(self.b.data), dtype=g.dtype)
        h = g.node("Add", [g.node("MatMul", [v, g.weight(f"{name}.W", self.W.data)]),
                           g.const(f"{name}.b", b if self.lite else b[:, None, :])])
        if self.variant == "plr":
            h = g.node("Relu", [h])
        d = self._sizes()[1]
        y = g.node("Reshape", [g.node("Transpose", [h], perm=[1, 0, 2]),
                               g.const(f"{name}.shape", np.asarray([-1, f * d], np.int64))])
        return y if self.variant == "plr" else g.node("Concat", [y, x], axis=1)

    def get_config(self):
        return {"n_features": self.in_features, "n_frequencies": self.n_frequencies,
                "dim": self.dim, "sigma": self.sigma, "variant": self.variant,
                **({"lite": True} if self.lite else {})}

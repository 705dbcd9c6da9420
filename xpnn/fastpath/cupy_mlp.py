"""CuPy fast path: the MLP training step as a few fused CUDA kernels plus cuBLAS matmuls.

Imported only when a model on the ``cupy`` backend is trained (:func:`xpnn.fastpath.select`).
Launch overhead (a few microseconds per kernel) dominates small layers, so per training step:

* forward per Dense: one GEMM ``z = a W`` into a preallocated buffer and one kernel
  ``a = act(z + b)`` (bias and activation fused, in place);
* softmax + cross-entropy: one kernel (one thread per row) writing ``p``, ``δ = (p - t) / N`` and
  the per-row loss, then one reduction for the batch loss (left on the device: no sync);
* backward per Dense: one kernel ``δ ← act'(y) ⊙ δ`` (in place), GEMMs ``dW = aᵀ δ``, ``δ Wᵀ``
  on transposed views, and one column sum ``db = Σ_n δ``;
* the whole optimizer update: one kernel over the flat parameter buffer.

The equations are those of :mod:`xpnn.layers`, :mod:`xpnn.losses` and :mod:`xpnn.optimizers`;
tests check the results against the generic path (keep ``CUPY_TF32=0`` for that).
"""

from __future__ import annotations

import math

import cupy as cp

from ._flat import FlatTrainer

# Activation codes shared by the forward and backward kernels.
_ACT = {"identity": 0, "relu": 1, "tanh": 2, "sigmoid": 3}

#: a ← act(z + b[column]) in place. Sigmoid uses the overflow-free form of xpnn's sigmoid.
_bias_act = cp.ElementwiseKernel(
    "raw T b, int32 ncol, int32 has_bias, int32 act", "T z",
    """
    T x = has_bias ? z + b[i % ncol] : z;
    if (act == 1) {
        x = x > (T)0 ? x : (T)0;
    } else if (act == 2) {
        x = tanh(x);
    } else if (act == 3) {
        T e = exp(-fabs(x));
        x = x >= (T)0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);
    }
    z = x;
    """,
    "xpnn_bias_act")

#: δ ← act'(·) ⊙ δ in place, from the activation's output y: ReLU [y > 0], tanh 1 - y²,
#: sigmoid y (1 - y).
_act_backward = cp.ElementwiseKernel(
    "T y, int32 act", "T d",
    """
    if (act == 1) {
        d = y > (T)0 ? d : (T)0;
    } else if (act == 2) {
        d = d * ((T)1 - y * y);
    } else if (act == 3) {
        d = d * y * ((T)1 - y);
    }
    """,
    "xpnn_act_backward")

# Softmax + cross-entropy, one thread per row i of the (N, K) logits z:
#   p = exp(z - max z) / s,  s = Σ_k exp(z_k - max z),
#   loss_i = -Σ_k t_k (z_k - max z - log s),  δ = (p - t) / N.
_SOFTMAX_CE_BODY = """
    const ptrdiff_t row = i * K;
    T mx = z[row];
    for (int k = 1; k < K; ++k) mx = z[row + k] > mx ? (T)z[row + k] : mx;
    T s = 0;
    for (int k = 0; k < K; ++k) s += exp(z[row + k] - mx);
    const T logs = log(s);
    T loss = 0;
    for (int k = 0; k < K; ++k) {
        const T pk = exp(z[row + k] - mx) / s;
        const T tk = TARGET;
        p[row + k] = pk;
        dz[row + k] = (pk - tk) / n;
        if (tk != (T)0) loss -= tk * (z[row + k] - mx - logs);
    }
    rowloss = loss;
"""
_softmax_ce_labels = cp.ElementwiseKernel(
    "raw T z, raw I labels, int32 K, T n", "raw T p, raw T dz, T rowloss",
    _SOFTMAX_CE_BODY.replace("TARGET", "(labels[i] == k) ? (T)1 : (T)0"),
    "xpnn_softmax_ce_labels")
_softmax_ce_dense = cp.ElementwiseKernel(
    "raw T z, raw T t, int32 K, T n", "raw T p, raw T dz, T rowloss",
    _SOFTMAX_CE_BODY.replace("TARGET", "t[row + k]"),
    "xpnn_softmax_ce_dense")

#: Adam / AdamW over the flat buffers, one thread per element:
#:   (AdamW) θ ← θ shrink, shrink = 1 - lr λ;   (Adam, λ > 0) g ← g + λ θ
#:   m ← β₁ m + (1 - β₁) g;  v ← β₂ v + (1 - β₂) g²
#:   θ ← θ - step_size · m / (√v / bc2 + ε),  step_size = lr / (1 - β₁ᵗ), bc2 = √(1 - β₂ᵗ)
_adam = cp.ElementwiseKernel(
    "T g, T b1, T one_b1, T b2, T one_b2, T eps, T wd, T shrink, int32 decoupled, "
    "T step_size, T bc2",
    "T p, T m, T v",
    """
    T grad = g;
    if (decoupled) {
        p = p * shrink;
    } else if (wd != (T)0) {
        grad = grad + wd * p;
    }
    m = b1 * m + one_b1 * grad;
    v = b2 * v + one_b2 * (grad * grad);
    p = p - step_size * (m / (sqrt(v) / bc2 + eps));
    """,
    "xpnn_adam")

#: SGD with (Nesterov) momentum: b ← g (first step) or μ b + g; d = g + μ b or b; θ ← θ - lr d.
_sgd = cp.ElementwiseKernel(
    "T g, T lr, T mu, T wd, int32 nesterov, int32 started", "T p, T buf",
    """
    T grad = g;
    if (wd != (T)0) grad = grad + wd * p;
    if (mu != (T)0) {
        buf = started ? mu * buf + grad : grad;
        grad = nesterov ? grad + mu * buf : buf;
    }
    p = p - lr * grad;
    """,
    "xpnn_sgd")


#: RMSprop: g ← g + λ θ; s ← ρ s + (1 - ρ) g²; u = g / (√s + ε); b ← μ b + u, θ ← θ - lr b
#: (μ > 0) or θ ← θ - lr u.
_rmsprop = cp.ElementwiseKernel(
    "T g, T lr, T rho, T one_rho, T eps, T mu, T wd", "T p, T s, T b",
    """
    T grad = g;
    if (wd != (T)0) grad = grad + wd * p;
    s = rho * s + one_rho * (grad * grad);
    T u = grad / (sqrt(s) + eps);
    if (mu != (T)0) {
        b = mu * b + u;
        u = b;
    }
    p = p - lr * u;
    """,
    "xpnn_rmsprop")


def _device_of(model):
    """A context manager making ``model``'s CUDA device current (its ``cupy.cuda.Device``)."""
    return model.backend.device_context()


class CupyMLPTrainer(FlatTrainer):
    """One training step of a supported MLP on CuPy arrays, without host synchronisation.

    CuPy allocates on, and launches kernels and cuBLAS calls on, the *current* device. Every
    entry point therefore runs inside ``with device:`` for the model's device, so a model on
    ``"cupy:1"`` keeps its buffers and its work on GPU 1 whatever device is current.
    """

    lib = cp
    fused_acts = tuple(_ACT)

    def __init__(self, model, plan):
        self.device = _device_of(model)
        with self.device:
            super().__init__(model, plan)

    def attach(self, checked=False):
        with self.device:
            return super().attach(checked)

    def train_step(self, *args, **kwargs):
        with self.device:
            return super().train_step(*args, **kwargs)

    def weights_finite(self):
        with self.device:
            return super().weights_finite()

    def evaluate_batch(self, *args, **kwargs):
        with self.device:
            return super().evaluate_batch(*args, **kwargs)

    def _allocate(self, n):
        dt = self.dtype
        self.capacity = n
        widths = [W.shape[1] for W, *_ in self.stages]
        self.z = [cp.empty((n, w), dt) for w in widths]
        self.da = [cp.empty((n, w), dt) for w in widths[:-1]]
        k = widths[-1]
        self.p = cp.empty((n, k), dt)
        self.dz = cp.empty((n, k), dt)
        self.rowloss = cp.empty((n,), dt)

    def _softmax_ce(self, z, t, n, w=None):
        """Fused softmax + cross-entropy (one kernel): ``(loss, p, δ = (p - t) / N)``. ``w``
        is always None: this trainer leaves weighted rows to the loss object
        (:attr:`weighs_rows` is False)."""
        p, delta, rowloss = self.p[:n], self.dz[:n], self.rowloss[:n]
        kernel = _softmax_ce_labels if t.ndim == 1 else _softmax_ce_dense
        kernel(z, t, int(z.shape[1]), float(n), p, delta, rowloss)
        return cp.sum(rowloss) / n, p, delta

    def _bias_act(self, z, W, b, mode):
        """``z ← act(z + b)`` in place, one kernel."""
        if b is not None or mode != "identity":       # W: an unused stand-in for a missing b
            _bias_act(b if b is not None else W, int(z.shape[1]), int(b is not None), _ACT[mode],
                      z)

    def _act_backward(self, i, y, delta, db, mode):
        """``δ ← act'(·) ⊙ δ`` in place, one kernel; the bias gradient is left to the caller."""
        if mode != "identity":
            _act_backward(y, _ACT[mode], delta)
        return False

    def _add_weight_decay(self, i, W, dW, wd):
        cp.add(dW, float(wd) * W, out=dW)

    def update(self):
        """The optimizer step: one kernel over the flat buffers, or one per run of parameters
        with their own ``lr_factor`` / ``wd_factor`` (:attr:`groups`)."""
        opt = self.opt
        t = self.t + 1
        for lo, hi, lr_factor, wd_factor in self.groups:
            # Python floats: a NumPy scalar of another dtype than T would not match the kernel
            lr, wd = float(opt.lr * lr_factor), float(opt.weight_decay * wd_factor)
            g, p, m, v = (flat[lo:hi] for flat in (self.flat_g, self.flat_p, self.flat_m,
                                                   self.flat_v))
            if self.kind in ("adam", "adamw"):
                decoupled = self.kind == "adamw"
                b1, b2 = float(opt.beta1), float(opt.beta2)
                _adam(g, b1, 1.0 - b1, b2, 1.0 - b2, float(opt.eps), wd, 1.0 - lr * wd,
                      int(decoupled), lr / (1.0 - b1 ** t), math.sqrt(1.0 - b2 ** t), p, m, v)
            elif self.kind == "sgd":
                _sgd(g, lr, float(opt.momentum), wd, int(opt.nesterov), int(self.started), p, m)
            else:
                rho = float(opt.rho)
                _rmsprop(g, lr, rho, 1.0 - rho, float(opt.eps), float(opt.momentum), wd, p, m, v)
        self._after_update(t)

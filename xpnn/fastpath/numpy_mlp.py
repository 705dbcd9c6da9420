"""NumPy fast path: the generic MLP training step without temporaries.

Same equations as :class:`xpnn.layers.Dense`, the activations, the fused softmax-cross-entropy
of :class:`xpnn.losses.CategoricalCrossEntropy` and the optimizers, evaluated in the same order
(so float64 runs agree with the generic path to rounding), but

* every parameter, gradient and optimizer moment is a view of one flat buffer
  (:class:`~._flat.FlatTrainer`), so an optimizer update is a few long in-place passes;
* activations and backward deltas live in buffers preallocated for the batch size and written
  with ``out=``; ReLU and tanh are applied in place;
* ``xᵀ·δ`` and ``δ·Wᵀ`` hand BLAS transposed *views* (no copies);
* with Numba installed (``xpnn[fast]``), the element-wise work between the matmuls is a few
  compiled single-pass loops from :mod:`.numba_kernels`: the whole optimizer update, bias +
  ReLU, ReLU's backward together with the bias gradient, and softmax-cross-entropy;
* without it, NumPy passes with ``out=``; the optimizer update is then cut into blocks;
* for large models (:data:`THREAD_MIN_PARAMS`) the optimizer update, either kind, is split
  across threads (Numba's kernels and NumPy's ufuncs release the GIL), because element-wise
  loops run on one core while BLAS uses every core, and one core cannot stream the optimizer
  state through memory as fast as two;
* shuffled batches are gathered one at a time into a buffer the trainer reuses
  (:meth:`NumpyMLPTrainer.gather`), so the first matmul reads them from cache, instead of
  copying the whole shuffled dataset once per epoch (a fresh 188 MB array for MNIST) and
  reading it back from memory.

Activations other than ReLU/tanh/identity (sigmoid, leaky ReLU, a plain softmax) and losses other
than the fused softmax-CE call the generic layer/loss objects, so they are exact by construction.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..layers import Dropout
from ..threads import budget
from . import numba_kernels
from ._flat import FlatTrainer

#: Elements per block of the optimizer update. Measured on a 2-core Zen 4: smaller, cache-sized
#: blocks lose more to per-call overhead (13 ufunc calls per block) than they gain in locality.
BLOCK = 1 << 20
#: Split the optimizer update across threads from this many parameters on (below, handing the
#: work to another thread costs about what it saves).
THREAD_MIN_PARAMS = 500_000


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


_POOL = None


def _pool(n):
    global _POOL
    if _POOL is None or _POOL._max_workers < n:
        _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="xpnn-update")
    return _POOL


class NumpyMLPTrainer(FlatTrainer):
    """One training step of a supported MLP on NumPy arrays (see :func:`xpnn.fastpath.select`).

    Attributes
    ----------
    kernels : str
        ``"numba"``: the optimizer update, bias + ReLU, ReLU's backward + the bias gradient and
        softmax-cross-entropy are compiled loops from :mod:`.numba_kernels` (Numba installed
        and not disabled with ``XPNN_NUMBA=0``), each one pass; ``"numpy"``:
        sequences of in-place NumPy passes. Both give the same numbers (to rounding).
    threads : int
        Threads for the optimizer update (``XPNN_FASTPATH_THREADS``, default: the usable
        cores; 1 below :data:`THREAD_MIN_PARAMS` parameters, where handing work over costs
        more than it saves).
    """

    lib = np
    fused_acts = ("relu", "tanh")
    smooths_labels = True
    gathers_batches = True

    def __init__(self, model, plan):
        super().__init__(model, plan)
        env = os.environ.get("XPNN_FASTPATH_THREADS")
        self.threads = int(env) if env else (
            _cpu_count() if self.size >= THREAD_MIN_PARAMS else 1)
        self.kernels = "numba" if numba_kernels.available() else "numpy"
        compiled, passes, arguments = {
            "adam": (self._adam_numba, self._adam_block, self._adam_args),
            "adamw": (self._adam_numba, self._adam_block, self._adam_args),
            "sgd": (self._sgd_numba, self._sgd_block, self._sgd_args),
            "rmsprop": (self._rmsprop_numba, self._rmsprop_block, self._rmsprop_args),
        }[self.kind]
        #: the update on elements ``lo:hi`` and the function giving its arguments at step t
        self._update_fn = (compiled if self.kernels == "numba" else passes, arguments)
        self._wd_tmp = {}
        self._xin = None
        #: per stage: the Dropout that alone follows its activation, which this trainer applies
        #: itself (with Numba), or None
        self._dropouts = [post[0] if self.kernels == "numba" and len(post) == 1
                          and type(post[0]) is Dropout else None for *_, post in self.stages]
        self._keep = {}           # per stage: that Dropout's mask, from forward to backward

    def gather(self, X, t, rows):
        """Batch ``(X[rows], t[rows])``, ``X``'s rows copied into a buffer reused from batch
        to batch (valid until the next call).

        ``Sequential.fit`` calls this with consecutive slices of each epoch's permutation
        instead of gathering the whole shuffled dataset first: the same batches, so the same
        numbers, but each batch is still in cache when the first matmul reads it.
        """
        m = rows.shape[0]
        buf = self._xin
        if (buf is None or buf.shape[0] < m or buf.shape[1:] != X.shape[1:]
                or buf.dtype != X.dtype):
            buf = self._xin = np.empty((m, *X.shape[1:]), X.dtype)
        xb = buf[:m]
        X.take(rows, 0, xb, "clip")         # rows are in range: no checked copy
        return xb, t.take(rows, 0)

    # ------------------------------------------------------------------ buffers
    def _allocate(self, n):
        dt = self.dtype
        self.capacity = n
        widths = [W.shape[1] for W, *_ in self.stages]
        self.z = [np.empty((n, w), dt) for w in widths]             # pre-activations / outputs
        self.da = [np.empty((n, w), dt) for w in widths[:-1]]       # dL/d(output of layer i)
        fused_relu = self.kernels == "numba"       # ReLU + bias grad in one kernel, no mask
        self.dropped = [None if d is None else np.empty((n, w), dt)     # a Dropout's output
                        for d, w in zip(self._dropouts, widths, strict=True)]
        self.aux = [np.empty((n, w), dt) if mode == "tanh" else
                    np.empty((n, w), np.bool_) if mode == "relu" and not (
                        fused_relu and b is not None) else None
                    for (_, b, _, _, mode, _), w in zip(self.stages, widths, strict=True)]
        k = widths[-1]
        self.p = np.empty((n, k), dt)       # softmax probabilities
        self.dz = np.empty((n, k), dt)      # dL/dlogits
        self.row = np.empty((n, 1), dt)
        self.row2 = np.empty((n, 1), dt)
        self.rows = np.arange(n)

    # ------------------------------------------------------------------ element-wise work
    def _bias_act(self, z, W, b, mode):
        """``z ← act(z + b)`` in place."""
        if self.kernels == "numba" and mode == "relu" and b is not None:
            numba_kernels.bias_relu(z, b)                # z ← max(z + b, 0), one pass
            return
        if b is not None:
            np.add(z, b, out=z)
        if mode == "relu":
            np.maximum(z, 0, out=z)
        elif mode == "tanh":
            np.tanh(z, out=z)

    def _act_backward(self, i, y, delta, db, mode):
        """``δ ← act'(·) ⊙ δ`` in place, from the activation's output ``y``; True when the bias
        gradient ``db = Σ_n δ`` was computed on the way."""
        if mode == "relu":
            if self.kernels == "numba" and db is not None:
                numba_kernels.relu_backward_bias_grad(delta, y, db)    # and db = Σ_n δ
                return True
            mask = self.aux[i][:y.shape[0]]              # δ ⊙ [z > 0]  (y > 0 ⇔ z > 0)
            np.greater(y, 0, out=mask)
            np.multiply(delta, mask, out=delta)
        elif mode == "tanh":                             # δ ⊙ (1 - y²)
            tmp = self.aux[i][:y.shape[0]]
            np.multiply(y, y, out=tmp)
            np.subtract(1.0, tmp, out=tmp)
            np.multiply(delta, tmp, out=delta)
        return False

    def _post_forward(self, i, z, post):
        """With Numba, a Dropout alone after the activation: its mask drawn by the layer (the
        same random numbers), the product ``z ⊙ m / (1 - p)`` in one pass into a buffer of
        the trainer (:func:`.numba_kernels.dropout_apply`; no scale array), the mask kept for
        :meth:`_post_backward`. Otherwise the layer objects."""
        layer = self._dropouts[i]
        if layer is None or layer.p == 0.0:
            self._keep.pop(i, None)
            return super()._post_forward(i, z, post)
        n = z.shape[0]
        keep = self._keep[i] = layer.draw_mask(n, z.shape[1])
        out = self.dropped[i][:n]
        numba_kernels.dropout_apply(z, keep, self._dropout_scale(layer), out)
        return out

    def _post_backward(self, i, delta, post):
        """``δ ⊙ m / (1 - p)`` in place, with the mask of :meth:`_post_forward`."""
        keep = self._keep.pop(i, None)
        if keep is None:
            return super()._post_backward(i, delta, post)
        numba_kernels.dropout_apply_inplace(delta, keep, self._dropout_scale(post[0]))
        return delta

    def _dropout_scale(self, layer):
        """``1 / (1 - p)`` in the trainer's dtype, as :class:`xpnn.Dropout` rounds it."""
        return self.dtype.type(1.0 / (1.0 - layer.p))

    def _add_weight_decay(self, i, W, dW, wd):
        """``dW ← dW + λ W`` through a buffer kept per layer."""
        tmp = self._wd_tmp.get(i)
        if tmp is None:
            tmp = self._wd_tmp[i] = np.empty_like(W)
        np.multiply(W, wd, out=tmp)
        np.add(dW, tmp, out=dW)

    @property
    def weighs_rows(self):
        """With Numba, :meth:`_softmax_ce` weighs integer-labelled rows itself."""
        return self.kernels == "numba"

    def _head_takes_bias(self, tb, wb):
        """With Numba, integer labels (with or without sample weights) and a biased output
        layer (identity activation, nothing after it), :meth:`_softmax_ce` adds the bias and
        sums its gradient in its own pass."""
        if self.kernels != "numba" or tb.ndim != 1:
            return False
        _, b, _, _, mode, post = self.stages[-1]
        return self.plan.head == "softmax_ce" and b is not None and mode == "identity" and not post

    def _softmax_ce(self, z, t, n, b=None, db=None, w=None):
        """Fused softmax + categorical cross-entropy on logits ``z`` (overwritten).

        ``p = softmax(z)``, ``L = -(1/N) Σ_n log p[n, y_n]`` (with one-hot rows ``t``:
        ``-(1/N) Σ t ⊙ log p``), ``dL/dz = (p - t) / N``. With ``b`` and ``db`` (Numba, integer
        labels), ``z`` is ``x W`` and the kernel adds ``b`` and sums ``db = Σ_n dL/dz`` too.
        Integer labels under the loss's label smoothing ε are the target rows ``on`` at the
        label and ``off`` elsewhere (:meth:`_smoothed_targets`). Per-row weights ``w`` (Numba,
        integer labels: :attr:`weighs_rows`) scale the rows by ``w_n / Σ w`` instead of
        ``1/N``, as :class:`xpnn.losses.Loss` weighs them.
        """
        p, dz, row, row2 = self.p[:n], self.dz[:n], self.row[:n], self.row2[:n]
        on, off = self._smoothed_targets(z.shape[1])
        if t.ndim == 1 and self.kernels == "numba":          # integer labels: one pass
            scale = None if w is None else w / np.sum(w)
            loss = numba_kernels.softmax_ce_labels(z, t, p, dz, b, db, on, off, scale)
            return np.asarray(loss, dtype=self.dtype), p, dz
        np.max(z, axis=1, keepdims=True, out=row)
        np.subtract(z, row, out=z)                          # shifted = z - max z
        np.exp(z, out=p)
        np.sum(p, axis=1, keepdims=True, out=row)           # s = Σ exp(shifted)
        np.log(row, out=row2)                               # log s
        np.divide(p, row, out=p)                            # p = exp(shifted) / s
        np.copyto(dz, p)
        if t.ndim == 1 and off:                             # smoothed integer labels
            rows = self.rows[:n]
            np.subtract(z, row2, out=z)                     # log p
            logp = z[rows, t]                               # log p[n, y_n]
            loss = -(on * np.sum(logp) + off * (np.sum(z) - np.sum(logp))) / n
            np.subtract(p, off, out=dz)
            dz[rows, t] = p[rows, t] - on
        elif t.ndim == 1:
            rows = self.rows[:n]
            logp = z[rows, t] - row2[:, 0]                  # log p[n, y_n]
            loss = -np.sum(logp) / n
            dz[rows, t] -= 1.0
        else:
            np.subtract(z, row2, out=z)                     # log p
            np.multiply(z, t, out=z)
            loss = -np.sum(z) / n
            np.subtract(dz, t, out=dz)
        np.divide(dz, n, out=dz)
        return np.asarray(loss, dtype=self.dtype), p, dz

    def _smoothed_targets(self, k):
        """``(on, off)``: the smoothed target row's value at the label and elsewhere,
        ``t = onehot (1 - ε) + ε / K`` in the trainer's dtype as the loss rounds it; ``(1, 0)``
        without label smoothing."""
        ls = self.plan.loss.label_smoothing
        if not ls:
            return 1.0, 0.0
        c = self.dtype.type
        off = c(ls / k)
        return c(1.0 - ls) + off, off

    # ------------------------------------------------------------------ optimizer
    def update(self) -> bool:
        """One optimizer step over the flat buffers (the equations of the optimizer classes).

        Returns whether every parameter is finite afterwards (what the generic path checks),
        found in the same pass as the update; also kept as :attr:`last_update_finite`.
        """
        t = self.t + 1
        fn, arguments = self._update_fn
        opt = self.opt
        finite = True
        for lo, hi, lr_factor, wd_factor in self.groups:
            finite = self._run_blocks(fn, arguments(t, opt.lr * lr_factor,
                                                    opt.weight_decay * wd_factor),
                                      lo, hi) and finite
        self.last_update_finite = finite
        self._after_update(t)
        return finite

    def _run_blocks(self, fn, args, start=0, stop=None) -> bool:
        """``fn(lo, hi, *args)`` over the flat buffers' elements ``start:stop`` (default: all),
        split across :attr:`threads`; True when every part reported finite results (no more
        threads than the running loop's BLAS threads, :func:`xpnn.threads.budget`)."""
        stop = self.size if stop is None else stop
        size, threads = stop - start, self.threads
        if threads > 1 and budget() is not None:
            threads = min(threads, budget())
        if threads <= 1:
            return bool(fn(start, stop, *args))
        step = -(-size // threads)
        step = -(-step // 16) * 16
        bounds = [(lo, min(lo + step, stop)) for lo in range(start, stop, step)]
        pool = _pool(len(bounds) - 1)
        futures = [pool.submit(fn, lo, hi, *args) for lo, hi in bounds[1:]]
        finite = bool(fn(*bounds[0], *args))
        for f in futures:
            finite = bool(f.result()) and finite
        return finite

    # The arguments of step t with learning rate lr and weight decay wd (the optimizer's, times
    # the factors of the parameters updated: one torch.optim parameter group).
    def _adam_args(self, t, lr, wd):
        opt = self.opt
        return (lr, opt.beta1, opt.beta2, opt.eps, wd, self.kind == "adamw",
                lr / (1.0 - opt.beta1 ** t), math.sqrt(1.0 - opt.beta2 ** t))

    def _sgd_args(self, t, lr, wd):
        opt = self.opt
        return lr, opt.momentum, opt.nesterov, wd, self.started

    def _rmsprop_args(self, t, lr, wd):
        opt = self.opt
        return lr, opt.rho, opt.eps, opt.momentum, wd

    def _adam_numba(self, lo, hi, lr, b1, b2, eps, wd, decoupled, step_size, bc2):
        """The update of :meth:`_adam_block` on elements ``lo:hi`` as one compiled loop
        (:mod:`.numba_kernels`)."""
        c = self.dtype.type          # scalars in the buffers' dtype, as NumPy casts them
        decay = 1.0 - lr * wd if wd and decoupled else 1.0
        return numba_kernels.adam_update(
            self.flat_p[lo:hi], self.flat_g[lo:hi], self.flat_m[lo:hi], self.flat_v[lo:hi],
            c(b1), c(b2), c(1.0 - b1), c(1.0 - b2), c(eps * bc2), c(step_size * bc2),
            c(0.0 if decoupled else wd), c(decay))

    def _sgd_numba(self, lo, hi, lr, mu, nesterov, wd, started):
        """The update of :meth:`_sgd_block` on elements ``lo:hi`` as one compiled loop."""
        c = self.dtype.type
        return numba_kernels.sgd_update(
            self.flat_p[lo:hi], self.flat_g[lo:hi], self.flat_m[lo:hi], c(lr), c(mu), c(wd),
            started, bool(nesterov))

    def _rmsprop_numba(self, lo, hi, lr, rho, eps, mu, wd):
        """The update of :meth:`_rmsprop_block` on elements ``lo:hi`` as one compiled loop."""
        c = self.dtype.type
        return numba_kernels.rmsprop_update(
            self.flat_p[lo:hi], self.flat_g[lo:hi], self.flat_m[lo:hi], self.flat_v[lo:hi],
            c(lr), c(rho), c(1.0 - rho), c(eps), c(mu), c(wd))

    def _adam_block(self, lo, hi, lr, b1, b2, eps, wd, decoupled, step_size, bc2):
        """Adam/AdamW on elements ``lo:hi``, in blocks of :data:`BLOCK`::

            (AdamW) θ ← θ (1 - lr λ)      (Adam, λ > 0) g ← g + λ θ
            m ← β₁ m + (1 - β₁) g
            v ← β₂ v + (1 - β₂) g²
            θ ← θ - (lr / (1 - β₁ᵗ)) · m / (√v / √(1 - β₂ᵗ) + ε)

        Returns whether θ is finite on these elements (checked block by block, while the
        block is in cache).
        """
        P, G, M, V = self.flat_p, self.flat_g, self.flat_m, self.flat_v
        tmp_full = np.empty(min(BLOCK, hi - lo), self.dtype)
        finite = True
        for s in range(lo, hi, BLOCK):
            e = min(s + BLOCK, hi)
            p, g, m, v, tmp = P[s:e], G[s:e], M[s:e], V[s:e], tmp_full[:e - s]
            if wd and decoupled:
                np.multiply(p, 1.0 - lr * wd, out=p)
            elif wd:
                g = g + wd * p
            np.multiply(m, b1, out=m)
            np.multiply(g, 1.0 - b1, out=tmp)
            np.add(m, tmp, out=m)
            np.multiply(v, b2, out=v)
            np.multiply(g, g, out=tmp)
            np.multiply(tmp, 1.0 - b2, out=tmp)
            np.add(v, tmp, out=v)
            # m / (√v / bc2 + ε) = bc2 · m / (√v + ε bc2): one pass fewer, same value
            np.sqrt(v, out=tmp)
            np.add(tmp, eps * bc2, out=tmp)
            np.divide(m, tmp, out=tmp)
            np.multiply(tmp, step_size * bc2, out=tmp)
            np.subtract(p, tmp, out=p)
            finite = finite and bool(np.isfinite(p).all())
        return finite

    def _sgd_block(self, lo, hi, lr, mu, nesterov, wd, started):
        """SGD on elements ``lo:hi``: ``b ← g`` (first step) or ``b ← μ b + g``;
        ``d = g + μ b`` (Nesterov) or ``b``; ``θ ← θ - lr d`` (``g ← g + λ θ`` first).
        Returns whether θ is finite on these elements."""
        P, G, B = self.flat_p, self.flat_g, self.flat_m
        tmp_full = np.empty(min(BLOCK, hi - lo), self.dtype)
        finite = True
        for s in range(lo, hi, BLOCK):
            e = min(s + BLOCK, hi)
            p, g, buf, tmp = P[s:e], G[s:e], B[s:e], tmp_full[:e - s]
            if wd:
                g = g + wd * p
            if mu:
                if started:
                    np.multiply(buf, mu, out=buf)
                    np.add(buf, g, out=buf)
                else:
                    np.copyto(buf, g)
                if nesterov:
                    np.multiply(buf, mu, out=tmp)
                    np.add(g, tmp, out=tmp)
                    g = tmp
                else:
                    g = buf
            np.multiply(g, lr, out=tmp)
            np.subtract(p, tmp, out=p)
            finite = finite and bool(np.isfinite(p).all())
        return finite

    def _rmsprop_block(self, lo, hi, lr, rho, eps, mu, wd):
        """RMSprop on elements ``lo:hi`` (``s`` in ``flat_m``, the momentum buffer ``b`` in
        ``flat_v``)::

            g ← g + λ θ   (λ > 0)
            s ← ρ s + (1 - ρ) g²
            u ← g / (√s + ε)
            b ← μ b + u;  θ ← θ - lr b     (μ > 0; otherwise θ ← θ - lr u)

        Returns whether θ is finite on these elements."""
        P, G, S, B = self.flat_p, self.flat_g, self.flat_m, self.flat_v
        tmp_full = np.empty(min(BLOCK, hi - lo), self.dtype)
        finite = True
        for start in range(lo, hi, BLOCK):
            e = min(start + BLOCK, hi)
            p, g, s, b, tmp = P[start:e], G[start:e], S[start:e], B[start:e], tmp_full[:e - start]
            if wd:
                g = g + wd * p
            np.multiply(s, rho, out=s)
            np.multiply(g, g, out=tmp)
            np.multiply(tmp, 1.0 - rho, out=tmp)
            np.add(s, tmp, out=s)
            np.sqrt(s, out=tmp)
            np.add(tmp, eps, out=tmp)
            np.divide(g, tmp, out=tmp)                   # u
            if mu:
                np.multiply(b, mu, out=b)
                np.add(b, tmp, out=b)
                np.multiply(b, lr, out=tmp)
            else:
                np.multiply(tmp, lr, out=tmp)
            np.subtract(p, tmp, out=p)
            finite = finite and bool(np.isfinite(p).all())
        return finite

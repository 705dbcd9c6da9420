"""Fused CPU kernels for the NumPy fast path, compiled with Numba (optional).

NumPy evaluates ``m ← β₁ m + (1 - β₁) g`` as separate passes over memory, one per operator, each
on one core. A whole Adam update is 12 such passes over the flat buffers; on an MLP of 235,000
parameters it cost a quarter of a training step. Written as one loop and compiled, the same
update reads and writes each element once: 95-216 µs instead of 350 µs on that MLP (measured
on a 2-vCPU Zen 4). On that MLP it stays on one core, where a second thread costs more than it
saves; from 500,000 parameters on, the trainer splits it across threads (each thread runs the
kernel on its own slice of the buffers), because then one core cannot stream the optimizer
state through memory as fast as two.

The kernels, each the textbook per-element rule (compare :mod:`xpnn.optimizers`,
:mod:`xpnn.layers` and :mod:`xpnn.losses`):

* :func:`adam_update`, :func:`sgd_update`, :func:`rmsprop_update`: the whole optimizer step
  over the flat buffers; the same operations in the same order and dtype as the NumPy passes,
  so bit for bit the same;
  each returns whether the updated parameters are finite, found in the same pass;
* :func:`dropout_apply`, :func:`dropout_apply_inplace`: Dropout's product with its mask
  (also :class:`xpnn.Dropout`'s own, once the kernels are loaded), bit for bit the layer's;
* :func:`mish_blend_forward`, :func:`mish_blend_backward`: the Mish of
  :class:`xpnn.ParametricActivation` after NumPy's ``exp`` (the layer's own, once the kernels
  are loaded), bit for bit its array passes;
* :func:`bias_relu`: ``a = max(z + b, 0)`` after a Dense's matmul;
* :func:`relu_backward_bias_grad`: ``δ ← δ ⊙ [y > 0]`` and ``db = Σ_n δ`` in one pass;
* :func:`softmax_ce_labels`: softmax, cross-entropy and ``dL/dz`` row by row, with or without
  label smoothing (optionally with the output layer's bias added before and its gradient
  summed after, in the same pass).

The last three agree with the NumPy passes to rounding (another ``exp``, another summation
order). ``tests/test_numba_kernels.py`` checks all of them, the softmax-CE gradient by finite
differences. :class:`~.numpy_mlp.NumpyMLPTrainer` uses them automatically when Numba is installed
(``pip install "xpnn[fast]"``); ``XPNN_NUMBA=0`` turns them off.

``error_model="numpy"`` lets the loops vectorise (a division by zero gives inf/nan, as in NumPy,
instead of raising), ``nogil=True`` releases the GIL and ``cache=True`` keeps the compiled code
on disk, so only the first run pays the compilation (about a second).
"""

from __future__ import annotations

import os

import numpy as np

try:
    import numba
except Exception:  # pragma: no cover - not installed, or no release for this NumPy
    numba = None   # (Numba raises ImportError for a NumPy it does not support yet)


def available() -> bool:
    """Whether the kernels can be used: Numba importable and not disabled by ``XPNN_NUMBA=0``."""
    if os.environ.get("XPNN_NUMBA", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return numba is not None


def _jit(fn):
    if numba is None:
        return fn
    try:
        return numba.njit(nogil=True, cache=True, error_model="numpy")(fn)
    except RuntimeError:  # pragma: no cover - no writable cache location: compile per process
        return numba.njit(nogil=True, error_model="numpy")(fn)


@_jit
def adam_update(p, g, m, v, b1, b2, one_minus_b1, one_minus_b2, eps_bc, step_bc, wd, decay):
    """Adam/AdamW on flat 1-D buffers, element by element (scalars in the buffers' dtype)::

        θ ← θ · decay                        (AdamW: decay = 1 - lr·λ; otherwise 1)
        g ← g + λ θ                          (Adam with weight_decay λ; otherwise λ = 0)
        m ← β₁ m + (1 - β₁) g
        v ← β₂ v + (1 - β₂) g²
        θ ← θ - m / (√v + ε·√(1-β₂ᵗ)) · (lr·√(1-β₂ᵗ) / (1-β₁ᵗ))

    The last line is torch.optim.Adam's ``θ - lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε)``
    with √(1-β₂ᵗ) moved into the numerator (``eps_bc``, ``step_bc``), as the NumPy passes do.

    Returns whether every new θ is finite, found in the same loop (``x - x`` is 0 for a
    finite ``x``, NaN otherwise; an OR over the elements, which vectorises).
    """
    bad = False                             # becomes True at a non-finite new θ
    for i in range(p.shape[0]):
        pi = p[i] * decay if decay != 1 else p[i]
        gi = g[i] + wd * pi if wd != 0 else g[i]
        mi = m[i] * b1 + gi * one_minus_b1
        vi = v[i] * b2 + gi * gi * one_minus_b2
        m[i] = mi
        v[i] = vi
        pn = pi - mi / (np.sqrt(vi) + eps_bc) * step_bc
        p[i] = pn
        bad |= pn - pn != 0                 # x - x: 0 if x is finite, NaN otherwise
    return not bad


@_jit
def sgd_update(p, g, buf, lr, mu, wd, started, nesterov):
    """SGD with momentum μ (0: none), Nesterov and L2 weight decay λ, per element::

        g ← g + λ θ
        b ← g (first step) or b ← μ b + g
        d ← g + μ b (Nesterov) or b (momentum) or g (μ = 0)
        θ ← θ - lr · d

    Returns whether every new θ is finite, accumulated in the same loop.
    """
    bad = False                             # becomes True at a non-finite new θ
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i] + wd * pi if wd != 0 else g[i]
        d = gi
        if mu != 0:
            bi = buf[i] * mu + gi if started else gi
            buf[i] = bi
            d = gi + bi * mu if nesterov else bi
        pn = pi - d * lr
        p[i] = pn
        bad |= pn - pn != 0
    return not bad


@_jit
def rmsprop_update(p, g, s, b, lr, rho, one_minus_rho, eps, mu, wd):
    """RMSprop with momentum μ (0: none) and L2 weight decay λ, per element::

        g ← g + λ θ
        s ← ρ s + (1 - ρ) g²
        u ← g / (√s + ε)
        b ← μ b + u;  θ ← θ - lr b     (μ > 0; otherwise θ ← θ - lr u)

    Returns whether every new θ is finite, accumulated in the same loop.
    """
    bad = False                             # becomes True at a non-finite new θ
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i] + wd * pi if wd != 0 else g[i]
        si = s[i] * rho + one_minus_rho * (gi * gi)
        s[i] = si
        u = gi / (np.sqrt(si) + eps)
        if mu != 0:
            u = b[i] * mu + u
            b[i] = u
        pn = pi - u * lr
        p[i] = pn
        bad |= pn - pn != 0
    return not bad


@_jit
def bias_relu(z, b):
    """``z ← max(z + b, 0)`` in place, for ``z`` (N, K) and ``b`` (K,): a Dense's bias and the
    ReLU after it in one pass (NaN stays NaN, as with ``np.maximum``)."""
    n, k = z.shape
    for i in range(n):
        for j in range(k):
            x = z[i, j] + b[j]
            z[i, j] = 0.0 if x <= 0 else x


@_jit
def dropout_apply(x, keep, scale, out):
    """Inverted dropout's product in one pass: ``out = x ⊙ m`` with ``m = scale`` where ``keep``
    and 0 elsewhere, for ``x``, ``keep`` and ``out`` (N, K). The numbers of
    :class:`xpnn.Dropout`'s forward (``x`` times its scale array; NaN/inf stay visible, ``x·0``)."""
    n, k = x.shape
    zero = scale - scale                    # 0 in scale's dtype
    for i in range(n):
        for j in range(k):
            out[i, j] = x[i, j] * (scale if keep[i, j] else zero)


@_jit
def dropout_apply_inplace(delta, keep, scale):
    """:func:`dropout_apply` in place, ``δ ← δ ⊙ m``: Dropout's backward. (A loop of its own:
    given the same array as input and output, :func:`dropout_apply` is not vectorised.)"""
    n, k = delta.shape
    zero = scale - scale
    for i in range(n):
        for j in range(k):
            delta[i, j] = delta[i, j] * (scale if keep[i, j] else zero)


@_jit
def mish_blend_forward(x, q, a, ca, one, d, y):
    """The arithmetic of :class:`xpnn.ParametricActivation`'s Mish after NumPy's ``exp``, in one
    pass over (N, F) arrays: given ``q = min(x, cap)`` and ``a = exp(q)``::

        a ← a + 1;  d = a² + 1;  q ← q / d;  y = q · ca + x      (ca = -2α, (F,))

    (``a``, ``d`` and ``q`` kept for the backward). The same operations in the same order and
    dtype (``one`` the dtype's 1) as the layer's array passes, so bit for bit their numbers."""
    n, k = x.shape
    for i in range(n):
        for j in range(k):
            ai = a[i, j] + one
            di = ai * ai + one
            qi = q[i, j] / di
            a[i, j] = ai
            d[i, j] = di
            q[i, j] = qi
            y[i, j] = qi * ca[j] + x[i, j]


@_jit
def mish_blend_backward(delta, q, a, d, fa, half, one, sums, dx):
    """:class:`xpnn.ParametricActivation`'s Mish backward in one pass over (N, F) arrays, from
    what :func:`mish_blend_forward` kept::

        sums = Σ_n δ ⊙ q                                  (rows added in order, as np.sum)
        dx = δ ⊙ (1 + fa ⊙ ((a - 1) a q - 1/2) / d)        (fa = 4α, (F,))

    The same operations in the same order and dtype (``half``, ``one``) as the layer's array
    passes, so bit for bit their numbers."""
    n, k = delta.shape
    for j in range(k):
        sums[j] = 0.0
    for i in range(n):
        for j in range(k):
            di = delta[i, j]
            sums[j] += di * q[i, j]
            u = (a[i, j] - one) * a[i, j] * q[i, j] - half
            dx[i, j] = (u / d[i, j] * fa[j] + one) * di


@_jit
def relu_backward_bias_grad(delta, y, db):
    """ReLU's backward and the bias gradient in one pass: ``δ ← δ ⊙ [y > 0]`` in place and
    ``db = Σ_n δ`` (rows added in order, as ``np.sum(δ, axis=0)`` does)."""
    n, k = delta.shape
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        for j in range(k):
            if not y[i, j] > 0:
                delta[i, j] = delta[i, j] * 0.0     # δ·0 (NaN/inf stay visible, as δ·mask)
            db[j] += delta[i, j]


@_jit
def softmax_ce_labels(z, labels, p, dz, b=None, db=None, on=1.0, off=0.0, scale=None):
    """Softmax + cross-entropy on logits ``z`` (N, K) with integer labels, row by row::

        p = exp(z - max z) / s,   s = Σ_k exp(z_k - max z)
        L = -(1/N) Σ_n log p[n, y_n] = -(1/N) Σ_n (z[n, y_n] - max z - log s)
        dL/dz = (p - onehot(y)) / N

    Writes ``p`` and ``dz``, returns ``L`` (accumulated in float64). With the output layer's
    bias ``b`` (K,), ``z`` is its matmul ``x W`` and becomes the logits ``z + b`` in the same
    pass; with ``db`` (K,) the bias gradient ``db = Σ_n dL/dz`` is summed on the way (rows
    added in order, as ``np.sum(dz, axis=0)`` does): one pass where there were three.

    Label smoothing ε: the target row is ``t = onehot(y) (1 - ε) + ε / K``, that is ``on``
    (``1 - ε + ε/K``) at the label and ``off`` (``ε/K``) elsewhere (both in ``z``'s dtype, as
    :class:`xpnn.losses.CategoricalCrossEntropy` builds them); then
    ``L = -(1/N) Σ_n Σ_k t_nk log p_nk`` and ``dL/dz = (p - t) / N``. ``off = 0`` (the
    default): the plain loss above, computed as without smoothing.

    Per-row weights: ``scale`` (N,) the rows' ``w_n / Σ w`` (in ``z``'s dtype, as
    :class:`xpnn.losses.Loss` computes them) takes the place of ``1/N``:
    ``L = -Σ_n scale_n Σ_k t_nk log p_nk`` and ``dL/dz = (p - t) · scale_n``.
    """
    n, k = z.shape
    if db is not None:
        for j in range(k):
            db[j] = 0.0
    total = 0.0
    for i in range(n):
        if b is not None:
            for j in range(k):
                z[i, j] = z[i, j] + b[j]
        top = z[i, 0]
        for j in range(1, k):
            if z[i, j] > top:
                top = z[i, j]
        s = np.exp(z[i, 0] - top)
        p[i, 0] = s
        for j in range(1, k):
            e = np.exp(z[i, j] - top)
            p[i, j] = e
            s += e
        y = labels[i]
        if scale is None and off == 0:                  # the plain loss
            for j in range(k):
                p[i, j] = p[i, j] / s
                dz[i, j] = p[i, j] / n
            dz[i, y] = p[i, y] - 1.0                    # rounded to z's dtype, then / N
            dz[i, y] = dz[i, y] / n
            total += (z[i, y] - top) - np.log(s)
        else:                                           # smoothed labels or weighted rows
            log_s = np.log(s)
            rest = 0.0                                  # Σ_{k ≠ y} log p_k
            for j in range(k):
                p[i, j] = p[i, j] / s
                dz[i, j] = p[i, j] - off                # rounded to z's dtype, then / N
                if j != y:
                    rest += (z[i, j] - top) - log_s
            dz[i, y] = p[i, y] - on
            for j in range(k):                          # ... or · w/Σw
                if scale is None:
                    dz[i, j] = dz[i, j] / n
                else:
                    dz[i, j] = dz[i, j] * scale[i]
            row = on * ((z[i, y] - top) - log_s)
            if off != 0:
                row = row + off * rest
            if scale is None:
                total += row
            else:
                total += scale[i] * row
        if db is not None:
            for j in range(k):
                db[j] += dz[i, j]
    if scale is not None:
        return -total
    return -total / n

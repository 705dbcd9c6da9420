"""Finite-difference checks of every hand-written derivative, in float64, on every backend.

Three levels:

* each layer on its own: ``backward`` against central differences of ``L = Σ y ⊙ R`` (so that
  ``dL/dy = R``), for the input gradient and every parameter gradient;
* each loss on its own, including the fused Softmax+CCE and Sigmoid+BCE paths on logits, against
  central differences of the loss written out in NumPy here;
* whole models: the gradients left in ``W.grad``/``b.grad`` by the real training step against
  central differences of the model's loss computed in NumPy from ``predict``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import xpnn
from xpnn.backend import get_backend, to_numpy
from xpnn.losses import BinaryCrossEntropy, CategoricalCrossEntropy

EPS = 1e-5
RTOL, ATOL = 1e-6, 1e-8
FAST = settings(max_examples=12, deadline=None, database=None, derandomize=True)

shapes = st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))  # (N, in, out)
seeds = st.integers(0, 2**31 - 1)


def central_diff(f, x, eps=EPS):
    """∂f/∂x for a scalar function f of a float64 NumPy array x, element by element."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def away_from_zero(a, margin=0.1):
    """Keep inputs off the kinks of ReLU/LeakyReLU, where finite differences are meaningless."""
    return np.where(a >= 0, a + margin, a - margin)


# ------------------------------------------------------------------ numpy reference losses
def np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_mse(y, t):
    return np.mean((y - t) ** 2)


def np_bce(p, t):
    return -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))


def np_cce(p, t):
    """t: integer labels (N,) or one-hot rows (N, K)."""
    if t.ndim == 1:
        t = np.eye(p.shape[1])[t]
    return -np.sum(t * np.log(p)) / p.shape[0]


# ------------------------------------------------------------------ layers on their own
LAYERS = {
    "Dense": lambda: xpnn.Dense(None, 1),        # out_features is replaced below
    "Dense-nobias": lambda: xpnn.Dense(None, 1, bias=False),
    "Dense-glorot": lambda: xpnn.Dense(None, 1, init="glorot"),
    "ReLU": xpnn.ReLU,
    "LeakyReLU": lambda: xpnn.LeakyReLU(0.2),
    "Sigmoid": xpnn.Sigmoid,
    "Tanh": xpnn.Tanh,
    "Softmax": xpnn.Softmax,
    "Identity": xpnn.Identity,
    "Dropout": lambda: xpnn.Dropout(0.4),
    "Rescaling": lambda: xpnn.Rescaling(1.7, offset=-0.3),
}


def make_layer(name, n_out):
    layer = LAYERS[name]()
    if isinstance(layer, xpnn.Dense):
        layer.out_features = n_out
    return layer


@pytest.mark.parametrize("name", list(LAYERS))
@FAST
@given(shape=shapes, seed=seeds)
def test_layer_gradients(backend, name, shape, seed):
    n, n_in, n_out = shape
    if name == "Softmax":
        n_in = max(n_in, 2)
    be = get_backend(backend)
    rng = np.random.default_rng(seed)
    layer = make_layer(name, n_out)
    layer.build(be, "float64", np.random.default_rng(seed + 1), n_in)
    x = away_from_zero(rng.normal(size=(n, n_in)))
    R = rng.normal(size=(n, layer.output_features(n_in)))
    mask_seed = seed + 2

    def forward(x_host):
        if isinstance(layer, xpnn.Dropout):         # the same mask on every call
            layer.rng = np.random.default_rng(mask_seed)
        return layer.forward(be.asarray(x_host, "float64"), training=True)

    def loss(x_host):
        return float(np.sum(to_numpy(forward(x_host)) * R))

    forward(x)
    dx = to_numpy(layer.backward(be.asarray(R, "float64")))
    grads = {p.name: to_numpy(p.grad).copy() for p in layer.params}

    np.testing.assert_allclose(dx, central_diff(loss, x.copy()), rtol=RTOL, atol=ATOL,
                               err_msg=f"{name}: dL/dx")
    for p in layer.params:
        original = p.data

        def loss_of_param(value, p=p):
            p.data = be.asarray(value, "float64")
            return loss(x)

        numeric = central_diff(loss_of_param, to_numpy(original).copy())
        p.data = original
        np.testing.assert_allclose(grads[p.name], numeric, rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name}: dL/d{p.name}")
    expected = {"Dense": {"W", "b"}, "Dense-glorot": {"W", "b"}, "Dense-nobias": {"W"}}
    assert set(grads) == expected.get(name, set())


def test_dense_weight_decay_is_the_gradient_of_the_l2_penalty(backend):
    """Dense(weight_decay=λ): dL/dW of L = Σ y ⊙ R + (λ/2)·||W||², and the bias is not decayed."""
    be, lam = get_backend(backend), 0.3
    rng = np.random.default_rng(0)
    layer = xpnn.Dense(3, 2, weight_decay=lam)
    layer.build(be, "float64", np.random.default_rng(1), 3)
    x, R = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))

    def loss_of_W(W):
        y = x @ W + to_numpy(layer.b.data)
        return float(np.sum(y * R) + 0.5 * lam * np.sum(W * W))

    layer.forward(be.asarray(x, "float64"), training=True)
    layer.backward(be.asarray(R, "float64"))
    W = to_numpy(layer.W.data).copy()
    np.testing.assert_allclose(to_numpy(layer.W.grad), central_diff(loss_of_W, W), rtol=RTOL,
                               atol=ATOL)
    np.testing.assert_allclose(to_numpy(layer.b.grad), R.sum(axis=0), rtol=1e-12)


def test_dropout_mask_really_drops(backend):
    """The fixed-mask gradient check above is meaningful only if units are dropped and scaled."""
    be = get_backend(backend)
    layer = xpnn.Dropout(0.5)
    layer.build(be, "float64", np.random.default_rng(0), 50)
    y = to_numpy(layer.forward(be.asarray(np.ones((4, 50)), "float64"), training=True))
    assert set(np.unique(y)) == {0.0, 2.0}
    dx = to_numpy(layer.backward(be.asarray(np.ones((4, 50)), "float64")))
    np.testing.assert_array_equal(dx, y)
    np.testing.assert_array_equal(
        to_numpy(layer.forward(be.asarray(np.ones((4, 50)), "float64"))), np.ones((4, 50)))


def test_dense_first_layer_skips_input_gradient(backend):
    model = xpnn.Sequential(xpnn.Dense(3, 4), xpnn.ReLU(), xpnn.Dense(4, 2), backend=backend)
    assert model.layers[0].input_grad_needed is False
    assert model.layers[2].input_grad_needed is True
    layer = model.layers[0]
    layer.forward(model.backend.asarray(np.ones((2, 3)), "float32"), training=True)
    assert layer.backward(model.backend.asarray(np.ones((2, 4)), "float32")) is None
    assert layer.W.grad is not None and layer.b.grad is not None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_forward_is_where_exactly(backend, dtype):
    """ReLU's forward is ``where(x <= 0, 0, x)`` bit for bit (NaN aside): ``-0.0`` and
    ``-inf`` give ``+0.0``, NaN stays NaN, ``inf`` stays ``inf``, in training and inference."""
    be = get_backend(backend)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 9)).astype(dtype)
    x[0, :5] = [-0.0, 0.0, np.nan, -np.inf, np.inf]
    want = np.where(x <= 0, np.zeros_like(x), x)
    layer = xpnn.ReLU()
    layer.build(be, dtype, None, 9)
    for training in (False, True):
        got = to_numpy(layer.forward(be.asarray(x, dtype), training=training))
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        numbers = ~np.isnan(want)                       # (a NaN's sign bit means nothing)
        np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))


# ------------------------------------------------------------------ losses on their own
def _targets(kind, rng, n, k):
    if kind == "labels":
        return rng.integers(0, k, size=n)
    if kind == "onehot":
        return np.eye(k)[rng.integers(0, k, size=n)]
    return rng.uniform(0, 1, size=(n, k))             # soft targets in [0, 1]


def _device_targets(be, loss, y, k):
    t = loss.prepare_targets(y, k)
    return be.asarray(t, "int64" if t.dtype.kind == "i" else "float64")


LOSS_CASES = [
    # (name, loss class, target kind, NumPy reference on the loss's input, fused?)
    ("mse", xpnn.MSE, "soft", np_mse, False),
    ("bce-probabilities", BinaryCrossEntropy, "soft", np_bce, False),
    ("cce-probabilities-labels", CategoricalCrossEntropy, "labels", np_cce, False),
    ("cce-probabilities-onehot", CategoricalCrossEntropy, "onehot", np_cce, False),
    ("bce-logits", BinaryCrossEntropy, "soft", lambda z, t: np_bce(np_sigmoid(z), t), True),
    ("cce-logits-labels", CategoricalCrossEntropy, "labels",
     lambda z, t: np_cce(np_softmax(z), t), True),
    ("cce-logits-onehot", CategoricalCrossEntropy, "onehot",
     lambda z, t: np_cce(np_softmax(z), t), True),
]


@pytest.mark.parametrize("case", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
@FAST
@given(n=st.integers(1, 5), k=st.integers(2, 4), seed=seeds)
def test_loss_gradients(backend, case, n, k, seed):
    name, cls, kind, reference, fused = case
    be = get_backend(backend)
    rng = np.random.default_rng(seed)
    loss = cls().bind(be.xp)
    y = _targets(kind, rng, n, k)
    t = _device_targets(be, loss, y, k)
    if fused or cls is xpnn.MSE:
        a = rng.normal(scale=2.0, size=(n, k))        # logits / regression outputs
    elif cls is BinaryCrossEntropy:
        a = rng.uniform(0.05, 0.95, size=(n, k))      # probabilities
    else:
        a = np_softmax(rng.normal(scale=0.5, size=(n, k)))   # rows of probabilities

    forward = loss.forward_logits if fused else loss.forward
    value = float(forward(be.asarray(a, "float64"), t))
    delta = to_numpy(loss.backward_logits() if fused else loss.backward())

    np.testing.assert_allclose(value, reference(a, y), rtol=1e-12, atol=1e-14)
    numeric = central_diff(lambda v: reference(v, y), a.copy())
    np.testing.assert_allclose(delta, numeric, rtol=RTOL, atol=ATOL, err_msg=name)


def test_fused_losses_stay_finite_on_extreme_logits(backend):
    be = get_backend(backend)
    z = be.asarray([[1000.0, -1000.0], [-1000.0, 1000.0]], "float64")
    cce = CategoricalCrossEntropy().bind(be.xp)
    value = float(cce.forward_logits(z, be.asarray([1, 1], "int64")))
    np.testing.assert_allclose(value, 1000.0)      # = (2000 + 0) / 2
    bce = BinaryCrossEntropy().bind(be.xp)
    value = float(bce.forward_logits(z, be.asarray([[1.0, 0.0], [1.0, 0.0]], "float64")))
    np.testing.assert_allclose(value, 500.0)       # two of four terms cost 1000 each
    assert np.all(np.isfinite(to_numpy(bce.backward_logits())))


# ------------------------------------------------------------------ whole models
class NoStep(xpnn.Optimizer):
    """Leaves the weights alone, so a training step only computes the gradients."""

    def __init__(self):
        super().__init__(lr=1.0)

    def update(self, param, grad, state):
        pass


MODEL_CASES = [
    # (id, output layers, loss, target kind, reference on the model output, fused expected)
    ("mse-linear", [], "mse", "soft", np_mse, False),
    ("mse-identity", [xpnn.Identity], "mse", "soft", np_mse, False),
    ("mse-on-softmax", [xpnn.Softmax], "mse", "soft", np_mse, False),
    ("mse-on-tanh", [xpnn.Tanh], "mse", "soft", np_mse, False),
    ("bce-on-probabilities", [xpnn.Sigmoid, xpnn.Identity], "binary_crossentropy", "soft",
     np_bce, False),
    ("cce-on-probabilities-labels", [xpnn.Softmax, xpnn.Identity], "categorical_crossentropy",
     "labels", np_cce, False),
    ("cce-on-probabilities-onehot", [xpnn.Softmax, xpnn.Identity], "categorical_crossentropy",
     "onehot", np_cce, False),
    ("bce-fused-sigmoid", [xpnn.Sigmoid], "binary_crossentropy", "soft", np_bce, True),
    ("cce-fused-softmax-labels", [xpnn.Softmax], "crossentropy", "labels", np_cce, True),
    ("cce-fused-softmax-onehot", [xpnn.Softmax], "categorical_crossentropy", "onehot",
     np_cce, True),
]
HIDDEN = {"ReLU": xpnn.ReLU, "LeakyReLU": lambda: xpnn.LeakyReLU(0.1), "Tanh": xpnn.Tanh,
          "Sigmoid": xpnn.Sigmoid}


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
@FAST
@given(n=st.integers(1, 5), n_in=st.integers(1, 4), hidden=st.integers(1, 5),
       k=st.integers(2, 3), act=st.sampled_from(sorted(HIDDEN)), bias=st.booleans(),
       seed=seeds)
def test_model_parameter_gradients(backend, case, n, n_in, hidden, k, act, bias, seed):
    name, head, loss, kind, reference, fused = case
    rng = np.random.default_rng(seed)
    model = xpnn.Sequential(xpnn.Dense(n_in, hidden, bias=bias), HIDDEN[act](),
                            xpnn.Dense(hidden, k), *[cls() for cls in head],
                            backend=backend, dtype="float64", seed=seed)
    model.compile(loss=loss, optimizer=NoStep())
    assert model._fused is fused
    X = rng.normal(scale=0.5, size=(n, n_in))
    y = _targets(kind, rng, n, k)
    for layer in model.layers:                       # random biases, not the initial zeros
        for p in layer.params:
            p.data = model.backend.asarray(to_numpy(p.data) + 0.1 * rng.normal(size=p.shape),
                                           "float64")

    W1 = model.get_weights()[0]
    pre = X @ W1 + (model.get_weights()[1] if bias else 0.0)
    assume(np.abs(pre).min() > 1e-3)                 # stay off the kinks of ReLU/LeakyReLU
    out = to_numpy(model.predict(X))                 # central differences of log(1 - p) lose
    assume(reference is not np_bce or np.minimum(out, 1 - out).min() > 1e-4)   # their accuracy

    def model_loss():
        return reference(to_numpy(model.predict(X)), y)

    before = model.get_weights()
    loss_value = model.train_on_batch(X, y)
    np.testing.assert_allclose(float(loss_value), model_loss(), rtol=1e-12, atol=1e-14)
    for w, w0 in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, w0)
    for i, p in enumerate(model.params):
        original = p.data

        def loss_of_param(value, p=p):
            p.data = model.backend.asarray(value, "float64")
            return model_loss()

        numeric = central_diff(loss_of_param, to_numpy(original).copy())
        p.data = original
        np.testing.assert_allclose(to_numpy(p.grad), numeric, rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name}: parameter {i} ({p.name})")
    assert len(model.params) == (4 if bias else 3)


def test_model_gradient_check_can_fail():
    """Guard against a vacuous check: a wrong backward must be caught by the same comparison."""
    model = xpnn.Sequential(xpnn.Dense(3, 4), xpnn.Tanh(), xpnn.Dense(4, 2), xpnn.Sigmoid(),
                            xpnn.Identity(), dtype="float64", seed=0)
    model.compile(loss="binary_crossentropy", optimizer=NoStep())
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(5, 3)), rng.uniform(size=(5, 2))
    model.layers[1].backward = lambda delta: delta      # forget tanh's derivative
    model.train_on_batch(X, y)
    W = model.params[0]
    original = W.data

    def loss_of_W(value):
        W.data = value
        return np_bce(model.predict(X), y)

    numeric = central_diff(loss_of_W, original.copy())
    W.data = original
    assert not np.allclose(W.grad, numeric, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.85])
def test_dropout_keeps_a_fraction_one_minus_p(p):
    """keep_mask: 4 units per raw 64-bit draw, kept with probability 1 - p (odd sizes too)."""
    from xpnn.layers.dropout import keep_mask

    rng = np.random.default_rng(3)
    before = rng.bit_generator.state["state"]["state"]
    mask = keep_mask(rng, 401, 251, p)                 # 100651 units: not a multiple of 4
    assert mask.shape == (401, 251) and mask.dtype == bool
    n = mask.size
    assert abs(mask.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    again = np.random.default_rng(3)
    assert again.bit_generator.state["state"]["state"] == before
    np.testing.assert_array_equal(keep_mask(again, 401, 251, p), mask)        # deterministic
    # ceil(n / 4) raw draws were used: the next draw is the same on both generators
    reference = np.random.default_rng(3)
    reference.bit_generator.random_raw((n + 3) // 4)
    assert rng.bit_generator.random_raw() == reference.bit_generator.random_raw()


def test_dropout_rank_slice_is_the_slice_of_the_global_mask():
    """Data-parallel: a rank with rows lo:hi of the global batch keeps exactly those rows of
    the mask one process draws (every rank draws the whole batch's numbers)."""
    be = get_backend("numpy")
    whole, part = xpnn.Dropout(0.4), xpnn.Dropout(0.4)
    whole.build(be, "float32", np.random.default_rng(7), 6)
    part.build(be, "float32", np.random.default_rng(7), 6)
    part.batch_slice = (9, 3, 7)
    for _ in range(2):
        full = whole.draw_mask(9, 6)
        np.testing.assert_array_equal(part.draw_mask(4, 6), full[3:7])


def test_softmax_and_log_equal_the_two_functions(backend):
    """The fused loss's one-pass ``(softmax, log softmax)`` are exactly :func:`softmax` and
    the stable log-softmax written out, ``z - max z - log Σ exp(z - max z)``."""
    from xpnn.layers.activations import softmax, softmax_and_log
    be = get_backend(backend)
    xp = be.xp
    z = be.asarray(np.random.default_rng(1).normal(size=(9, 4)) * 30, "float32")
    p, log_p = softmax_and_log(xp, z)
    shifted = z - xp.max(z, axis=1, keepdims=True)
    np.testing.assert_array_equal(to_numpy(p), to_numpy(softmax(xp, z)))
    np.testing.assert_array_equal(
        to_numpy(log_p),
        to_numpy(shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))))

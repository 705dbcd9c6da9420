"""The Poisson loss, weighted losses and the flat objective, checked in float64.

* every loss (Poisson included) with and without sample weights ``w``: the value is the
  weighted mean ``Σ w_n ℓ_n / Σ w_n`` (written out in NumPy here) and ``δ`` equals central
  differences of it;
* :class:`xpnn.losses.Poisson` (half deviance on ``z = log μ``): zero at a perfect fit, its
  target check, and the fast path giving the generic step's numbers;
* :class:`xpnn.flat.FlatObjective`: ``∇f(θ)`` against central differences of ``f(θ)`` for a
  whole network (dense and SciPy sparse input), and ``f(θ)`` against the model's predictions;
  integer sample weights in ``fit`` equal repeated rows, on the generic and the fast path.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_gradients import central_diff as _central_diff

import xpnn
from xpnn.backend import get_backend, to_numpy
from xpnn.flat import FlatObjective
from xpnn.inputs import prepare_X, prepare_y
from xpnn.losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy, Poisson

EPS = 1e-6
RTOL, ATOL = 1e-6, 1e-9


def central_diff(f, x, eps=EPS):
    """test_gradients' central difference, with this module's step."""
    return _central_diff(f, x, eps)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def weighted(rows, w):
    """Σ w_n ℓ_n / Σ w_n (plain mean without weights)."""
    return float(np.mean(rows) if w is None else np.sum(w * rows) / np.sum(w))


def xlogx(t):
    return np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)


# (id, loss class, fused, input kind, target kind, ℓ_n per row as a NumPy function)
CASES = [
    ("mse", MSE, False, "real", "real", lambda a, t: np.mean((a - t) ** 2, axis=1)),
    ("bce", BinaryCrossEntropy, False, "prob", "binary",
     lambda p, t: -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p), axis=1)),
    ("bce-logits", BinaryCrossEntropy, True, "real", "binary",
     lambda z, t: -np.mean(t * np.log(sigmoid(z)) + (1 - t) * np.log(1 - sigmoid(z)), axis=1)),
    ("cce", CategoricalCrossEntropy, False, "simplex", "onehot",
     lambda p, t: -np.sum(t * np.log(p), axis=1)),
    ("cce-logits", CategoricalCrossEntropy, True, "real", "onehot",
     lambda z, t: -np.sum(t * np.log(softmax(z)), axis=1)),
    ("poisson", Poisson, False, "real", "counts",
     lambda z, t: np.mean(np.exp(z) - t * z + xlogx(t) - t, axis=1)),
]


def _inputs(kind, rng, n, k):
    if kind == "real":
        return rng.normal(scale=1.0, size=(n, k))
    if kind == "prob":
        return rng.uniform(0.05, 0.95, size=(n, k))
    return softmax(rng.normal(scale=0.5, size=(n, k)))


def _targets(kind, rng, n, k):
    if kind == "real":
        return rng.normal(size=(n, k))
    if kind == "binary":
        return rng.integers(0, 2, size=(n, k)).astype(np.float64)
    if kind == "onehot":
        return np.eye(k)[rng.integers(0, k, size=n)]
    return rng.poisson(1.5, size=(n, k)).astype(np.float64)


@pytest.mark.parametrize("weights", ["none", "random", "with-zeros"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_weighted_loss_value_and_gradient(backend, case, weights):
    name, cls, fused, in_kind, t_kind, rows = case
    be = get_backend(backend)
    rng = np.random.default_rng(7)
    n, k = 6, 3
    a, t = _inputs(in_kind, rng, n, k), _targets(t_kind, rng, n, k)
    w = {"none": None, "random": rng.uniform(0.1, 3.0, n),
         "with-zeros": np.array([0.0, 2.0, 1.0, 0.0, 4.0, 0.5])}[weights]
    loss = cls().bind(be.xp)
    forward = loss.forward_logits if fused else loss.forward
    wd = None if w is None else be.asarray(w, "float64")
    value = float(forward(be.asarray(a, "float64"), be.asarray(t, "float64"), w=wd))
    delta = to_numpy(loss.backward_logits() if fused else loss.backward())

    def reference(v):
        return weighted(rows(v, t), w)

    np.testing.assert_allclose(value, reference(a), rtol=1e-12, atol=1e-14, err_msg=name)
    np.testing.assert_allclose(delta, central_diff(reference, a.copy()), rtol=RTOL, atol=ATOL,
                               err_msg=name)


# ------------------------------------------------------------------ the flat objective
def _net(backend, loss, k, weight_decay, seed=0):
    head = {"categorical_crossentropy": [xpnn.Softmax()], "binary_crossentropy": [xpnn.Sigmoid()]}
    model = xpnn.Sequential(xpnn.Dense(4, 5, weight_decay=weight_decay), xpnn.Tanh(),
                            xpnn.Dense(5, k, weight_decay=weight_decay), *head.get(loss, []),
                            backend=backend, dtype="float64", seed=seed)
    return model.compile(loss=loss, optimizer="sgd")


FLAT_CASES = [("mse", 2, "real"), ("poisson", 1, "counts"),
              ("categorical_crossentropy", 3, "labels"), ("binary_crossentropy", 2, "binary")]


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("case", FLAT_CASES, ids=[c[0] for c in FLAT_CASES])
def test_flat_objective_gradient(backend, case, sparse):
    loss, k, kind = case
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(3)
    n = 7
    X = rng.normal(size=(n, 4)) * (rng.uniform(size=(n, 4)) < 0.6)
    y = (rng.integers(0, k, size=n) if kind == "labels" else
         _targets("counts" if kind == "counts" else kind, rng, n, k))
    w = rng.uniform(0.2, 2.0, n)
    model = _net(backend, loss, k, weight_decay=0.3)
    be = model.backend
    if sparse and be.family != "numpy":      # SciPy matrices are host data
        with pytest.raises(TypeError, match="sparse X needs the numpy backend"):
            FlatObjective(model, sp.csr_matrix(X), prepare_y(model, y, n))
        return
    Xd = sp.csr_matrix(X) if sparse else prepare_X(model, X)
    objective = FlatObjective(model, Xd, prepare_y(model, y, n), be.asarray(w, "float64"))
    theta = objective.get()
    assert theta.shape == (objective.size,) == (model.count_params(),)
    value, grad = objective(theta)

    def f(th):
        return objective(th)[0]

    np.testing.assert_allclose(grad, central_diff(f, theta.copy()), rtol=1e-5, atol=1e-8)
    # the value is the weighted loss of the model's predictions plus the layers' L2 penalty
    objective.set(theta)
    out = to_numpy(model.predict(X))
    penalty = 0.15 * sum(np.sum(W ** 2) for W in model.get_weights()[::2])
    if loss == "mse":
        rows = np.mean((out - y) ** 2, axis=1)
    elif loss == "poisson":
        rows = np.mean(np.exp(out) - y * out + xlogx(y) - y, axis=1)
    elif loss == "categorical_crossentropy":
        rows = -np.log(out[np.arange(n), y])
    else:
        rows = -np.mean(y * np.log(out) + (1 - y) * np.log(1 - out), axis=1)
    np.testing.assert_allclose(value, weighted(rows, w) + penalty, rtol=1e-10)


@pytest.mark.parametrize("fast", [True, False], ids=["fastpath", "generic"])
def test_fit_integer_weights_equal_repeated_rows(fast):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(12, 4)), rng.integers(0, 3, size=12)
    w = rng.integers(1, 4, size=12)

    def trained(Xf, yf, sw):
        model = _net("numpy", "categorical_crossentropy", 3, weight_decay=0.0, seed=5)
        model.fastpath = fast
        model.compile(loss="categorical_crossentropy", optimizer=xpnn.Adam(0.01))
        assert (xpnn.fastpath.select(model) is not None) is fast
        model.fit(Xf, yf, epochs=20, batch_size=len(yf), shuffle=False, verbose=0,
                  sample_weight=sw)
        return model.get_weights()

    weighted_fit = trained(X, y, w.astype(np.float64))
    repeated_fit = trained(np.repeat(X, w, axis=0), np.repeat(y, w), None)
    for a, b in zip(weighted_fit, repeated_fit, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_poisson_trains_on_the_fast_path_with_the_generic_numbers(weighted):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(96, 5))
    y = rng.poisson(np.exp(0.4 * X[:, :2])).astype(np.float64)
    w = rng.uniform(0.5, 2.0, 96) if weighted else None

    def trained(fast):
        model = xpnn.Sequential(xpnn.Dense(5, 8), xpnn.Tanh(), xpnn.Dense(8, 2),
                                dtype="float64", seed=2)
        model.fastpath = fast
        model.compile(loss="poisson", optimizer=xpnn.Adam(0.01))
        model.fit(X, y, epochs=4, batch_size=32, verbose=0, sample_weight=w)
        return model

    fast, generic = trained(True), trained(False)
    assert xpnn.fastpath.explain(fast) is None and fast._fastpath_trainer is not None
    for a, b in zip(fast.get_weights(), generic.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)

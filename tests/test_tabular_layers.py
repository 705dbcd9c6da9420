"""The layers of tabular models: Embedding, PeriodicEmbedding, Columns, LayerNorm, Scale,
ParametricActivation and the ensemble layers (EnsembleView, BatchEnsembleDense, EnsembleDense,
EnsembleMean).

Every layer: float64 finite-difference gradients on every backend, every backend equal to
NumPy, inside Sequential (fit/evaluate/predict), save/load and resume, ONNX equal to predict,
clear errors for bad input, the generic step (no fast path). Ensembles: the training loss is
the mean of the members' losses and predict averages the members' probabilities.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_gradients import central_diff  # tests/ is on sys.path under pytest

import xpnn
from xpnn import fastpath
from xpnn.backend import get_backend, to_numpy

RTOL, ATOL = 1e-6, 1e-8
K = 3                         # ensemble members in the tests


def numeric_param_grads(params, be, loss):
    """Central differences of ``loss()`` (a float) with respect to every parameter, by index."""
    out = {}
    for i, p in enumerate(params):
        original = p.data
        value = to_numpy(original).copy()

        def of_value(v, p=p):
            p.data = be.asarray(v, "float64")
            return loss()

        out[p.name if len({q.name for q in params}) == len(params) else i] = \
            central_diff(of_value, value)
        p.data = original
    return out


def codes(rng, n, cards):
    """Category codes, with some out of range (negative, too large, non-integer)."""
    cols = [rng.integers(-1, c + 2, size=n).astype(float) for c in cards]
    x = np.stack(cols, axis=1)
    x[0, 0] = 0.5
    return x


def numeric(rng, n, f):
    return rng.normal(size=(n, f))


#: name -> (layer factory, input width, rows, input maker, the input's code columns: no dL/dx)
SPECS = {
    "Embedding": (lambda: xpnn.Embedding([3, 1, 4], 2), 3, 7,
                  lambda rng, n, f: codes(rng, n, [3, 1, 4]), [0, 1, 2]),
    "PeriodicEmbedding-plr": (lambda: xpnn.PeriodicEmbedding(3, 4, 5, sigma=0.3), 3, 5,
                              numeric, []),
    "PeriodicEmbedding-plr-lite": (lambda: xpnn.PeriodicEmbedding(2, 3, 4, 0.3, lite=True),
                                   2, 5, numeric, []),
    "PeriodicEmbedding-pbld": (lambda: xpnn.PeriodicEmbedding(3, 4, 3, 0.3, "pbld"), 3, 5,
                               numeric, []),
    "PeriodicEmbedding-pbld-lite": (lambda: xpnn.PeriodicEmbedding(2, 5, 4, 0.3, "pbld",
                                                                   lite=True), 2, 4, numeric,
                                    []),
    "Columns": (lambda: xpnn.Columns([(2, xpnn.PeriodicEmbedding(2, 3, 4, 0.3, "pbld")),
                                      (1, None), (3, xpnn.LayerNorm(3)), (1, xpnn.Tanh())]),
                7, 5, numeric, []),
    "Columns-embedding": (lambda: xpnn.Columns([(1, None), (2, xpnn.Embedding([4, 2], 3)),
                                                (1, xpnn.Scale(1))]), 4, 6,
                          lambda rng, n, f: np.c_[rng.normal(size=n), codes(rng, n, [4, 2]),
                                               rng.normal(size=n)], [1, 2]),
    "LayerNorm": (lambda: xpnn.LayerNorm(4, eps=1e-3), 4, 5, numeric, []),
    "Scale": (lambda: xpnn.Scale(3), 3, 4, numeric, []),
    "ParametricActivation-selu": (lambda: xpnn.ParametricActivation(4, "selu"), 4, 5,
                                  numeric, []),
    "ParametricActivation-mish": (lambda: xpnn.ParametricActivation(4, "mish"), 4, 5,
                                  numeric, []),
    "ParametricActivation-relu": (lambda: xpnn.ParametricActivation(4, "relu"), 4, 5,
                                  numeric, []),
    "EnsembleView": (lambda: xpnn.EnsembleView(K), 3, 4, numeric, []),
    "BatchEnsembleDense": (lambda: xpnn.BatchEnsembleDense(4, 3, K, r_init="normal"), 4,
                           2 * K, numeric, []),
    "BatchEnsembleDense-nobias": (lambda: xpnn.BatchEnsembleDense(
        4, 2, K, r_init="random-signs", r_chunks=[1, 3], bias=False), 4, 2 * K, numeric, []),
    "EnsembleDense": (lambda: xpnn.EnsembleDense(4, 3, K), 4, 2 * K, numeric, []),
    "EnsembleScale": (lambda: xpnn.EnsembleScale(4, K, init="normal", chunks=[1, 3]), 4, 2 * K,
                      numeric, []),
    "EnsembleMean": (lambda: xpnn.EnsembleMean(K), 3, 2 * K, numeric, []),
}


def _run(backend, name, seed):
    """Forward (training) and backward of one layer on ``backend`` in float64, with
    ``L = Σ y ⊙ R``: (layer, x, R, y, dL/dx, {param: grad})."""
    make, n_in, n, inputs, _ = SPECS[name]
    be = get_backend(backend)
    rng = np.random.default_rng(seed)
    layer = make()
    layer.build(be, "float64", np.random.default_rng(seed + 1), n_in)
    x = inputs(rng, n, n_in)
    y = to_numpy(layer.forward(be.asarray(x, "float64"), training=True))
    R = rng.normal(size=y.shape)
    dx = layer.backward(be.asarray(R, "float64"))
    grads = {p.name: to_numpy(p.grad).copy() for p in layer.params}
    return layer, be, x, R, y, None if dx is None else to_numpy(dx), grads


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", list(SPECS))
def test_gradients_match_finite_differences(backend, name, seed):
    layer, be, x, R, _, dx, grads = _run(backend, name, seed)

    def loss(x_host):
        return float(np.sum(to_numpy(layer.forward(be.asarray(x_host, "float64"),
                                                   training=True)) * R))

    code_columns = SPECS[name][4]
    numeric_columns = [j for j in range(x.shape[1]) if j not in code_columns]
    # codes have no derivative: the layer says so with zeros when asked
    np.testing.assert_array_equal(dx[:, code_columns], 0.0)
    if numeric_columns:
        np.testing.assert_allclose(dx[:, numeric_columns],
                                   central_diff(loss, x.copy())[:, numeric_columns],
                                   rtol=RTOL, atol=ATOL, err_msg=f"{name}: dL/dx")
    numeric_grads = numeric_param_grads(layer.params, be, lambda: loss(x))
    assert len(grads) == len(numeric_grads)
    for key, numeric_grad in numeric_grads.items():
        np.testing.assert_allclose(grads[key], numeric_grad, rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name}: dL/d{key}")
        assert np.any(grads[key] != 0), f"{name}: dL/d{key} is all zero"


@pytest.mark.parametrize("name", list(SPECS))
def test_every_backend_equals_numpy(backend, name):
    if backend == "numpy":
        pytest.skip("the reference")
    _, _, _, _, y, dx, grads = _run(backend, name, 3)
    _, _, _, _, y0, dx0, grads0 = _run("numpy", name, 3)
    np.testing.assert_allclose(y, y0, rtol=1e-12, atol=1e-13)
    if dx0 is not None:
        np.testing.assert_allclose(dx, dx0, rtol=1e-12, atol=1e-13)
    for key, g0 in grads0.items():
        np.testing.assert_allclose(grads[key], g0, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", [n for n in SPECS if n != "EnsembleMean"])
def test_shapes_match_param_shapes_and_output_features(name):
    make, n_in, n, inputs, _ = SPECS[name]
    layer = make()
    layer.build(get_backend("numpy"), "float64", np.random.default_rng(0), n_in)
    assert [(p.name, p.shape) for p in layer.params] == [
        (nm.split(" of ")[0], s) for nm, s in layer.param_shapes(n_in)] or name.startswith(
        "Columns")
    assert [p.shape for p in layer.params] == [s for _, s in layer.param_shapes(n_in)]
    y = layer.forward(layer.backend.asarray(inputs(np.random.default_rng(1), n, n_in), "float64"))
    rows = n * K if name == "EnsembleView" else n
    assert tuple(y.shape) == (rows, layer.output_features(n_in))


# ------------------------------------------------------------------ layer semantics
def test_embedding_maps_every_invalid_code_to_the_unknown_row():
    layer = xpnn.Embedding([3, 2], 4)
    layer.build(get_backend("numpy"), "float64", np.random.default_rng(0), 2)
    T0, T1 = (to_numpy(t.data) for t in layer.tables)
    x = np.array([[0, 1], [2, 0], [-1, 2], [3, np.nan], [1.5, np.inf], [-np.inf, -0.0]])
    y = to_numpy(layer.forward(x))
    assert y.shape == (6, 8)
    expected0 = [T0[0], T0[2], T0[3], T0[3], T0[3], T0[3]]
    expected1 = [T1[1], T1[0], T1[2], T1[2], T1[2], T1[0]]
    np.testing.assert_array_equal(y[:, :4], np.array(expected0))
    np.testing.assert_array_equal(y[:, 4:], np.array(expected1))
    assert layer.tables[0].shape == (4, 4) and layer.tables[1].shape == (3, 4)


def test_embedding_gradient_adds_repeated_codes():
    layer = xpnn.Embedding([2], 1)
    layer.build(get_backend("numpy"), "float64", np.random.default_rng(0), 1)
    layer.forward(np.array([[1.0], [1.0], [0.0], [7.0]]), training=True)
    layer.input_grad_needed = False
    assert layer.backward(np.array([[1.0], [2.0], [4.0], [8.0]])) is None
    np.testing.assert_array_equal(to_numpy(layer.tables[0].grad), [[4.0], [3.0], [8.0]])


def test_periodic_embedding_layouts():
    """PLR: feature j in columns j·d..(j+1)·d-1; PBLD: embeddings of d-1 first, then x."""
    be = get_backend("numpy")
    x = np.random.default_rng(0).normal(size=(5, 3))
    plr = xpnn.PeriodicEmbedding(3, 4, 2, 0.5)
    plr.build(be, "float64", np.random.default_rng(1), 3)
    y = plr.forward(x)
    for j in range(3):
        z = 2 * np.pi * x[:, j:j + 1] * plr.c.data[j]
        v = np.concatenate([np.cos(z), np.sin(z)], axis=1)
        np.testing.assert_allclose(y[:, 2 * j:2 * j + 2],
                                   np.maximum(v @ plr.W.data[j] + plr.b.data[j], 0), rtol=1e-12)
    pbld = xpnn.PeriodicEmbedding(3, variant="pbld")
    assert (pbld.n_frequencies, pbld.dim, pbld.sigma) == (16, 4, 0.1)
    pbld.build(be, "float64", np.random.default_rng(1), 3)
    y = pbld.forward(x)
    assert y.shape == (5, 12)
    np.testing.assert_array_equal(y[:, 9:], x)
    v = np.cos(2 * np.pi * x[:, 1:2] * pbld.c.data[1] + pbld.phi.data[1])
    np.testing.assert_allclose(y[:, 3:6], v @ pbld.W.data[1] + pbld.b.data[1], rtol=1e-12)
    assert xpnn.PeriodicEmbedding(2).get_config() == {
        "n_features": 2, "n_frequencies": 48, "dim": 24, "sigma": 0.01, "variant": "plr"}


#: Layers that bound their outputs (xpnn.guard.outputs_bounded skips the forward pass over the
#: training data at the end of each epoch for a network of them).
BOUNDED = ["Embedding", "PeriodicEmbedding-plr", "PeriodicEmbedding-plr-lite",
           "PeriodicEmbedding-pbld", "PeriodicEmbedding-pbld-lite", "Columns-embedding", "Scale",
           "ParametricActivation-selu", "ParametricActivation-mish",
           "ParametricActivation-relu"]


@pytest.mark.parametrize("m", [0.5, 30.0])
@pytest.mark.parametrize("name", BOUNDED)
def test_output_bound_holds(name, m):
    """``output_bound(m)`` is finite and no input with ``|x| <= m`` gives a larger output."""
    make, n_in, _, inputs, _ = SPECS[name]
    layer = make()
    layer.build(get_backend("numpy"), "float64", np.random.default_rng(0), n_in)
    rng = np.random.default_rng(1)
    for p in layer.params:                   # away from the initial values (α = s = 1)
        p.data[...] = p.data * rng.uniform(-1.7, 1.7, size=p.shape)
    x = inputs(rng, 400, n_in)
    x = np.clip(x * m / 2, -m, m)
    x[:2] = [[m] * n_in, [-m] * n_in]
    y = layer.forward(x)
    bound = layer.output_bound(m)
    assert np.isfinite(bound)
    assert np.max(np.abs(y)) <= bound * (1 + 1e-12)


def test_tabular_network_outputs_are_bounded_without_data():
    """The regression recipe's network has a bound on its outputs, so ``fit`` runs no forward
    pass over the training data at the end of each epoch to check them."""
    model = xpnn.Sequential(
        xpnn.Columns([(2, xpnn.PeriodicEmbedding(2, variant="pbld")), (1, None),
                      (1, xpnn.Embedding([3], 2))]),
        xpnn.Scale(2 * 4 + 1 + 2), xpnn.Dense(11, 8), xpnn.ParametricActivation(8, "mish"),
        xpnn.Dropout(0.1), xpnn.Dense(8, 1), seed=0)
    model.build(4)
    assert xpnn.guard.outputs_bounded(model, 10.0)
    assert not xpnn.guard.outputs_bounded(model, 1e38)       # 2π x overflows float32


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["mish", "selu", "relu"])
def test_parametric_activation_far_from_zero(activation, dtype):
    """Finite and right far from 0 (Mish caps its exponential, SELU takes e^min(x, 0)):
    ``x + α (f(x) - x)`` and ``δ (1 + α (f'(x) - 1))`` against float64 references."""
    x = np.array([[-1e30, -100.0, -30.0, -20.5, -1e-3, 0.0, 1e-3, 20.5, 30.0, 100.0, 1e30]])
    n = x.shape[1]
    layer = xpnn.ParametricActivation(n, activation)
    layer.build(get_backend("numpy"), dtype, np.random.default_rng(0), n)
    alpha = np.linspace(0.2, 1.4, n)
    layer.alpha.data[...] = alpha
    with np.errstate(over="ignore"):
        softplus = np.logaddexp(0.0, x)
        sigma = 0.5 * (1.0 + np.tanh(x / 2))
    if activation == "mish":
        t = np.tanh(softplus)
        f, df = x * t, t + x * sigma * (1 - t * t)
    elif activation == "selu":
        e = np.exp(np.minimum(x, 0.0))
        f = np.where(x > 0, 1.0507009873554805 * x, 1.0507009873554805 * 1.6732632423543772
                     * (e - 1))
        df = np.where(x > 0, 1.0507009873554805, 1.0507009873554805 * 1.6732632423543772 * e)
    else:
        f, df = np.maximum(x, 0.0), (x > 0).astype(float)
    y = layer.forward(x.astype(dtype), training=True)
    dx = layer.backward(np.ones_like(x, dtype=dtype))
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, x + alpha * (f - x), **tol)
    np.testing.assert_allclose(dx, 1 + alpha * (df - 1), **tol)
    np.testing.assert_allclose(layer.alpha.grad, (f - x)[0], **tol)


def test_parametric_activation_inference_keeps_nothing(monkeypatch):
    """Inference computes ``f(x)`` only: no derivative, nothing kept for a backward pass (a
    training batch's state stays as it was)."""
    from xpnn.layers import parametric

    monkeypatch.setenv("XPNN_NUMBA", "0")     # the array passes (compiled: test_numba_kernels)
    calls = []
    gap, slope = parametric.FUNCTIONS["mish"]
    monkeypatch.setitem(parametric.FUNCTIONS, "mish",
                        (gap, lambda *a: calls.append(1) or slope(*a)))
    layer = xpnn.ParametricActivation(3, "mish")
    layer.build(get_backend("numpy"), "float64", np.random.default_rng(0), 3)
    rng = np.random.default_rng(1)
    x, other, delta = rng.normal(size=(4, 3)), rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    layer.forward(other)
    assert layer.cache is None and calls == []
    layer.forward(x, training=True)
    kept = layer.cache
    layer.forward(other)
    assert layer.cache is kept and calls == []
    dx = layer.backward(delta)
    assert calls == [1] and dx.shape == (4, 3)


def test_layer_norm_matches_its_definition():
    be = get_backend("numpy")
    x = np.random.default_rng(0).normal(size=(4, 6)) * 3 + 1
    ln = xpnn.LayerNorm(6)
    ln.build(be, "float64", np.random.default_rng(0), 6)
    ln.gamma.data[...] = np.arange(6)
    ln.beta.data[...] = 0.5
    mu, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    np.testing.assert_allclose(ln.forward(x), (x - mu) / np.sqrt(var + 1e-5) * np.arange(6)
                               + 0.5, rtol=1e-12)


def test_batch_ensemble_dense_is_k_dense_layers_with_one_product(monkeypatch):
    be = get_backend("numpy")
    rng = np.random.default_rng(0)
    layer = xpnn.BatchEnsembleDense(4, 3, K, r_init="random-signs")
    layer.build(be, "float64", np.random.default_rng(1), 4)
    r = layer.r.data
    assert set(np.unique(r)) == {-1.0, 1.0} and np.all(layer.s.data == 1)
    np.testing.assert_array_equal(layer.b.data, np.broadcast_to(layer.b.data[0], (K, 3)))
    x = rng.normal(size=(2 * K, 4))
    y = layer.forward(x)
    for n in range(2):
        for i in range(K):
            row = x[n * K + i]
            np.testing.assert_allclose(y[n * K + i], ((row * r[i]) @ layer.W.data)
                                       * layer.s.data[i] + layer.b.data[i], rtol=1e-12)
    chunked = xpnn.BatchEnsembleDense(5, 2, K, r_init="normal", r_chunks=[2, 3])
    chunked.build(be, "float64", np.random.default_rng(2), 5)
    assert np.all(chunked.r.data[:, 0] == chunked.r.data[:, 1])
    assert np.all(chunked.r.data[:, 2:] == chunked.r.data[:, 2:3])


def test_ensemble_view_repeats_sample_major_and_ensemble_dense_is_per_member():
    be = get_backend("numpy")
    view = xpnn.EnsembleView(K)
    view.build(be, "float64", None, 2)
    x = np.arange(4.0).reshape(2, 2)
    np.testing.assert_array_equal(view.forward(x), np.repeat(x, K, axis=0))
    head = xpnn.EnsembleDense(2, 3, K)
    head.build(be, "float64", np.random.default_rng(0), 2)
    y = head.forward(np.repeat(x, K, axis=0))
    for i in range(K):
        np.testing.assert_allclose(y[i::K], x @ head.W.data[i] + head.b.data[i], rtol=1e-12)
    assert not np.allclose(head.W.data[0], head.W.data[1])


# ------------------------------------------------------------------ inside Sequential
def table(n=60, seed=0, dtype="float32"):
    """Numeric columns, then two categorical code columns (some unseen/negative codes)."""
    rng = np.random.default_rng(seed)
    num = rng.normal(size=(n, 3))
    cat = np.c_[rng.integers(-1, 4, size=n), rng.integers(0, 6, size=n)].astype(float)
    y = ((num[:, 0] + (cat[:, 0] == 1) - 0.5 * num[:, 1] ** 2) > 0).astype(int) + \
        (cat[:, 1] > 3).astype(int)
    return np.c_[num, cat].astype(dtype), y


def mini_model(dtype="float32", k=K):
    """TabM-mini: EnsembleScale in front of Dense layers shared by the members."""
    front = xpnn.Columns([(3, xpnn.PeriodicEmbedding(3, 4, 2, 0.5, lite=True)),
                          (2, xpnn.Embedding([3, 5], 2))])
    return xpnn.Sequential(front, xpnn.EnsembleView(k), xpnn.EnsembleScale(10, k, chunks=[2] * 5),
                           xpnn.Dense(10, 8), xpnn.ReLU(), xpnn.Dropout(0.1),
                           xpnn.EnsembleDense(8, 3, k), xpnn.Softmax(), xpnn.EnsembleMean(k),
                           dtype=dtype, seed=0)


def test_tabm_mini_trains_saves_and_exports(tmp_path):
    X, y = table(dtype="float64")
    model = mini_model("float64")
    r = to_numpy(model.layers[2].r.data)
    assert set(np.unique(r)) == {-1.0, 1.0}
    np.testing.assert_array_equal(r[:, 0::2], r[:, 1::2])   # one draw per chunk of 2
    model.compile("crossentropy", xpnn.Adam(0.01), metrics=["accuracy"])
    hist = model.fit(X, y, epochs=5, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(to_numpy(xpnn.load(tmp_path / "m.npz").predict(X)),
                                  to_numpy(model.predict(X)))
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    session = ort.InferenceSession(str(model.export(tmp_path / "m.onnx")),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": X})[0], to_numpy(model.predict(X)),
                               rtol=1e-11, atol=1e-12)


def tabular_model(backend="numpy", dtype="float32", k=K, head="softmax", seed=0,
                  dropout=0.1, activations=("selu",)):
    """Columns (PBLD, pass-through, PLR-lite, Embedding) -> Scale -> a TabM-style ensemble."""
    front = xpnn.Columns([(1, xpnn.PeriodicEmbedding(1, 4, 3, 0.5, "pbld")), (1, None),
                          (1, xpnn.PeriodicEmbedding(1, 3, 2, 0.5, lite=True)),
                          (2, xpnn.Embedding([3, 5], 2))])
    width = front.output_features(5)
    layers = [front, xpnn.Scale(width), xpnn.EnsembleView(k),
              xpnn.BatchEnsembleDense(width, 8, k, r_init="random-signs",
                                      r_chunks=[3, 1, 2, 2, 2]),      # one sign per feature
              xpnn.LayerNorm(8),
              *[xpnn.ParametricActivation(8, a) for a in activations], xpnn.Dropout(dropout),
              xpnn.BatchEnsembleDense(8, 8, k), xpnn.ReLU()]
    if head == "softmax":
        layers += [xpnn.EnsembleDense(8, 3, k), xpnn.Softmax()]
    elif head == "sigmoid":
        layers += [xpnn.EnsembleDense(8, 1, k), xpnn.Sigmoid()]
    else:
        layers += [xpnn.EnsembleDense(8, 1, k)]
    return xpnn.Sequential(*layers, xpnn.EnsembleMean(k), backend=backend, dtype=dtype,
                           seed=seed)


def test_sequential_fit_evaluate_predict_and_generic_path(backend):
    X, y = table()
    model = tabular_model(backend)
    model.compile("crossentropy", xpnn.Adam(0.01), metrics=["accuracy"])
    assert fastpath.select(model) is None
    assert "no fast path" in fastpath.explain(model)
    hist = model.fit(X, y, epochs=8, batch_size=16, validation_split=0.2, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    p = to_numpy(model.predict(X))
    assert p.shape == (60, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    result = model.evaluate(X, y)
    assert set(result) == {"loss", "accuracy"} and 0 <= result["accuracy"] <= 1


def test_backends_train_alike(backend):
    if backend == "numpy":
        pytest.skip("the reference")
    X, y = table(dtype="float64")
    weights = []
    for be in ("numpy", backend):
        model = tabular_model(be, "float64")
        model.compile("crossentropy", xpnn.Adam(0.01))
        model.fit(X, y, epochs=2, batch_size=16, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    before = to_numpy(model.predict(X))
    moved = model.to("numpy")                   # Sequential.to moves nested layers too
    assert all(layer.backend.name == "numpy" for layer in moved.layers[0].layers if layer)
    np.testing.assert_allclose(to_numpy(moved.predict(X)), before, rtol=1e-12)
    moved.fit(X, y, epochs=1, batch_size=16, verbose=0)


@pytest.mark.parametrize("head", ["softmax", "sigmoid", "linear"])
def test_ensemble_loss_is_the_mean_of_member_losses_and_predict_averages(head):
    """Training loss = mean over the k members of each member's loss (weights repeated);
    predict = mean of the members' outputs (probabilities after the output activation)."""
    X, y = table(dtype="float64")
    t = y if head == "softmax" else (y > 0).astype(float)
    model = tabular_model(dtype="float64", head=head, dropout=0.0)
    model.compile("crossentropy" if head != "linear" else "mse", xpnn.SGD(0.1))
    w = np.random.default_rng(5).uniform(0.5, 2.0, size=len(X))
    body = model.layers[:-1]
    out = X
    for layer in body:                            # member outputs, (N·k, C)
        out = layer.forward(out, training=True)
    members = to_numpy(out).reshape(len(X), K, -1)
    per_member = []
    for i in range(K):
        p = members[:, i]
        if head == "softmax":
            rows = -np.log(p[np.arange(len(X)), t])
        elif head == "sigmoid":
            rows = -(t * np.log(p[:, 0]) + (1 - t) * np.log(1 - p[:, 0]))
        else:
            rows = (p[:, 0] - t) ** 2
        per_member.append(np.sum(rows * w) / np.sum(w))
    np.testing.assert_allclose(to_numpy(model.predict(X)), members.mean(axis=1), rtol=1e-12)
    # evaluate: the loss of the averaged prediction, the one predict gives
    mean_p = members.mean(axis=1)
    if head == "softmax":
        want = np.mean(-np.log(mean_p[np.arange(len(X)), t]))
    elif head == "sigmoid":
        want = np.mean(-(t * np.log(mean_p[:, 0]) + (1 - t) * np.log(1 - mean_p[:, 0])))
    else:
        want = np.mean((mean_p[:, 0] - t) ** 2)
    np.testing.assert_allclose(model.evaluate(X, t)["loss"], want, rtol=1e-10)
    loss = model.train_on_batch(X, t, sample_weight=w)           # the loss before the step
    np.testing.assert_allclose(loss, np.mean(per_member), rtol=1e-10)


def test_member_batches_give_each_member_every_sample_once_per_epoch():
    X = np.arange(10.0)[:, None] * np.ones((1, 2))
    batches = xpnn.MemberBatches(X, np.arange(10), K, batch_size=4, seed=0)
    assert len(batches) == 3
    epoch = list(batches)
    assert [len(x) for x, _ in epoch] == [4 * K, 4 * K, 2 * K]
    for i in range(K):                       # member i: rows i, i+k, ... of every batch
        seen = np.concatenate([t[i::K] for _, t in epoch])
        assert sorted(seen) == list(range(10))
        np.testing.assert_array_equal(np.concatenate([x[i::K, 0] for x, _ in epoch]), seen)
    first = [t for _, t in epoch]
    assert any(not np.array_equal(a, b) for a, b in zip(first, [t for _, t in batches],
                                                        strict=True))   # a new order per pass
    w = np.linspace(1, 2, 10)
    x, t, wb = next(iter(xpnn.MemberBatches(X, np.arange(10), K, 4, seed=1, sample_weight=w)))
    np.testing.assert_array_equal(wb, w[t])


def test_members_with_their_own_batches():
    """EnsembleView(shared_batches=False): in training the rows are the members' own samples
    (targets as given, not repeated): the loss is the mean over all rows of each member's
    loss on its sample; predict still averages the members."""
    X, y = table(n=12, dtype="float64")
    model = tabular_model(dtype="float64", dropout=0.0)
    model.layers[2] = xpnn.EnsembleView(K, shared_batches=False)
    model = xpnn.Sequential.from_config(model.get_config(), weights=model.get_weights())
    assert model.layers[2].get_config() == {"k": K, "shared_batches": False}
    model.compile("crossentropy", xpnn.SGD(0.1), metrics=["accuracy"])
    x, t = next(iter(xpnn.MemberBatches(X, y, K, batch_size=4, seed=0)))
    out = x
    for layer in model.layers[:-1]:
        out = layer.forward(out, training=True)
    p = to_numpy(out)
    want = np.mean(-np.log(p[np.arange(len(t)), t]))
    np.testing.assert_allclose(model.train_on_batch(x, t), want, rtol=1e-10)
    assert to_numpy(model.predict(X)).shape == (12, 3)
    hist = model.fit(xpnn.MemberBatches(X, y, K, batch_size=4, seed=0), epochs=3, verbose=0,
                     validation_data=(X, y))
    assert len(hist.history["val_loss"]) == 3
    with pytest.raises(ValueError, match="multiple of 3"):
        model.train_on_batch(X[:4], y[:4])


def test_whole_ensemble_model_gradients_match_finite_differences():
    """The gradients the training step leaves (fused Softmax + CCE over the N·k member rows,
    targets repeated) against central differences of that step's loss."""
    X, y = table(n=8, dtype="float64")
    model = tabular_model(dtype="float64", dropout=0.0)
    model.compile("crossentropy", xpnn.SGD(0.1))
    be = model.backend
    Xd, yd = be.asarray(X, "float64"), be.asarray(y, "int64")
    model._backprop(Xd, yd)
    grads = [to_numpy(p.grad).copy() for p in model.params]
    numeric_grads = numeric_param_grads(model.params, be,
                                        lambda: float(model._backprop(Xd, yd)[0]))
    for i, analytic in enumerate(grads):
        np.testing.assert_allclose(analytic, numeric_grads[i], rtol=1e-6, atol=1e-8,
                                   err_msg=model.params[i].name)


def test_save_load_and_resume(tmp_path):
    X, y = table()
    model = tabular_model()
    model.compile("crossentropy", xpnn.Adam(0.01), metrics=["accuracy"])
    model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = xpnn.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(to_numpy(loaded.predict(X)), to_numpy(model.predict(X)))
    assert loaded.get_config() == model.get_config()
    for m in (model, loaded):
        m.fit(X, y, epochs=1, batch_size=16, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    rebuilt = xpnn.Sequential.from_config(model.get_config(), weights=model.get_weights())
    np.testing.assert_array_equal(to_numpy(rebuilt.predict(X)), to_numpy(model.predict(X)))
    import pickle
    np.testing.assert_array_equal(to_numpy(pickle.loads(pickle.dumps(model)).predict(X)),
                                  to_numpy(model.predict(X)))


def test_from_config_refuses_bad_nested_layer_configs():
    model = tabular_model()
    config = model.get_config()
    config["layers"][0]["config"]["blocks"][2][1] = {"class": "Nope", "config": {}}
    with pytest.raises(ValueError, match="unknown layer class"):
        xpnn.Sequential.from_config(config)
    config["layers"][0]["config"]["blocks"][2][1] = {"class": "Embedding",
                                                    "config": {"cardinalities": [3, -2], "dim": 2}}
    with pytest.raises(ValueError, match="cardinalities"):
        xpnn.Sequential.from_config(config)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("head", ["softmax", "sigmoid", "linear"])
def test_onnx_equals_predict(tmp_path, dtype, head):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    X, y = table(dtype=dtype)
    model = tabular_model(dtype=dtype, head=head, activations=("selu", "mish", "relu"))
    model.compile("crossentropy" if head != "linear" else "mse", xpnn.Adam(0.01))
    model.fit(X, y if head == "softmax" else (y > 0).astype(float), epochs=2, batch_size=16,
              verbose=0)
    X[0, 3], X[1, 4] = -1, 17            # unseen codes at predict time
    for opset in (17, 18):
        path = model.export(tmp_path / f"m{opset}.onnx", opset=opset)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for rows in (X[:1], X):
            got = session.run(None, {"x": rows})[0]
            tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-11,
                                                                             atol=1e-12)
            np.testing.assert_allclose(got, to_numpy(model.predict(rows)), **tol)


def test_export_error_names_the_layer(tmp_path):
    pytest.importorskip("onnx")

    class Odd(xpnn.Identity):
        pass

    model = xpnn.Sequential(xpnn.Columns([(2, Odd()), (1, None)]), xpnn.Dense(3, 1), seed=0)
    with pytest.raises(ValueError, match="Odd"):
        model.export(tmp_path / "m.onnx")


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name", [n for n in SPECS if not n.startswith("Ensemble")])
def test_bad_width_and_dtype_name_the_layer(name):
    make, n_in, n, inputs, _ = SPECS[name]
    layer = make()
    be = get_backend("numpy")
    layer.build(be, "float64", np.random.default_rng(0), n_in)
    kind = type(layer).__name__
    with pytest.raises(ValueError, match=kind):
        layer.forward(np.zeros((n, n_in + 1)))
    with pytest.raises(TypeError, match=f"{kind}.*float64"):
        layer.forward(np.zeros((n, n_in), dtype=np.float32))


def test_bad_constructor_arguments_name_the_layer():
    for make, match in [
        (lambda: xpnn.Embedding([], 2), "Embedding"),
        (lambda: xpnn.Embedding([3, 0], 2), "Embedding: cardinalities"),
        (lambda: xpnn.Embedding(3, 2), "Embedding"),
        (lambda: xpnn.PeriodicEmbedding(2, variant="xyz"), "PeriodicEmbedding: variant"),
        (lambda: xpnn.PeriodicEmbedding(2, dim=1, variant="pbld"), "PeriodicEmbedding: dim"),
        (lambda: xpnn.Columns([(2, xpnn.Scale(3))]), "Columns: block 0"),
        (lambda: xpnn.Columns([(0, None)]), "Columns"),
        (lambda: xpnn.Columns([]), "Columns"),
        (lambda: xpnn.LayerNorm(3, eps=0), "LayerNorm: eps"),
        (lambda: xpnn.ParametricActivation(3, "gelu"), "ParametricActivation"),
        (lambda: xpnn.BatchEnsembleDense(3, 2, 0), "BatchEnsembleDense: k"),
        (lambda: xpnn.BatchEnsembleDense(3, 2, 2, r_init="normal", r_chunks=[1, 1]),
         "BatchEnsembleDense: r_chunks"),
        (lambda: xpnn.EnsembleMean(0), "EnsembleMean"),
        (lambda: xpnn.EnsembleScale(3, 2, chunks=[1, 1]), "EnsembleScale: chunks"),
        (lambda: xpnn.EnsembleScale(3, 2, init="zeros"), "EnsembleScale: init"),
    ]:
        with pytest.raises(ValueError, match=match):
            make()


def test_ensemble_rows_must_be_a_multiple_of_k():
    layer = xpnn.BatchEnsembleDense(2, 2, 3)
    layer.build(get_backend("numpy"), "float64", np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match="BatchEnsembleDense.*multiple of 3"):
        layer.forward(np.zeros((4, 2)))


@pytest.mark.parametrize("layers, match", [
    ([xpnn.BatchEnsembleDense(2, 2, 3), xpnn.EnsembleMean(3)], "needs an EnsembleView"),
    ([xpnn.EnsembleView(3), xpnn.BatchEnsembleDense(2, 2, 4)], "has 4 members but layer 0"),
    ([xpnn.EnsembleView(3), xpnn.EnsembleView(3)], "repeats the rows again"),
    ([xpnn.EnsembleView(2), xpnn.EnsembleMean(2), xpnn.Dense(2, 1)], "must be the last"),
])
def test_ensemble_layers_must_fit_together(layers, match):
    model = xpnn.Sequential(*layers)
    with pytest.raises(ValueError, match=match):
        model.compile("mse", "adam")


def test_model_input_of_the_wrong_width_names_the_first_layer():
    X, y = table()
    model = tabular_model()
    model.compile("crossentropy", "adam")
    with pytest.raises(ValueError, match="Columns"):
        model.fit(X[:, :4], y, verbose=0)

"""ONNX export: onnxruntime's outputs equal predict's for every layer, head and dtype, batch
sizes 1 and many; scikit-learn estimators export too."""

from __future__ import annotations

import json

import numpy as np
import pytest

import xpnn
from xpnn.backend import to_numpy

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}
HIDDEN = {"relu": xpnn.ReLU, "leaky_relu": lambda: xpnn.LeakyReLU(0.2), "tanh": xpnn.Tanh,
          "sigmoid": xpnn.Sigmoid, "identity": xpnn.Identity}
HEADS = {"softmax": xpnn.Softmax, "sigmoid": xpnn.Sigmoid, "linear": None}


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check(model, path, n_features, dtype, batches=(1, 33)):
    path = model.export(path)
    session = _session(path)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("x", "y")
    assert inp.shape == ["batch", n_features]
    assert inp.type == ("tensor(float)" if dtype == "float32" else "tensor(double)")
    rng = np.random.default_rng(1)
    for n in batches:
        X = rng.normal(scale=2.0, size=(n, n_features)).astype(dtype)
        got = session.run(None, {"x": X})[0]
        want = to_numpy(model.predict(X))
        assert got.dtype == want.dtype == np.dtype(dtype)
        assert got.shape == want.shape == (n, model.n_outputs)
        np.testing.assert_allclose(got, want, **TOL[dtype])
    return session


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("hidden", list(HIDDEN))
def test_every_activation_head_and_dtype(tmp_path, hidden, head, dtype):
    layers = [xpnn.Dropout(0.1), xpnn.Dense(5, 8), HIDDEN[hidden](), xpnn.Dropout(0.3),
              xpnn.Dense(8, 6, bias=False), HIDDEN[hidden](), xpnn.Dense(6, 3)]
    if HEADS[head] is not None:
        layers.append(HEADS[head]())
    model = xpnn.Sequential(*layers, dtype=dtype, seed=0)
    _check(model, tmp_path / "m.onnx", 5, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trained_model_on_every_backend(tmp_path, backend, dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    model = xpnn.mlp([None, 16, 2], activation="tanh", dropout=0.2, backend=backend,
                     dtype=dtype, seed=0)
    model.compile("crossentropy", "adam")
    model.fit(X, y, epochs=3, batch_size=16, verbose=0)
    _check(model, tmp_path / "m.onnx", 4, dtype)


def test_graph_is_plain_and_carries_the_config(tmp_path):
    model = xpnn.mlp([4, 8, 3], activation="leaky_relu", dropout=0.5, input_dropout=0.2, seed=0)
    path = model.export(tmp_path / "m.onnx", format="onnx")
    proto = onnx.load(path)
    assert [n.op_type for n in proto.graph.node] == ["MatMul", "Add", "PRelu", "MatMul", "Add",
                                                     "Softmax"]
    assert proto.opset_import[0].version == 17 and proto.producer_name == "xpnn"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["xpnn_config"]) == model.get_config()
    onnx.checker.check_model(proto, full_check=True)
    newer = onnx.load(model.export(tmp_path / "m18.onnx", opset=18))
    assert newer.opset_import[0].version == 18


def test_only_identity_layers(tmp_path):
    model = xpnn.Sequential(xpnn.Dense(3, 3), xpnn.Identity(), seed=0)
    _check(model, tmp_path / "a.onnx", 3, "float32")
    passthrough = xpnn.Sequential(xpnn.Dropout(0.5), xpnn.Identity())
    passthrough.build(3)
    session = _session(passthrough.export(tmp_path / "b.onnx"))
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(session.run(None, {"x": X})[0], X)


def test_export_errors(tmp_path):
    unbuilt = xpnn.Sequential(xpnn.Dense(None, 2))
    with pytest.raises(ValueError, match="no weights yet"):
        unbuilt.export(tmp_path / "u.onnx")
    model = xpnn.mlp([3, 2], output=None, seed=0)
    with pytest.raises(ValueError, match="format must be one of"):
        model.export(tmp_path / "m.tflite", format="tflite")
    with pytest.raises(ValueError, match="opset must be an int >= 17"):
        model.export(tmp_path / "m.onnx", opset=13)

    class Square(xpnn.Layer):
        def forward(self, x, training=False):
            return x * x

    odd = xpnn.Sequential(xpnn.Dense(3, 2), Square(), seed=0)
    with pytest.raises(ValueError, match=r"layer 1 \(Square\(\)\) has no ONNX form"):
        odd.export(tmp_path / "odd.onnx")
    assert not (tmp_path / "odd.onnx").exists()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_estimators_export(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris

    from xpnn.sklearn import MLPClassifier, MLPRegressor

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    for labels, column in ((y, slice(None)), (y == 1, 1)):   # multi-class, then binary
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(X, labels)
        session = _session(clf.export(tmp_path / "clf.onnx"))
        got = session.run(None, {"x": X})[0]
        np.testing.assert_allclose(got, clf.predict_proba(X)[:, column].reshape(got.shape),
                                   rtol=1e-5, atol=1e-6)
    reg = MLPRegressor(hidden_layer_sizes=(8,), activation="tanh", max_iter=20,
                       random_state=0).fit(X[:, :3], X[:, 3])
    session = _session(reg.export(tmp_path / "reg.onnx"))
    got = session.run(None, {"x": X[:1, :3]})[0]
    np.testing.assert_allclose(got.ravel(), reg.predict(X[:1, :3]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("offset", [0.0, -1.0])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rescaling_exports_as_mul_and_add(tmp_path, dtype, offset):
    model = xpnn.Sequential(xpnn.Rescaling(1 / 127.5, offset=offset), xpnn.Dense(5, 8),
                            xpnn.ReLU(), xpnn.Dense(8, 3), xpnn.Softmax(), dtype=dtype, seed=0)
    _check(model, tmp_path / "m.onnx", 5, dtype)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops[:2] == (["Mul", "Add"] if offset else ["Mul", "MatMul"])

"""xpnn.mlp: the layers it builds, its checks, and that the result trains."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn


def _kinds(model):
    return [type(layer).__name__ for layer in model.layers]


def test_layers_in_order():
    m = xpnn.mlp([784, 256, 128, 10], dropout=0.2, input_dropout=0.1, seed=0)
    assert _kinds(m) == ["Dropout", "Dense", "ReLU", "Dropout", "Dense", "ReLU", "Dropout",
                         "Dense", "Softmax"]
    assert [layer.p for layer in m.layers if isinstance(layer, xpnn.Dropout)] == [0.1, 0.2, 0.2]
    dense = [layer for layer in m.layers if isinstance(layer, xpnn.Dense)]
    assert [(d.in_features, d.out_features) for d in dense] == [(784, 256), (256, 128),
                                                                 (128, 10)]
    assert {d.init for d in dense} == {"he"}
    assert m.count_params() == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10


def test_rescale_comes_first():
    m = xpnn.mlp([784, 10], rescale=1 / 255, input_dropout=0.2)
    assert _kinds(m) == ["Rescaling", "Dropout", "Dense", "Softmax"]
    assert m.layers[0].scale == 1 / 255


@pytest.mark.parametrize("activation, output, kinds, init", [
    ("tanh", "sigmoid", ["Dense", "Tanh", "Dense", "Sigmoid"], "glorot"),
    ("sigmoid", None, ["Dense", "Sigmoid", "Dense"], "glorot"),
    ("leaky_relu", "linear", ["Dense", "LeakyReLU", "Dense"], "he"),
    (xpnn.Tanh, xpnn.Softmax, ["Dense", "Tanh", "Dense", "Softmax"], "glorot"),
    (lambda: xpnn.LeakyReLU(0.3), "identity", ["Dense", "LeakyReLU", "Dense"], "he"),
])
def test_activations_heads_and_default_init(activation, output, kinds, init):
    m = xpnn.mlp([3, 5, 2], activation=activation, output=output)
    assert _kinds(m) == kinds
    assert {layer.init for layer in m.layers if isinstance(layer, xpnn.Dense)} == {init}


def test_sequential_kwargs_and_same_weights_as_by_hand():
    m = xpnn.mlp([4, 6, 3], dtype="float64", seed=7)
    hand = xpnn.Sequential(xpnn.Dense(4, 6), xpnn.ReLU(), xpnn.Dense(6, 3), xpnn.Softmax(),
                           dtype="float64", seed=7)
    assert m.dtype == "float64" and m.seed == 7
    for a, b in zip(m.get_weights(), hand.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_open_input_width_and_training():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    m = xpnn.mlp([None, 16, 16, 2], activation="tanh", seed=0)
    assert not m.built
    m.compile("crossentropy", xpnn.Adam(0.02), ["accuracy"])
    m.fit(X, y, epochs=60, batch_size=32, verbose=0)
    assert m.n_features_in == 2
    assert m.evaluate(X, y)["accuracy"] > 0.9


@pytest.mark.parametrize("kwargs, error, message", [
    ({"sizes": [10]}, ValueError, "input and output widths"),
    ({"sizes": [10, 0, 2]}, ValueError, r"sizes\[1\] must be a positive int"),
    ({"sizes": [10, None]}, ValueError, r"sizes\[1\] must be a positive int"),
    ({"sizes": 10}, TypeError, "sizes must be a list"),
    ({"sizes": [3, 2], "activation": "gelu"}, ValueError, "unknown activation 'gelu'"),
    ({"sizes": [3, 2], "output": xpnn.Softmax()}, TypeError, "not an instance"),
    ({"sizes": [3, 2], "dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\)"),
    ({"sizes": [3, 2], "input_dropout": -0.1}, ValueError, "input_dropout must be in"),
    ({"sizes": [3, 2], "backend": "jax"}, ValueError, "jax"),
    ({"sizes": [3, 2], "rescale": float("inf")}, ValueError, "scale"),
])
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        xpnn.mlp(**kwargs)

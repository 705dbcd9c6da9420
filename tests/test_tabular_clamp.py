"""The realmlp recipe's outputs: predictions clamped to the training targets' range (RealMLP's
``clamp_output``), per output; the plain recipe leaves them as the network gives them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from xpnn.sklearn import TabularRegressor  # noqa: E402

SMALL = {"hidden_layer_sizes": (16,), "max_iter": 8, "random_state": 0}


def _line(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    return X, 3.0 * X[:, 0] + 0.1 * rng.normal(size=n)


def _shift_output(reg, by):
    """Add ``by`` (standardised units) to the output layer's bias of every network."""
    for model in reg.models_:
        weights = model.get_weights()
        weights[-1] = weights[-1] + by
        model.set_weights(weights)


def test_predictions_are_clamped_to_the_training_targets_range():
    X, y = _line()
    reg = TabularRegressor(**SMALL).fit(X, y)
    low, high = reg.output_range_
    assert (low, high) == (y.min(), y.max())
    inside = reg.predict(X)
    assert np.all((inside >= low) & (inside <= high))
    network = reg._forward(X)[:, 0] * reg.y_scale_ + reg.y_mean_     # what the networks say
    np.testing.assert_array_equal(inside, np.clip(network, low, high))
    _shift_output(reg, 10.0)                       # every network output far above the range
    np.testing.assert_array_equal(reg.predict(X), high)
    _shift_output(reg, -20.0)
    np.testing.assert_array_equal(reg.predict(X), low)
    plain = TabularRegressor(recipe="plain", **SMALL).fit(X, y)
    assert plain.output_range_ is None
    _shift_output(plain, 10.0)
    assert np.all(plain.predict(X) > high)


def test_several_outputs_are_clamped_each_to_its_range():
    X, y = _line()
    Y = np.stack([y, -10.0 * y], axis=1)
    reg = TabularRegressor(**SMALL).fit(X, Y)
    _shift_output(reg, np.array([10.0, -10.0]))
    np.testing.assert_array_equal(reg.predict(X[:3]), [[y.max(), -10 * y.max()]] * 3)

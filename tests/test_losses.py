"""Losses of xpnn.losses on their own (their gradients: test_gradients.py and, with sample
weights, test_poisson_flat.py)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn.backend import get_backend
from xpnn.losses import Poisson


def test_unit_weights_are_the_unweighted_loss(backend):
    be = get_backend(backend)
    rng = np.random.default_rng(0)
    z, t = rng.normal(size=(5, 2)), rng.poisson(2.0, size=(5, 2)).astype(np.float64)
    loss = Poisson().bind(be.xp)
    plain = float(loss.forward(be.asarray(z, "float64"), be.asarray(t, "float64")))
    ones = float(loss.forward(be.asarray(z, "float64"), be.asarray(t, "float64"),
                              w=be.asarray(np.full(5, 3.0), "float64")))
    np.testing.assert_allclose(ones, plain, rtol=1e-14)


def test_poisson_is_zero_at_a_perfect_fit_and_checks_targets():
    loss = Poisson().bind(get_backend("numpy").xp)
    t = np.array([[0.0], [1.0], [4.0]])
    z = np.log(np.where(t > 0, t, 1e-300))
    assert abs(float(loss.forward(z, t))) < 1e-12
    with pytest.raises(ValueError, match="poisson: targets must be >= 0"):
        loss.prepare_targets(np.array([1.0, -1.0]), 1)
    assert isinstance(xpnn.losses.get_loss("poisson"), Poisson)

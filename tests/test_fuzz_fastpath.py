"""Property-based check that the fast path and the generic path train the same model the same
way: random small architectures, optimizers, batch sizes and data, extreme values included
(numbers near the dtype's limit, exact zeros, tiny values). Either both paths finish with the
same losses and weights, or both stop with the same TrainingDivergedError and keep the same
finite weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xpnn
from xpnn import (
    SGD,
    Adam,
    AdamW,
    Dense,
    Dropout,
    Identity,
    LeakyReLU,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    fastpath,
)

FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True)

ACTS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid, "leaky": lambda: LeakyReLU(0.1),
        "leaky0": lambda: LeakyReLU(0.0), "identity": Identity, "none": None}
OPTS = {"adam": lambda: Adam(0.05), "adamw": lambda: AdamW(0.05, weight_decay=0.1),
        "adam_l2": lambda: Adam(0.05, weight_decay=0.01), "sgd": lambda: SGD(0.1),
        "nesterov": lambda: SGD(0.05, momentum=0.9, nesterov=True),
        "momentum": lambda: SGD(0.05, momentum=0.5, weight_decay=0.01)}
HEADS = ("softmax", "sigmoid", "mse")

hidden_layer = st.tuples(st.integers(1, 5), st.sampled_from(sorted(ACTS)), st.booleans(),
                         st.sampled_from([0.0, 0.0, 0.3]), st.sampled_from([0.0, 0.01]))


@st.composite
def cases(draw):
    dtype = draw(st.sampled_from(["float64", "float32"]))
    limit = float(np.finfo(dtype).max)
    n = draw(st.integers(1, 12))
    d = draw(st.integers(1, 4))
    special = st.sampled_from([0.0, -0.0, 1e-30, -1e-30, 1e6, -1e6, limit / 8, -limit / 8,
                               limit / 2, -limit / 2, limit, -limit])
    value = st.one_of(st.floats(-3.0, 3.0), special)
    X = np.array(draw(st.lists(value, min_size=n * d, max_size=n * d))).reshape(n, d)
    return {
        "dtype": dtype, "X": X,
        "hidden": draw(st.lists(hidden_layer, max_size=2)),
        "input_dropout": draw(st.sampled_from([0.0, 0.0, 0.2])),
        "head": draw(st.sampled_from(HEADS)),
        "k": draw(st.integers(2, 4)),
        "opt": draw(st.sampled_from(sorted(OPTS))),
        "batch_size": draw(st.integers(1, n)),
        "epochs": draw(st.integers(1, 3)),
        "shuffle": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def _build(case, fast):
    layers, width = [], case["X"].shape[1]
    if case["input_dropout"]:
        layers.append(Dropout(case["input_dropout"]))
    for units, act, bias, p, decay in case["hidden"]:
        layers.append(Dense(width, units, bias=bias, weight_decay=decay))
        if ACTS[act] is not None:
            layers.append(ACTS[act]())
        if p:
            layers.append(Dropout(p))
        width = units
    head, k = case["head"], case["k"]
    out = 1 if head == "sigmoid" else k
    layers.append(Dense(width, out))
    if head != "mse":
        layers.append(Softmax() if head == "softmax" else Sigmoid())
    model = Sequential(*layers, dtype=case["dtype"], seed=case["seed"])
    model.fastpath = fast
    loss = "mse" if head == "mse" else "crossentropy"
    model.compile(loss=loss, optimizer=OPTS[case["opt"]](),
                  metrics=["accuracy"] if head != "mse" else [])
    return model


def _targets(case):
    rng = np.random.default_rng(case["seed"])
    n = case["X"].shape[0]
    if case["head"] == "softmax":
        return rng.integers(0, case["k"], n)
    if case["head"] == "sigmoid":
        return rng.integers(0, 2, n).astype(float)
    return rng.normal(size=(n, case["k"]))


def _run(case, fast):
    model = _build(case, fast)
    if "first_W" in case:
        weights = model.get_weights()
        weights[0][...] = case["first_W"]
        model.set_weights(weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # overflow is part of the point
        try:
            history = model.fit(case["X"], _targets(case), epochs=case["epochs"],
                                batch_size=case["batch_size"], shuffle=case["shuffle"],
                                verbose=0)
            outcome = history.history
        except xpnn.TrainingDivergedError as exc:
            outcome = str(exc)
    return model, outcome


def _close(a, b, dtype):
    rtol = 1e-9 if dtype == "float64" else 2e-4
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, float(np.max(np.abs(a), initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@FUZZ
@given(case=cases())
def test_fast_and_generic_paths_agree(case):
    generic, got_generic = _run(case, fast=False)
    fast, got_fast = _run(case, fast=True)
    assert getattr(generic, "_fastpath_trainer", None) is None
    assert getattr(fast, "_fastpath_trainer", None) is not None, fastpath.explain(fast)
    if isinstance(got_generic, str) or isinstance(got_fast, str):
        assert got_fast == got_generic            # the same divergence, same epoch and batch
    else:
        assert got_fast.keys() == got_generic.keys()
        for key in got_generic:
            _close(got_fast[key], got_generic[key], case["dtype"])
    for wf, wg in zip(fast.get_weights(), generic.get_weights(), strict=True):
        _close(wf, wg, case["dtype"])
    assert fast.optimizer.iterations == generic.optimizer.iterations


def test_fuzz_strategy_reaches_extreme_values():
    """Guard against a vacuous fuzz test: the examples it runs include inputs at the dtype's
    limit, and runs that finish as well as runs that diverge."""
    seen = set()

    @FUZZ
    @given(case=cases())
    def probe(case):
        if np.max(np.abs(case["X"])) >= float(np.finfo(case["dtype"]).max) / 8:
            seen.add("huge")
        seen.add("diverged" if isinstance(_run(case, fast=False)[1], str) else "finished")

    probe()
    assert seen == {"huge", "diverged", "finished"}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ["relu", "leaky", "leaky0", "tanh"])
@pytest.mark.parametrize("first_W", [2.0, None])
def test_extreme_inputs_both_paths(dtype, act, first_W):
    """Fixed cases with inputs at the dtype's limit, so that pre-activations overflow to
    ±inf. With a positive first weight matrix the first row's are all -inf: a ReLU turns them
    into 0 and training goes on with finite numbers on both paths (``-inf · 0`` would be
    NaN). Whatever happens, both paths agree."""
    limit = float(np.finfo(dtype).max)
    X = np.array([[-limit, -limit], [1.0, 2.0], [-3.0, 0.5], [0.5, -limit / 4]])
    case = {"dtype": dtype, "X": X, "hidden": [(6, act, True, 0.0, 0.0)],
            "input_dropout": 0.0, "head": "softmax", "k": 3, "opt": "sgd", "batch_size": 3,
            "epochs": 2, "shuffle": False, "seed": 3}
    if first_W is not None:
        case["first_W"] = first_W
    test_fast_and_generic_paths_agree.hypothesis.inner_test(case)
    if act in ("relu", "leaky0") and first_W is not None:
        _, outcome = _run(case, fast=False)
        assert isinstance(outcome, dict), outcome          # finished, all finite
        assert np.all(np.isfinite(outcome["loss"]))

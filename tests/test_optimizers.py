"""Optimizers against their published update rules (written out here in NumPy) and against
``torch.optim`` on the same sequence of gradients, in float64, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpnn
from xpnn.backend import get_backend, to_numpy
from xpnn.layers import Parameter

TOL = dict(rtol=1e-12, atol=1e-12)
SHAPES = [(3, 2), (2,)]
N_STEPS = 7


# ------------------------------------------------------------------ reference update rules
def ref_sgd(w, grads, lrs, momentum=0.0, nesterov=False, weight_decay=0.0):
    """SGD with momentum (Sutskever et al., 2013), dampening 0, as documented by torch.optim."""
    w, buf = w.copy(), None
    for g, lr in zip(grads, lrs, strict=True):
        g = g + weight_decay * w
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        w = w - lr * g
    return w


def ref_rmsprop(w, grads, lrs, rho=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
    """RMSprop (Tieleman & Hinton, 2012): divide by a running RMS of the gradients."""
    w, s, buf = w.copy(), np.zeros_like(w), np.zeros_like(w)
    for g, lr in zip(grads, lrs, strict=True):
        g = g + weight_decay * w
        s = rho * s + (1 - rho) * g**2
        step = g / (np.sqrt(s) + eps)
        if momentum:
            buf = momentum * buf + step
            step = buf
        w = w - lr * step
    return w


def ref_adam(w, grads, lrs, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
             decoupled=False):
    """Adam (Kingma & Ba, 2015, Algorithm 1) with bias-corrected moments; ``decoupled`` gives
    AdamW (Loshchilov & Hutter, 2019): the decay shrinks the weights instead of the gradient."""
    w, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        if decoupled:
            w = w * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * w
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


# (id, xpnn factory, reference, reference kwargs, torch factory)
CASES = [
    ("sgd", lambda: xpnn.SGD(0.1), ref_sgd, {},
     lambda torch, p: torch.optim.SGD(p, lr=0.1)),
    ("sgd-momentum", lambda: xpnn.SGD(0.1, momentum=0.9), ref_sgd, {"momentum": 0.9},
     lambda torch, p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    ("sgd-nesterov", lambda: xpnn.SGD(0.05, momentum=0.8, nesterov=True), ref_sgd,
     {"momentum": 0.8, "nesterov": True},
     lambda torch, p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    ("sgd-weight-decay", lambda: xpnn.SGD(0.1, weight_decay=0.05), ref_sgd,
     {"weight_decay": 0.05},
     lambda torch, p: torch.optim.SGD(p, lr=0.1, weight_decay=0.05)),
    ("sgd-momentum-weight-decay", lambda: xpnn.SGD(0.1, momentum=0.5, weight_decay=0.1),
     ref_sgd, {"momentum": 0.5, "weight_decay": 0.1},
     lambda torch, p: torch.optim.SGD(p, lr=0.1, momentum=0.5, weight_decay=0.1)),
    ("rmsprop", lambda: xpnn.RMSprop(0.01), ref_rmsprop, {},
     lambda torch, p: torch.optim.RMSprop(p, lr=0.01)),
    ("rmsprop-rho", lambda: xpnn.RMSprop(0.02, rho=0.9, eps=1e-6), ref_rmsprop,
     {"rho": 0.9, "eps": 1e-6},
     lambda torch, p: torch.optim.RMSprop(p, lr=0.02, alpha=0.9, eps=1e-6)),
    ("rmsprop-momentum", lambda: xpnn.RMSprop(0.01, momentum=0.9), ref_rmsprop,
     {"momentum": 0.9},
     lambda torch, p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9)),
    ("rmsprop-weight-decay", lambda: xpnn.RMSprop(0.01, momentum=0.5, weight_decay=0.1),
     ref_rmsprop, {"momentum": 0.5, "weight_decay": 0.1},
     lambda torch, p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, weight_decay=0.1)),
    ("adam", lambda: xpnn.Adam(0.01), ref_adam, {},
     lambda torch, p: torch.optim.Adam(p, lr=0.01)),
    ("adam-betas", lambda: xpnn.Adam(0.05, beta1=0.8, beta2=0.9, eps=1e-4), ref_adam,
     {"beta1": 0.8, "beta2": 0.9, "eps": 1e-4},
     lambda torch, p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.9), eps=1e-4)),
    ("adam-weight-decay", lambda: xpnn.Adam(0.01, weight_decay=0.1), ref_adam,
     {"weight_decay": 0.1},
     lambda torch, p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    ("adamw", lambda: xpnn.AdamW(0.01), ref_adam, {"weight_decay": 0.01, "decoupled": True},
     lambda torch, p: torch.optim.AdamW(p, lr=0.01)),
    ("adamw-weight-decay", lambda: xpnn.AdamW(0.01, weight_decay=0.3), ref_adam,
     {"weight_decay": 0.3, "decoupled": True},
     lambda torch, p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.3)),
]
IDS = [c[0] for c in CASES]


def problem(seed=0):
    """Initial weights of a few parameters and a sequence of gradients for each."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=s) for s in SHAPES]
    grads = [[rng.normal(scale=rng.uniform(0.1, 3.0), size=s) for _ in range(N_STEPS)]
             for s in SHAPES]
    return weights, grads


def run_xpnn(optimizer, backend, weights, grads, lrs):
    be = get_backend(backend)
    params = [Parameter("W", be.asarray(w.copy(), "float64")) for w in weights]  # own copy
    identities = [p.data for p in params]
    for step, lr in enumerate(lrs):
        optimizer.lr = lr
        for p, g in zip(params, grads, strict=True):
            p.grad = be.asarray(g[step], "float64")
        optimizer.step(params)
    assert all(p.data is a for p, a in zip(params, identities, strict=True)), \
        "updates must be in place"
    assert optimizer.iterations == len(lrs)
    return [to_numpy(p.data) for p in params]


def run_torch(torch, factory, weights, grads, lrs):
    params = [torch.nn.Parameter(torch.tensor(w, dtype=torch.float64)) for w in weights]
    opt = factory(torch, params)
    for step, lr in enumerate(lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.tensor(g[step], dtype=torch.float64)
        opt.step()
    return [p.detach().numpy() for p in params]


def schedules(opt):
    """Constant lr, and lr cut by 10x after three steps."""
    lr = opt.lr
    return {"constant": [lr] * N_STEPS,
            "changed": [lr] * 3 + [lr / 10] * (N_STEPS - 3)}


@pytest.mark.parametrize("schedule", ["constant", "changed"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_published_formula(backend, case, schedule):
    _, make, reference, kwargs, _ = case
    weights, grads = problem()
    opt = make()
    lrs = schedules(opt)[schedule]
    got = run_xpnn(opt, backend, weights, grads, lrs)
    for w, g, out in zip(weights, grads, got, strict=True):
        np.testing.assert_allclose(out, reference(w, g, lrs, **kwargs), **TOL)
        assert not np.allclose(out, w)                   # the weights did move


@pytest.mark.parametrize("schedule", ["constant", "changed"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_torch_optim(backend, case, schedule):
    torch = pytest.importorskip("torch")
    _, make, _, _, torch_factory = case
    weights, grads = problem(seed=1)
    opt = make()
    lrs = schedules(opt)[schedule]
    got = run_xpnn(opt, backend, weights, grads, lrs)
    expected = run_torch(torch, torch_factory, weights, grads, lrs)
    for out, exp in zip(got, expected, strict=True):
        np.testing.assert_allclose(out, exp, **TOL)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_learning_rate_change_takes_effect(case):
    _, make, _, _, _ = case
    weights, grads = problem()
    opt = make()
    lrs = schedules(opt)
    constant = run_xpnn(make(), "numpy", weights, grads, lrs["constant"])
    changed = run_xpnn(opt, "numpy", weights, grads, lrs["changed"])
    assert not np.allclose(constant[0], changed[0], rtol=1e-9, atol=0)


def test_reset_forgets_state(backend):
    weights, grads = problem()
    opt = xpnn.Adam(0.01)
    run_xpnn(opt, backend, weights, grads, [0.01] * N_STEPS)
    assert opt.state and opt.iterations == N_STEPS
    opt.reset()
    assert opt.state == [] and opt.iterations == 0
    fresh = run_xpnn(opt, backend, weights, grads, [0.01] * N_STEPS)
    np.testing.assert_allclose(fresh[0], ref_adam(weights[0], grads[0], [0.01] * N_STEPS),
                               **TOL)


def test_lr_scheduler_callback_changes_lr_in_fit():
    seen = []

    class Spy(xpnn.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.optimizer.lr)

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(8, 2)), rng.normal(size=8)
    model = xpnn.Sequential(xpnn.Dense(2, 1), dtype="float64", seed=0)
    model.compile(loss="mse", optimizer=xpnn.SGD(0.1))
    scheduler = xpnn.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5**epoch)
    model.fit(X, y, epochs=3, batch_size=8, callbacks=[scheduler, Spy()], verbose=0)
    assert seen == [0.1, 0.05, 0.025]

    # the same three full-batch steps by hand: W ← W - lr · dL/dW
    ref = xpnn.Sequential(xpnn.Dense(2, 1), dtype="float64", seed=0)
    W, b = ref.get_weights()
    for lr in seen:
        err = X @ W + b - y[:, None]
        W, b = W - lr * 2 * X.T @ err / 8, b - lr * 2 * err.sum(axis=0) / 8
    got_W, got_b = model.get_weights()
    np.testing.assert_allclose(got_W, W, **TOL)
    np.testing.assert_allclose(got_b, b, **TOL)


@pytest.mark.parametrize("name, cls", [("sgd", xpnn.SGD), ("rmsprop", xpnn.RMSprop),
                                       ("adam", xpnn.Adam), ("adamw", xpnn.AdamW),
                                       ("Adam", xpnn.Adam)])
def test_optimizer_names(name, cls):
    model = xpnn.Sequential(xpnn.Dense(2, 1))
    model.compile(loss="mse", optimizer=name)
    assert type(model.optimizer) is cls
    model.compile(loss="mse", optimizer=cls)
    assert type(model.optimizer) is cls


def test_default_hyperparameters_match_torch():
    torch = pytest.importorskip("torch")
    p = [torch.nn.Parameter(torch.zeros(1))]
    pairs = [
        (xpnn.SGD(), torch.optim.SGD(p, lr=0.01), {"momentum": "momentum",
                                                   "weight_decay": "weight_decay"}),
        (xpnn.RMSprop(), torch.optim.RMSprop(p), {"lr": "lr", "rho": "alpha", "eps": "eps"}),
        (xpnn.Adam(), torch.optim.Adam(p), {"lr": "lr", "eps": "eps",
                                            "weight_decay": "weight_decay"}),
        (xpnn.AdamW(), torch.optim.AdamW(p), {"lr": "lr", "eps": "eps",
                                              "weight_decay": "weight_decay"}),
    ]
    for ours, theirs, names in pairs:
        for mine, torch_name in names.items():
            assert math.isclose(getattr(ours, mine), theirs.defaults[torch_name]), (ours, mine)
    for ours, theirs in ((xpnn.Adam(), torch.optim.Adam(p)),
                         (xpnn.AdamW(), torch.optim.AdamW(p))):
        assert (ours.beta1, ours.beta2) == tuple(theirs.defaults["betas"])


# ------------------------------------------------------------------ state declarations
DECLARED = [
    (lambda: xpnn.SGD(0.1), set()),
    (lambda: xpnn.SGD(0.1, momentum=0.9), {"momentum_buffer"}),
    (lambda: xpnn.RMSprop(), {"square_avg"}),
    (lambda: xpnn.RMSprop(momentum=0.5), {"square_avg", "momentum_buffer"}),
    (lambda: xpnn.Adam(), {"exp_avg", "exp_avg_sq", "step"}),
    (lambda: xpnn.AdamW(), {"exp_avg", "exp_avg_sq", "step"}),
]


@pytest.mark.parametrize("make,keys", DECLARED)
def test_the_state_an_optimizer_keeps_is_what_it_declares(make, keys):
    """After a step every parameter's state holds exactly the declared entries in use, each
    buffer shaped like its parameter; ``step`` counts the steps."""
    opt = make()
    spec = type(opt).STATE
    assert set(spec.in_use(opt)) | ({"step"} if spec.counts_steps else set()) == keys
    assert keys <= spec.keys
    be = get_backend("numpy")
    rng = np.random.default_rng(0)
    params = [Parameter("w", be.asarray(rng.normal(size=s), "float64")) for s in SHAPES]
    for step in (1, 2):
        for p in params:
            p.grad = be.asarray(rng.normal(size=p.shape), "float64")
        opt.step(params)
        for p, state in zip(params, opt.state, strict=True):
            assert set(state) == keys
            for name in spec.in_use(opt):
                assert state[name].shape == p.shape
            for name in spec.nonnegative:
                if name in state:
                    assert np.all(to_numpy(state[name]) >= 0)
            if spec.counts_steps:
                assert state["step"] == step


# ------------------------------------------------------------------ per-parameter factors
FACTORS = [(0.1, 0.0), (6.0, 2.5)]     # (lr_factor, wd_factor) of the two parameters


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parameter_factors_scale_lr_and_weight_decay(backend, case):
    """A parameter with ``lr_factor``/``wd_factor`` follows the published rule with
    ``lr · lr_factor`` and ``weight_decay · wd_factor`` (as a torch.optim parameter group with
    those values), and the optimizer's own hyperparameters are left as they were."""
    _, make, reference, kwargs, torch_factory = case
    weights, grads = problem(seed=2)
    opt = make()
    lrs = schedules(opt)["changed"]
    be = get_backend(backend)
    params = [Parameter("W", be.asarray(w.copy(), "float64")) for w in weights]
    for p, (lr_f, wd_f) in zip(params, FACTORS, strict=True):
        p.lr_factor, p.wd_factor = lr_f, wd_f
    decay = getattr(opt, "weight_decay", 0.0)
    for step, lr in enumerate(lrs):
        opt.lr = lr
        for p, g in zip(params, grads, strict=True):
            p.grad = be.asarray(g[step], "float64")
        opt.step(params)
        assert opt.lr == lr and getattr(opt, "weight_decay", 0.0) == decay
    got = [to_numpy(p.data) for p in params]
    for w, g, out, (lr_f, wd_f) in zip(weights, grads, got, FACTORS, strict=True):
        kw = dict(kwargs)
        if "weight_decay" in kw:
            kw["weight_decay"] = kw["weight_decay"] * wd_f
        np.testing.assert_allclose(out, reference(w, g, [lr * lr_f for lr in lrs], **kw), **TOL)
    torch = pytest.importorskip("torch")
    tp = [torch.nn.Parameter(torch.tensor(w, dtype=torch.float64)) for w in weights]
    topt = torch_factory(torch, tp)
    base = dict(topt.param_groups[0])
    del base["params"]
    topt.param_groups = []
    for p, (_, wd_f) in zip(tp, FACTORS, strict=True):
        topt.add_param_group({**base, "params": [p], "weight_decay": base["weight_decay"] * wd_f})
    for step, lr in enumerate(lrs):
        for group, (lr_f, _) in zip(topt.param_groups, FACTORS, strict=True):
            group["lr"] = lr * lr_f
        for p, g in zip(tp, grads, strict=True):
            p.grad = torch.tensor(g[step], dtype=torch.float64)
        topt.step()
    for out, exp in zip(got, tp, strict=True):
        np.testing.assert_allclose(out, exp.detach().numpy(), **TOL)


def test_parameter_factors_in_fit_on_the_fast_path():
    """NumPy's fast trainer takes a model whose parameters carry factors (as parameter groups
    of its fused update) and honours them: a bias with ``lr_factor=0`` never moves."""
    from xpnn import fastpath

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 3)), rng.normal(size=32)
    model = xpnn.Sequential(xpnn.Dense(3, 4), xpnn.ReLU(), xpnn.Dense(4, 1), dtype="float64",
                            seed=0)
    model.compile(loss="mse", optimizer=xpnn.AdamW(0.01))
    assert fastpath.explain(model) is None
    model.layers[0].params[1].lr_factor = 0.0
    assert fastpath.explain(model) is None
    assert fastpath.select(model) is not None
    b0 = model.get_weights()[1]
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.get_weights()[1], b0)
    assert not np.allclose(model.get_weights()[0], xpnn.Sequential(
        xpnn.Dense(3, 4), xpnn.ReLU(), xpnn.Dense(4, 1), dtype="float64", seed=0).get_weights()[0])


def test_parameter_factors_are_saved_loaded_and_pickled(tmp_path):
    """Model files and pickles keep every parameter's factors, so a resumed run trains as the
    uninterrupted one; files without factors (all 1) are written as before."""
    import pickle

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 3)), rng.normal(size=32)

    def model():
        m = xpnn.Sequential(xpnn.Dense(3, 4), xpnn.ReLU(), xpnn.Dense(4, 1), dtype="float64",
                            seed=0)
        m.compile(loss="mse", optimizer=xpnn.AdamW(0.01, weight_decay=0.1))
        return m

    plain = model()
    plain.save(tmp_path / "plain.npz")
    config = xpnn.serialization.read(tmp_path / "plain.npz").config
    assert "param_factors" not in config["training"]
    straight, first = model(), model()
    for m in (straight, first):
        m.params[0].lr_factor, m.params[0].wd_factor = 0.5, 3.0
        m.params[1].lr_factor, m.params[1].wd_factor = 0.1, 0.0
    straight.fit(X, y, epochs=4, batch_size=8, verbose=0, shuffle=False)
    first.fit(X, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    first.save(tmp_path / "half.npz")
    for resumed in (xpnn.load(tmp_path / "half.npz"), pickle.loads(pickle.dumps(first))):
        assert [(p.lr_factor, p.wd_factor) for p in resumed.params] == \
            [(0.5, 3.0), (0.1, 0.0), (1.0, 1.0), (1.0, 1.0)]
        resumed.fit(X, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
        for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ small parameters together
@pytest.mark.parametrize("make", [lambda: xpnn.Adam(0.01, weight_decay=0.05),
                                  lambda: xpnn.AdamW(0.01, weight_decay=0.05)],
                         ids=["adam", "adamw"])
def test_small_parameters_updated_together_give_the_same_numbers(make, monkeypatch):
    """Adam updates small NumPy parameters that share factors and step count as one flat
    array: bit for bit the numbers of one update per parameter, with the state dicts holding
    views of the flat moments; a pickle, a restored snapshot and a loaded state (dicts with
    other arrays) carry on with the same numbers."""
    import pickle

    from xpnn.optimizers.base import Optimizer

    monkeypatch.setenv("XPNN_NUMBA", "0")      # the array passes (the kernel: test_numba_kernels)
    rng = np.random.default_rng(4)
    shapes = [(3, 4), (4,), (5000,), (2, 3, 2), (7,)]
    factors = [(1.0, 1.0), (0.1, 0.0), (0.1, 0.0), (0.1, 0.0), (1.0, 1.0)]
    init = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[(rng.normal(size=s) * 10.0 ** rng.uniform(-4, 1)).astype("float32")
              for s in shapes] for _ in range(12)]

    def run(one_by_one):
        params = [Parameter(f"p{i}", w.copy()) for i, w in enumerate(init)]
        for p, (lr_f, wd_f) in zip(params, factors, strict=True):
            p.lr_factor, p.wd_factor = lr_f, wd_f
        opt = make()
        for t, gs in enumerate(grads):
            for p, g in zip(params, gs, strict=True):
                p.grad = g
            if one_by_one:
                Optimizer.step(opt, params)
            else:
                opt.step(params)
            if t == 3 and not one_by_one:
                opt = pickle.loads(pickle.dumps(opt))
            if t == 6 and not one_by_one:
                opt.state = [{k: v.copy() if hasattr(v, "copy") else v for k, v in s.items()}
                             for s in opt.state]
        return params, opt

    together, opt = run(False)
    alone, reference = run(True)
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    for s, r in zip(opt.state, reference.state, strict=True):
        assert s["step"] == r["step"] == len(grads)
        np.testing.assert_array_equal(s["exp_avg"], r["exp_avg"])
        np.testing.assert_array_equal(s["exp_avg_sq"], r["exp_avg_sq"])
    owner = [(s["exp_avg"].base, s["exp_avg_sq"].base) for s in opt.state]
    for a, b in ((1, 3), (0, 4)):                             # one flat array per group
        assert owner[a][0] is owner[b][0] is not None and owner[a][1] is owner[b][1]
    assert owner[0][0] is not owner[1][0]
    assert owner[2] == (None, None)                          # large: alone

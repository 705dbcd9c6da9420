"""xpnn.sklearn: scikit-learn's MLPClassifier / MLPRegressor API on xpnn's Sequential.

* scikit-learn's own estimator checks (``parametrize_with_checks``, sample-weight and sparse
  checks included); scikit-learn's own MLP test module runs in test_sklearn_upstream.py;
* L-BFGS, sample weights, the Poisson loss, sparse input and the parameter dtype give
  scikit-learn's numbers;
* use in Pipeline, GridSearchCV, cross_val_score; clone and pickle round trips;
* warm_start / partial_fit continue training; random_state reproduces a run;
* the same numbers as scikit-learn's MLP (same initial weights, same gradients) and as every
  other available backend.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import xpnn  # noqa: E402
from xpnn.backend import to_numpy  # noqa: E402
from xpnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# --------------------------------------------------------------------------- estimator checks
# Checks that cannot apply, with the reason; given to parametrize_with_checks as
# ``expected_failed_checks`` (non-strict: an unexpected pass shows as XPASS).
#
# In float32 (the dtype for float32 input, or dtype="float32") two checks ask for more precision
# than float32 has: they compare predictions of the same rows computed inside differently
# composed batches with rtol=1e-7, about one float32 ulp, and BLAS may round a row differently
# depending on where it sits in the batch (its micro-kernel tiles). They pass in float64, and
# usually in float32.
# scikit-learn itself skips ``check_array_api_input`` unless SCIPY_ARRAY_API=1 is set.
FLOAT32_ROUNDING = ("float32 rounding: predictions of a row may differ by ~1 ulp (1e-7) with its "
                    "position in the batch (BLAS tiling); the check's rtol is 1e-7")


SATURATED = ("L-BFGS fits the check's small multilabel problem until some sigmoid outputs are "
             "exactly 1.0 in float64 (scikit-learn's MLPClassifier(solver='lbfgs') fails it "
             "the same way); the check wants probabilities strictly below 1")
FLOAT32_SUMS = ("float32 rounding: weighted rows and repeated rows are summed in a different "
                "order; the probabilities differ by ~1 ulp (1e-7), the check's rtol is 1e-7")


def expected_failed_checks(estimator):
    if estimator.dtype == "float32":
        return {"check_methods_sample_order_invariance": FLOAT32_ROUNDING,
                "check_methods_subset_invariance": FLOAT32_ROUNDING,
                "check_sample_weight_equivalence_on_dense_data": FLOAT32_SUMS,
                "check_sample_weight_equivalence_on_sparse_data": FLOAT32_SUMS}
    if estimator.solver == "lbfgs" and isinstance(estimator, MLPClassifier):
        return {"check_classifiers_multilabel_output_format_predict_proba": SATURATED}
    return {}


CHECKED = [
    MLPClassifier(max_iter=100, random_state=0),
    MLPRegressor(max_iter=100, random_state=0),
    MLPClassifier(max_iter=100, random_state=0, dtype="float32"),
    MLPClassifier(solver="lbfgs", random_state=0),
    MLPRegressor(solver="lbfgs", hidden_layer_sizes=(20,), random_state=0),
    MLPClassifier(solver="sgd", learning_rate="adaptive", hidden_layer_sizes=(20, 10),
                  activation="tanh", max_iter=50, random_state=0, dtype="float64"),
    MLPRegressor(solver="sgd", hidden_layer_sizes=(), learning_rate_init=0.001, max_iter=200,
                 random_state=0, dtype="float64"),
]


@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------- data
def digits(n=600):
    X, y = load_digits(return_X_y=True)
    return X[:n], y[:n]


def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return StandardScaler().fit_transform(X), (y - y.mean()) / y.std()


def small_clf_data(seed=0, n=90):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5).astype(int)
    return X, y


# --------------------------------------------------------------------------- the sklearn ecosystem
def test_pipeline_gridsearch_cross_val_score():
    X, y = digits()
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,),
                                                         learning_rate_init=0.01,
                                                         max_iter=50, random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1],
                               "mlpclassifier__hidden_layer_sizes": [(16,), (32,)]}, cv=3)
    grid.fit(X, y)
    assert grid.best_score_ > 0.85          # scikit-learn's MLP: 0.87 with these settings
    assert set(grid.best_params_) == {"mlpclassifier__alpha",
                                      "mlpclassifier__hidden_layer_sizes"}
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85

    Xr, yr = diabetes()
    reg = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,),
                                                       learning_rate_init=0.01, max_iter=200,
                                                       random_state=0))
    assert cross_val_score(reg, Xr, yr, cv=3).mean() > 0.3


def test_clone_and_pickle_round_trip():
    X, y = small_clf_data()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0,
                        backend="numpy", dtype="float64")
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and not hasattr(twin, "classes_")
    clf.fit(X, y)
    assert not hasattr(clone(clf), "n_iter_")

    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert restored.loss_curve_ == clf.loss_curve_
    # The optimizer state and the shuffling generator survive: training continues identically.
    clf.partial_fit(X, y)
    restored.partial_fit(X, y)
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))

    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=20, random_state=0).fit(*diabetes())
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(diabetes()[0]),
                                  reg.predict(diabetes()[0]))


# --------------------------------------------------------------------------- continuing training
def test_warm_start_continues_training():
    X, y = small_clf_data()
    kw = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0, learning_rate_init=0.01)
    clf = MLPClassifier(warm_start=True, **kw).fit(X, y)
    weights = clf.coefs_
    first = list(clf.loss_curve_)
    clf.fit(X, y)
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 10
    assert clf.loss_curve_[:5] == first and clf.loss_curve_[-1] < first[-1]
    assert clf.t_ == 10 * len(X)
    # without warm_start, a second fit starts over from the same initial weights
    cold = MLPClassifier(**kw).fit(X, y).fit(X, y)
    assert len(cold.loss_curve_) == 5 and cold.loss_curve_ == first
    assert not np.allclose(clf.coefs_[0], weights[0])
    with pytest.raises(ValueError, match="warm_start can only be used"):
        clf.fit(X, np.where(y == 2, 1, y))


def test_partial_fit_continues_training():
    X, y = small_clf_data()
    clf = MLPClassifier(hidden_layer_sizes=(8,), random_state=0, learning_rate_init=0.01)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    losses = []
    for _ in range(20):
        clf.partial_fit(X, y, classes=[0, 1, 2])
        losses.append(clf.loss_)
        assert clf.n_iter_ == 1
    assert clf.t_ == 20 * len(X) and losses[-1] < losses[0] and clf.loss_curve_ == losses
    # A batch need not contain every class.
    clf.partial_fit(X[y == 0], y[y == 0])
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X, y + 5)
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])

    Xr, yr = diabetes()
    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0, learning_rate_init=0.01)
    for _ in range(10):
        reg.partial_fit(Xr, yr)
    assert reg.loss_curve_[-1] < reg.loss_curve_[0] and reg.n_iter_ == 1


def test_same_random_state_same_run():
    X, y = small_clf_data()
    make = lambda seed: MLPClassifier(hidden_layer_sizes=(8,), max_iter=15, random_state=seed,  # noqa: E731
                                      early_stopping=True, validation_fraction=0.2)
    a, b, c = make(3).fit(X, y), make(3).fit(X, y), make(4).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.loss_curve_ == b.loss_curve_ and a.validation_scores_ == b.validation_scores_
    assert a.loss_curve_ != c.loss_curve_
    rs = np.random.RandomState(0)
    assert make(rs).fit(X, y).loss_curve_ != make(rs).fit(X, y).loss_curve_


# --------------------------------------------------------------------------- semantics
@pytest.mark.parametrize("solver", ["sgd", "sgd-invscaling", "sgd-adaptive", "adam"])
@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression",
                                  "multioutput"])
def test_same_numbers_as_sklearn(task, solver):
    """Same initial weights, same gradients (alpha included), same updates as scikit-learn.

    float64, no shuffling and a batch size that divides the data: SGD agrees with scikit-learn
    to rounding; Adam differs only by where epsilon sits (xpnn follows torch.optim). loss_curve_
    differs by the L2 term being taken at the end of each epoch instead of every batch.
    """
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    y = {"multiclass": rng.integers(0, 3, 120),
         "binary": np.array(["no", "yes"])[rng.integers(0, 2, 120)],
         "multilabel": rng.integers(0, 2, (120, 3)),
         "regression": rng.normal(size=120),
         "multioutput": rng.normal(size=(120, 2))}[task]
    regression = task in ("regression", "multioutput")
    ours, theirs = (MLPRegressor, SkMLPRegressor) if regression else (MLPClassifier,
                                                                      SkMLPClassifier)
    solver, _, schedule = solver.partition("-")
    kw = dict(hidden_layer_sizes=(7, 4), activation="tanh", solver=solver, alpha=0.01,
              batch_size=40, shuffle=False, max_iter=10, random_state=1,
              learning_rate_init=0.01, learning_rate=schedule or "constant")
    if schedule == "adaptive":      # no epoch improves by tol: the rate drops every 3 epochs
        kw.update(tol=10.0, n_iter_no_change=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = theirs(**kw).fit(X, y)
        xp = ours(dtype="float64", **kw).fit(X, y)
    tol = 1e-12 if solver == "sgd" else 1e-4
    for a, b in zip(sk.coefs_ + sk.intercepts_, xp.coefs_ + xp.intercepts_, strict=True):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
    np.testing.assert_allclose(xp.loss_curve_, sk.loss_curve_, rtol=1e-4)
    for name in ("n_iter_", "t_", "n_outputs_", "n_layers_", "out_activation_"):
        assert getattr(xp, name) == getattr(sk, name), name
    if not regression:
        np.testing.assert_array_equal(xp.classes_, sk.classes_)
        np.testing.assert_allclose(xp.predict_proba(X), sk.predict_proba(X), atol=1e-4)


def test_convergence_and_early_stopping_as_sklearn():
    X, y = digits(400)
    X = StandardScaler().fit_transform(X)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(max_iter=3, random_state=0).fit(X, y)
    # scikit-learn stops when more than n_iter_no_change epochs in a row failed to improve
    # by tol (the first epoch always improves on best_loss_ = inf): 1 + 3 epochs here.
    clf = MLPClassifier(tol=1e9, n_iter_no_change=2, random_state=0).fit(X, y)
    assert clf.n_iter_ == 4 == SkMLPClassifier(tol=1e9, n_iter_no_change=2,
                                              random_state=0).fit(X, y).n_iter_
    es = MLPClassifier(early_stopping=True, n_iter_no_change=3, tol=1e-9, random_state=0,
                       max_iter=500).fit(X, y)
    assert es.best_loss_ is None and len(es.validation_scores_) == es.n_iter_ < 500
    assert es.best_validation_score_ == max(es.validation_scores_)
    sk = SkMLPClassifier(early_stopping=True, n_iter_no_change=3, tol=1e-9, random_state=0,
                         max_iter=500).fit(X, y)
    assert abs(es.best_validation_score_ - sk.best_validation_score_) < 0.05
    reg = MLPRegressor(early_stopping=True, random_state=0, max_iter=50).fit(*diabetes())
    assert -1 < reg.validation_scores_[-1] <= 1


def test_labels_features_and_outputs():
    import pandas as pd

    X, y = small_clf_data()
    names = np.array(["ant", "bee", "cat"])[y]
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=200,
                        random_state=0).fit(df, names)
    assert list(clf.classes_) == ["ant", "bee", "cat"] and clf.n_features_in_ == 5
    assert list(clf.feature_names_in_) == list(df.columns)
    pred = clf.predict(df)
    assert isinstance(pred, np.ndarray) and pred.dtype == names.dtype
    assert clf.score(df, names) > 0.8
    with pytest.warns(UserWarning, match="feature names"):    # as scikit-learn warns
        proba = clf.predict_proba(X.astype(np.float32))
    assert proba.dtype == np.float32 and proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert [w.shape for w in clf.coefs_] == [(5, 16), (16, 3)]
    assert all(isinstance(w, np.ndarray) for w in clf.coefs_ + clf.intercepts_)

    Y = np.stack([y == 0, y == 2, X[:, 3] > 0], axis=1).astype(int)    # multi-label
    ml = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, random_state=0).fit(X, Y)
    assert ml.predict(X).shape == Y.shape and ml.out_activation_ == "logistic"
    assert ml.predict_proba(X).shape == Y.shape

    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, learning_rate_init=0.01,
                       random_state=0).fit(X, np.stack([X[:, 0], X[:, 1] * 2], axis=1))
    assert reg.predict(X).shape == (len(X), 2) and reg.predict(X).dtype == np.float64


def test_clear_errors():
    X, y = small_clf_data()
    with pytest.raises(ValueError, match="solver must be 'adam', 'sgd' or 'lbfgs'"):
        MLPClassifier(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="max_fun"):
        MLPClassifier(solver="lbfgs", max_fun=0).fit(X, y)
    with pytest.raises(ValueError, match="activation"):
        MLPClassifier(activation="swish").fit(X, y)
    with pytest.raises(ValueError, match="'squared_error' or 'poisson'"):
        MLPRegressor(loss="huber").fit(X, y)
    with pytest.raises(ValueError, match="negative which is not allowed for Poisson"):
        MLPRegressor(loss="poisson").fit(X, X[:, 0])
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        MLPClassifier().fit(X, y, sample_weight=-np.ones(len(y)))
    with pytest.raises(ValueError, match="sample_weight contains NaN"):
        MLPClassifier().fit(X, y, sample_weight=np.full(len(y), np.nan))
    unfit = MLPClassifier(hidden_layer_sizes=(3,), warm_start=True)
    unfit.coefs_, unfit.intercepts_ = [np.zeros((5, 4)), np.zeros((4, 3))], [np.zeros(4)] * 2
    with pytest.raises(ValueError, match="coefs_ / intercepts_ set before fit"):
        unfit.fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(10, 0)).fit(X, y)
    with pytest.raises(ValueError, match="dtype"):
        MLPClassifier(dtype="float16").fit(X, y)
    with pytest.raises(ValueError, match="batch_size"):
        MLPClassifier(batch_size=0).fit(X, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier().fit(X, X[:, 0])


# --------------------------------------------------------------------------- backends
# ``backend`` is parametrized by conftest.py over every backend (unavailable ones skipped).
@pytest.mark.parametrize("estimator", ["classifier", "regressor"])
def test_backends_give_numpy_predictions(backend, estimator):
    if estimator == "classifier":
        X, y = small_clf_data()
        make = lambda b: MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=20,  # noqa: E731
                                       random_state=0, learning_rate_init=0.01,
                                       backend=b, dtype="float64")
    else:
        X, y = diabetes()
        make = lambda b: MLPRegressor(hidden_layer_sizes=(16, 8), max_iter=20,  # noqa: E731
                                      random_state=0, learning_rate_init=0.01,
                                      backend=b, dtype="float64")
    reference = make("numpy").fit(X, y)
    other = make(backend).fit(X, y)
    np.testing.assert_allclose(other.loss_curve_, reference.loss_curve_, rtol=1e-9)
    pred = other.predict(X)
    assert isinstance(pred, np.ndarray)               # host input -> NumPy output
    np.testing.assert_allclose(pred, reference.predict(X), rtol=1e-8, atol=1e-10)

    # Arrays of the backend are used where they are, and predictions come back as such.
    be = xpnn.get_backend(backend)
    Xd = be.asarray(X, dtype="float64")
    on_device = make(backend).fit(Xd, y)
    out = on_device.predict(Xd)
    assert be.owns(out)
    np.testing.assert_allclose(to_numpy(out), reference.predict(X), rtol=1e-8, atol=1e-10)
    if estimator == "classifier":
        assert be.owns(on_device.predict_proba(Xd))
        np.testing.assert_allclose(to_numpy(on_device.predict_proba(Xd)),
                                   reference.predict_proba(X), rtol=1e-8, atol=1e-10)
    assert on_device.score(Xd, y) == pytest.approx(reference.score(X, y))


@pytest.mark.gpu
def test_cupy_inputs_stay_on_the_gpu():
    if "cupy" not in xpnn.available_backends():
        pytest.skip("needs a CUDA GPU and cupy")
    import cupy

    X, y = digits(400)
    X = StandardScaler().fit_transform(X)
    kw = dict(hidden_layer_sizes=(32,), max_iter=30, random_state=0, early_stopping=True)
    Xg = cupy.asarray(X, dtype=cupy.float32)
    gpu = MLPClassifier(backend="cupy", **kw).fit(Xg, y)
    cpu = MLPClassifier(**kw).fit(X.astype(np.float32), y)
    pred = gpu.predict(Xg)
    assert isinstance(pred, cupy.ndarray)
    assert np.mean(cupy.asnumpy(pred) == cpu.predict(X)) > 0.97
    np.testing.assert_allclose(cupy.asnumpy(gpu.predict_proba(Xg)), cpu.predict_proba(X),
                               atol=1e-3)
    assert isinstance(gpu.predict(X), np.ndarray)     # host input -> host output


def test_breast_cancer_matches_sklearn_accuracy():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    ours = MLPClassifier(random_state=0, max_iter=50).fit(X[:400], y[:400])
    theirs = SkMLPClassifier(random_state=0, max_iter=50).fit(X[:400], y[:400])
    assert ours.score(X[400:], y[400:]) >= theirs.score(X[400:], y[400:]) - 0.02


# --------------------------------------------------------------------------- core: Dense decay
# ``alpha`` rides on one small core feature, Dense(weight_decay=λ): dL/dW += λ W (W only).
def test_dense_weight_decay_is_the_l2_gradient_on_w_only():
    rng = np.random.default_rng(0)
    X, t = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))

    def run(decay, fastpath=True):
        model = xpnn.Sequential(xpnn.Dense(3, 4, weight_decay=decay), xpnn.Tanh(),
                                xpnn.Dense(4, 2, weight_decay=decay), dtype="float64", seed=0)
        model.fastpath = fastpath
        model.compile(loss="mse", optimizer=xpnn.SGD(0.1))
        return model

    lam = 0.3
    model, plain = run(lam), run(0.0)
    start = model.get_weights()               # the same seed: the same initial weights
    model.train_on_batch(X, t)
    plain.train_on_batch(X, t)
    for i, (layer, ref) in enumerate(zip(model.layers[::2], plain.layers[::2], strict=True)):
        np.testing.assert_allclose(layer.W.grad, ref.W.grad + lam * start[2 * i], rtol=1e-12)
        np.testing.assert_allclose(layer.b.grad, ref.b.grad, rtol=1e-12)   # no decay on b
    assert model.layers[0].get_config()["weight_decay"] == lam
    assert "weight_decay" not in xpnn.Dense(3, 4).get_config()   # unchanged default config
    with pytest.raises(ValueError, match="weight_decay"):
        xpnn.Dense(3, 4, weight_decay=-1.0)
    # Sequential.fit's NumPy fast path must honour it too: same weights with and without.
    fast, slow = run(lam), run(lam, fastpath=False)
    fast.fit(X, t, epochs=3, batch_size=2, verbose=0)
    slow.fit(X, t, epochs=3, batch_size=2, verbose=0)
    for a, b in zip(fast.get_weights(), slow.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- L-BFGS
def _lbfgs_task(task):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = {"multiclass": rng.integers(0, 3, 80), "binary": rng.integers(0, 2, 80),
         "multilabel": rng.integers(0, 2, (80, 3)), "regression": X[:, 0] - X[:, 1] ** 2,
         "multioutput": np.stack([X[:, 0], X[:, 1] * X[:, 2]], axis=1),
         "poisson": rng.poisson(np.exp(0.5 * X[:, 0]))}[task]
    regression = task in ("regression", "multioutput", "poisson")
    return X, y, regression


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression",
                                  "multioutput", "poisson"])
def test_lbfgs_same_numbers_as_sklearn(task, weighted):
    """The same objective and gradient from the same initial weights: SciPy's L-BFGS-B takes
    the same steps, so weights, loss_ and n_iter_ agree with scikit-learn's."""
    X, y, regression = _lbfgs_task(task)
    ours, theirs = (MLPRegressor, SkMLPRegressor) if regression else (MLPClassifier,
                                                                      SkMLPClassifier)
    kw = dict(hidden_layer_sizes=(6,), activation="tanh", solver="lbfgs", alpha=0.01,
              max_iter=30, random_state=1)
    if task == "poisson":
        kw["loss"] = "poisson"
    sw = np.random.default_rng(1).uniform(0.2, 3.0, len(X)) if weighted else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = theirs(**kw).fit(X, y, sample_weight=sw)
        xp = ours(**kw).fit(X, y, sample_weight=sw)
    assert xp.n_iter_ == sk.n_iter_ and len(xp.loss_curve_) == xp.n_iter_
    np.testing.assert_allclose(xp.loss_, sk.loss_, rtol=1e-6)
    for a, b in zip(sk.coefs_ + sk.intercepts_, xp.coefs_ + xp.intercepts_, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(xp.predict(X) if regression else xp.predict_proba(X),
                               sk.predict(X) if regression else sk.predict_proba(X),
                               rtol=1e-5, atol=1e-7)


def test_lbfgs_stopping_rules_and_warnings():
    X, y, _ = _lbfgs_task("multiclass")
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge after 5 iteration"):
        clf = MLPClassifier(solver="lbfgs", max_iter=5, random_state=0).fit(X, y)
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5
    assert clf.loss_curve_[-1] == clf.loss_ < clf.loss_curve_[0]
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        clf = MLPClassifier(solver="lbfgs", max_fun=8, random_state=0).fit(X, y)
    assert clf.n_iter_ <= 8
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)   # converges: no warning
        clf = MLPClassifier(solver="lbfgs", hidden_layer_sizes=(), tol=1e-3,
                            random_state=0).fit(X, y)
    assert clf.n_iter_ < 200
    assert not hasattr(clf, "partial_fit") and hasattr(MLPClassifier(), "partial_fit")
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")


def test_lbfgs_moves_only_the_flat_vector(backend, monkeypatch):
    """Each evaluation brings back one vector (gradient and loss) and nothing else; every
    backend gives the numbers of NumPy."""
    import xpnn.flat

    X, y, _ = _lbfgs_task("multiclass")
    kw = dict(solver="lbfgs", hidden_layer_sizes=(8,), max_iter=15, random_state=0,
              dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = MLPClassifier(**kw).fit(X, y)
        calls = []
        real = xpnn.flat.to_numpy
        monkeypatch.setattr(xpnn.flat, "to_numpy", lambda a: calls.append(a.shape) or real(a))
        monkeypatch.setattr(xpnn.flat.FlatObjective, "get", lambda self: np.concatenate(
            [np.asarray(real(p.data), dtype=np.float64).ravel() for p in self.params]))
        be = xpnn.get_backend(backend)
        other = MLPClassifier(backend=backend, **kw).fit(be.asarray(X, dtype="float64"), y)
    n_params = other.model_.count_params()
    assert calls and all(shape == (n_params + 1,) for shape in calls)
    np.testing.assert_allclose(other.loss_curve_, reference.loss_curve_, rtol=1e-8)
    np.testing.assert_allclose(to_numpy(other.predict_proba(be.asarray(X, "float64"))),
                               reference.predict_proba(X), rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- sample weights
@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_sample_weight_same_numbers_as_sklearn(task, solver):
    """Full batches: scikit-learn's weighted loss and penalty alpha/Σw exactly."""
    X, y, regression = _lbfgs_task(task)
    ours, theirs = (MLPRegressor, SkMLPRegressor) if regression else (MLPClassifier,
                                                                      SkMLPClassifier)
    sw = np.random.default_rng(2).uniform(0.0, 3.0, len(X))
    kw = dict(hidden_layer_sizes=(5,), solver=solver, alpha=0.05, batch_size="auto",  # all 80
              shuffle=False, max_iter=15, learning_rate_init=0.05, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = theirs(**kw).fit(X, y, sample_weight=sw)
        xp = ours(**kw).fit(X, y, sample_weight=sw)
    tol = 1e-10 if solver == "sgd" else 1e-4      # Adam: epsilon sits where torch puts it
    for a, b in zip(sk.coefs_ + sk.intercepts_, xp.coefs_ + xp.intercepts_, strict=True):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
    # loss_curve_ takes the L2 term at the end of each epoch (see test_same_numbers_as_sklearn)
    np.testing.assert_allclose(xp.loss_curve_, sk.loss_curve_, rtol=1e-4 if solver == "sgd"
                               else 1e-3)
    # weights all one are the unweighted fit; the validation split carries the weights
    unit = ours(**kw).fit(X, y, sample_weight=np.ones(len(X)))
    plain = ours(**kw).fit(X, y)
    np.testing.assert_array_equal(unit.coefs_[0], plain.coefs_[0])
    es = dict(kw, early_stopping=True, validation_fraction=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk_es = theirs(**es).fit(X, y, sample_weight=sw)
        xp_es = ours(**es).fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(xp_es.validation_scores_, sk_es.validation_scores_,
                               rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- sparse, dtypes
@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_sparse_input_equals_dense_and_is_densified_per_batch(fmt, solver, monkeypatch):
    """Minibatches densify one batch at a time; L-BFGS multiplies the sparse matrix itself."""
    import scipy.sparse as sp

    import xpnn.data

    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 20)) * (rng.uniform(size=(150, 20)) < 0.2)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    Xs = getattr(sp, f"{fmt}_matrix")(X)
    kw = dict(hidden_layer_sizes=(8,), solver=solver, batch_size=32, max_iter=20,
              random_state=0, early_stopping=solver == "adam")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = MLPClassifier(**kw).fit(X, y)
        densified = []
        real = xpnn.data.read_rows
        monkeypatch.setattr(xpnn.data, "read_rows", lambda X, rows: densified.append(
            real(X, rows).shape[0]) or real(X, rows))
        sparse = MLPClassifier(**kw).fit(Xs, y)
        monkeypatch.undo()
    if solver == "lbfgs":
        assert densified == []
    else:
        assert densified and max(densified) <= 32      # never the whole matrix
    np.testing.assert_allclose(sparse.predict_proba(Xs), dense.predict_proba(X), rtol=1e-9)
    np.testing.assert_allclose(sparse.loss_curve_, dense.loss_curve_, rtol=1e-9)


def test_parameter_dtype_follows_the_input():
    X, y = small_clf_data()
    for Xin, dtype, expected in ((X, None, np.float64), (X.astype(np.float32), None,
                                                         np.float32),
                                 (X.astype(np.float32), "float64", np.float64),
                                 (X, "float32", np.float32)):
        for est in (MLPClassifier(max_iter=5, dtype=dtype), MLPRegressor(max_iter=5,
                                                                         dtype=dtype)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(Xin, y)
            assert est.model_.dtype == np.dtype(expected).name
            assert all(w.dtype == expected for w in est.coefs_ + est.intercepts_)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # overflow, as in scikit-learn
def test_divergence_as_sklearn():
    X, y = small_clf_data()
    X = X * 1e3
    kw = dict(solver="sgd", learning_rate_init=10.0, momentum=0.0, max_iter=30, random_state=0,
              activation="identity", hidden_layer_sizes=(50,))
    with pytest.warns(ConvergenceWarning, match="diverged"):
        reg = MLPRegressor(early_stopping=True, **kw).fit(X, y * 1e3)
    assert np.isnan(reg.validation_scores_[-1]) and isinstance(reg.validation_scores_[-1], float)
    assert all(np.all(np.isfinite(w)) for w in reg.coefs_)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        MLPRegressor(**kw).fit(X, y * 1e3)


def test_user_weights_start_partial_fit():
    """scikit-learn's worked example: coefs_/intercepts_ assigned before the first call."""
    X, y = np.array([[0.6, 0.8, 0.7]]), np.array([0])
    mlp = MLPClassifier(solver="sgd", learning_rate_init=0.1, alpha=0.1, activation="logistic",
                        random_state=1, max_iter=1, hidden_layer_sizes=2, momentum=0)
    mlp.coefs_ = [np.array([[0.1, 0.2], [0.3, 0.1], [0.5, 0]]), np.array([[0.1], [0.2]])]
    mlp.intercepts_ = [np.array([0.1, 0.1]), np.array([1.0])]
    mlp.partial_fit(X, y, classes=[0, 1])
    np.testing.assert_allclose(mlp.coefs_[1], [[0.04706], [0.154089]], atol=5e-4)
    np.testing.assert_allclose(mlp.predict_proba(X)[0, 1], 0.739, atol=5e-4)

"""xpnn.sklearn's tabular estimators and their preprocessing.

* TabularPreprocessor: RealMLP's robust scaling and smooth clip, missing indicators, one-hot and
  category codes, learned on the training rows; raw frames (str/category/bool/nullable columns,
  NaN) and NumPy arrays; unseen categories and NaN at predict; clear errors naming the column;
* TabularClassifier / TabularRegressor: scikit-learn conventions (check_estimator, clone,
  Pipeline, GridSearchCV, pickling, sample_weight, class_weight, feature names, string labels,
  random_state); bad frames raise and leave a fitted estimator as it was; ONNX export of the
  network; the same fit on every backend.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from xpnn.sklearn import TabularClassifier, TabularPreprocessor, TabularRegressor  # noqa: E402
from xpnn.sklearn._preprocessing import smooth_clip  # noqa: E402

FAST = {"hidden_layer_sizes": (16,), "max_iter": 6, "patience": 3}
#: Small networks that still learn scikit-learn's check problems (scores asked for there), in
#: float64: the checks compare predictions of subsets and batches at 1e-7, below float32's
#: rounding of a matrix product whose blocking changes with the number of rows.
CHECKED = {"hidden_layer_sizes": (32,), "max_iter": 40, "patience": 10, "batch_size": 32,
           "dtype": "float64"}


def frame(n=120, seed=0):
    """A raw table: floats with NaN, nullable ints, strings with None, a category with many
    levels, a boolean; the label depends on a number and a string column."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n)
    age[rng.random(n) < 0.1] = np.nan
    sex = rng.choice(["m", "f"], n).astype(object)
    sex[rng.random(n) < 0.05] = None
    city = pd.Series(rng.choice([f"city{k}" for k in range(15)], n)).astype("category")
    X = pd.DataFrame({
        "age": age, "sex": sex, "city": city,
        "children": pd.array(rng.integers(0, 4, n), dtype="Int64"),
        "member": rng.random(n) < 0.5,
        "income": rng.lognormal(10, 1, n),
    })
    X.loc[3, "children"] = pd.NA
    score = np.nan_to_num(age - 40) / 12 + (sex == "f") * 1.5 + rng.normal(0, 0.5, n)
    y = np.where(score > 0.5, "yes", "no")
    return X, y, score


# --------------------------------------------------------------------------- preprocessing
def test_numeric_columns_are_robust_scaled_and_smoothly_clipped():
    x = np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 100, np.nan])
    pre = TabularPreprocessor().fit(x[:, None])
    med, q25, q75 = np.nanmedian(x), *np.nanquantile(x, [0.25, 0.75])
    assert pre.median_[0] == med and pre.scale_[0] == pytest.approx(1 / (q75 - q25))
    Z = pre.transform(np.array([[med], [q75], [1e6], [np.nan]]))
    z75 = (q75 - med) / (q75 - q25)
    np.testing.assert_allclose(Z[:, 0], [0.0, z75 / np.sqrt(1 + z75 ** 2 / 9), 3.0, 0.0],
                               atol=1e-6)
    np.testing.assert_array_equal(Z[:, 1], [0, 0, 0, 1])       # the missing indicator
    assert pre.get_feature_names_out().tolist() == ["x0", "x0_missing"]
    assert abs(smooth_clip(np.array(1e9))) <= 3 and smooth_clip(np.array(0.01)) == \
        pytest.approx(0.01, rel=1e-4)


def test_quartiles_that_coincide_fall_back_to_the_range_and_constant_columns_to_zero():
    X = np.array([[0.0, 5], [0, 5], [0, 5], [0, 5], [4, 5]])
    pre = TabularPreprocessor(clip=None).fit(X)
    np.testing.assert_allclose(pre.scale_, [1 / 2.0, 0.0])
    np.testing.assert_allclose(pre.transform(X)[:, 0], [0, 0, 0, 0, 2])
    np.testing.assert_array_equal(pre.transform(X)[:, 1], 0)


def test_categories_one_hot_binary_and_codes_learned_on_training_rows_only():
    X, _, _ = frame()
    pre = TabularPreprocessor().fit(X.iloc[:100])
    assert pre.kinds_ == ["numeric", "categorical", "categorical", "numeric", "boolean",
                          "numeric"]
    assert pre.cardinalities_ == [len(X["city"].iloc[:100].unique())]
    names = pre.get_feature_names_out().tolist()
    assert names[:5] == ["age", "children", "income", "age_missing", "children_missing"]
    assert "member_True" in names and names[-1] == "city_code"
    Z = pre.transform(X)
    assert Z.shape == (120, pre.n_features_out_) and Z.dtype == np.float64
    # learned on the first 100 rows: transforming more rows changes nothing learned
    np.testing.assert_array_equal(pre.transform(X.iloc[:100]), Z[:100])
    assert pre.median_[0] == np.nanmedian(X["age"].iloc[:100])
    member = Z[:, names.index("member_True")]
    np.testing.assert_array_equal(member, np.where(X["member"], 1.0, -1.0))
    sex = Z[:, [names.index(f"sex_{c}") for c in ("f", "m", "None")]]
    np.testing.assert_array_equal(sex.sum(axis=1), 1)          # None is its own category


def test_one_hot_width_one_hot_encodes_the_smallest_categoricals_while_they_fit():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({f"c{m}": [f"v{k}" for k in rng.permutation(np.arange(120) % m)]
                      for m in (40, 2, 15, 3)})
    pre = TabularPreprocessor(max_one_hot=100, one_hot_width=19).fit(X)
    assert pre.one_hot_ == [False, True, True, True]       # 1 + 3 + 15 columns; 40 do not fit
    assert pre.n_one_hot_ == 19 and pre.cardinalities_ == [40]
    assert TabularPreprocessor(max_one_hot=100, one_hot_width=18).fit(X).one_hot_ == \
        [False, True, False, True]                        # the 15 no longer fit
    assert TabularPreprocessor(max_one_hot=100).fit(X).cardinalities_ == []
    assert TabularPreprocessor(max_one_hot=9, one_hot_width=1000).fit(X).cardinalities_ == \
        [40, 15]                                          # the per-column limit still holds
    with pytest.raises(ValueError, match="one_hot_width"):
        TabularPreprocessor(one_hot_width=-1).fit(X)


def test_unseen_categories_and_nan_at_predict_time():
    X, _, _ = frame()
    pre = TabularPreprocessor().fit(X)
    names = pre.get_feature_names_out().tolist()
    new = X.iloc[:2].copy()
    new["city"] = pd.Categorical(["atlantis", None])
    new["member"] = pd.array([None, True], dtype="boolean")
    new["age"] = np.nan
    Z = pre.transform(new)
    np.testing.assert_array_equal(Z[:, -1], -1.0)                 # unknown code: -1
    np.testing.assert_array_equal(Z[:, names.index("member_True")], [0.0, 1.0])
    np.testing.assert_array_equal(Z[:, names.index("age")], 0.0)
    np.testing.assert_array_equal(Z[:, names.index("age_missing")], 1.0)


def test_numpy_object_arrays_and_plain_arrays():
    X = np.array([[1.5, "a", True], [2.0, "b", False], [None, "a", True], [4.0, None, False]],
                 dtype=object)
    pre = TabularPreprocessor().fit(X)
    assert pre.kinds_ == ["numeric", "categorical", "boolean"]
    assert not hasattr(pre, "feature_names_in_") and pre.n_features_in_ == 3
    assert pre.transform(X).shape == (4, 1 + 1 + 3 + 1)
    assert TabularPreprocessor().fit_transform(np.eye(3)).shape == (3, 3)


@pytest.mark.parametrize("bad, message", [
    (pd.DataFrame({"a": [np.nan] * 4, "b": [1.0, 2, 3, 4]}),
     r"column 'a' has no value \(every row is missing\)"),
    (pd.DataFrame({"b": [1.0, 2, 3, 4], "price": ["1", "2.5", None, "3e2"]}),
     r"column 'price' holds strings that all look like numbers"),
    (pd.DataFrame({"b": [1.0, 2, np.inf, 4]}), r"column 'b' holds an infinite value"),
    (np.array([[1.0, np.nan], [2, np.nan]]), r"column 1 has no value"),
])
def test_bad_frames_are_refused_naming_the_column(bad, message):
    with pytest.raises(ValueError, match=message):
        TabularPreprocessor().fit(bad)


def test_a_column_of_another_kind_at_predict_time_is_refused():
    X, _, _ = frame()
    pre = TabularPreprocessor().fit(X)
    for column, values, kinds in (("age", ["x"] * 120, "was numeric when fitted but is "
                                   "categorical now"),
                                  ("sex", np.arange(120.0), "was categorical when fitted but "
                                   "is numeric now")):
        bad = X.copy()
        bad[column] = values
        with pytest.raises(ValueError, match=f"column '{column}' {kinds}"):
            pre.transform(bad)
    allnan = X.copy()
    allnan["sex"] = np.nan           # a column missing everywhere is fine for any kind
    assert pre.transform(allnan).shape == (120, pre.n_features_out_)


def test_numeric_looking_category_column_is_accepted():
    X = pd.DataFrame({"zip": pd.Series(["101", "102", "101", "103"]).astype("category")})
    pre = TabularPreprocessor().fit(X)
    assert pre.kinds_ == ["categorical"]


def test_a_failed_fit_leaves_the_preprocessor_as_it_was():
    X, _, _ = frame()
    pre = TabularPreprocessor().fit(X)
    before = pre.transform(X)
    with pytest.raises(ValueError, match="every row is missing"):
        pre.fit(pd.DataFrame({"z": [np.nan, np.nan]}))
    np.testing.assert_array_equal(pre.transform(X), before)
    assert pre.n_features_in_ == X.shape[1]


# --------------------------------------------------------------------------- estimators
def expected_failed_checks(estimator):
    return {
        # sample_weight=k and k repeated rows give other validation splits and batches
        "check_sample_weight_equivalence_on_dense_data": "stochastic training: repeated rows "
        "land in other batches and validation splits than weighted ones",
    }


@parametrize_with_checks([TabularClassifier(random_state=0, **CHECKED),
                          TabularRegressor(random_state=0, **CHECKED)],
                         expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_classifier_on_a_raw_frame_with_string_labels():
    X, y, _ = frame(300)
    clf = TabularClassifier(random_state=0, max_iter=40).fit(X.iloc[:240], y[:240])
    assert clf.classes_.tolist() == ["no", "yes"]
    assert clf.n_features_in_ == 6 and clf.feature_names_in_.tolist() == list(X.columns)
    proba = clf.predict_proba(X.iloc[240:])
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert set(clf.predict(X.iloc[240:])) <= {"no", "yes"}
    assert clf.score(X.iloc[240:], y[240:]) > 0.8
    assert len(clf.models_) == 5                          # the default: 5 cross-fitted networks
    assert all(0 <= b < n <= 40 for b, n in zip(clf.best_epoch_, clf.n_iter_, strict=True))
    assert all(len(r) == 48 for r in clf.validation_rows_)


def test_regressor_standardises_targets_and_maps_back():
    X, _, score = frame(300)
    y = 1000.0 + 50.0 * score
    reg = TabularRegressor(random_state=0, max_iter=60).fit(X.iloc[:240], y[:240])
    assert reg.y_mean_ == pytest.approx(y[:240].mean())
    assert reg.y_scale_ == pytest.approx(y[:240].std())
    assert reg.score(X.iloc[240:], y[240:]) > 0.6
    Y = np.stack([y, -y], axis=1)
    both = TabularRegressor(random_state=0, **FAST).fit(X, Y)
    assert both.predict(X).shape == (300, 2)


def test_random_state_reproduces_and_pickle_round_trips():
    X, y, _ = frame()
    a = TabularClassifier(random_state=3, **FAST).fit(X, y)
    b = TabularClassifier(random_state=3, **FAST).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c.predict_proba(X), a.predict_proba(X))
    d = clone(a)
    assert d.get_params() == a.get_params() and not hasattr(d, "models_")
    d.set_params(n_ensemble=2).fit(X, y)
    assert len(d.models_) == 2


def test_ensemble_members_validate_on_disjoint_folds_and_together_train_on_every_row():
    """Cross-fitting: the rows are dealt into round(1 / validation_fraction) stratified folds
    and network i validates on fold i, so five networks with validation_fraction=0.2 hold out
    disjoint rows and each row trains four of them; more networks deal the rows again."""
    X, y, _ = frame(150)
    clf = TabularClassifier(random_state=0, n_ensemble=5, validation_fraction=0.2,
                            **FAST).fit(X, y)
    rows = clf.validation_rows_
    assert len(rows) == len(clf.models_) == len(clf.best_epoch_) == 5
    np.testing.assert_array_equal(np.sort(np.concatenate(rows)), np.arange(150))
    share = np.mean(y == "yes")                                   # stratified folds
    assert all(len(r) == 30 and abs(np.mean(y[r] == "yes") - share) < 0.04 for r in rows)
    again = TabularClassifier(random_state=0, n_ensemble=5, validation_fraction=0.2,
                              **FAST).fit(X, y)
    for a, b in zip(rows, again.validation_rows_, strict=True):  # random_state fixes them
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    other = TabularClassifier(random_state=1, n_ensemble=5, **FAST).fit(X, y)
    assert not np.array_equal(other.validation_rows_[0], rows[0])
    more = TabularClassifier(random_state=0, n_ensemble=7, validation_fraction=0.25,
                             **FAST).fit(X, y)
    np.testing.assert_array_equal(np.sort(np.concatenate(more.validation_rows_[:4])),
                                  np.arange(150))
    second = np.concatenate(more.validation_rows_[4:])            # a second dealing
    assert len(more.validation_rows_) == 7 and len(np.unique(second)) == len(second) > 100
    none = TabularClassifier(random_state=0, n_ensemble=2, validation_fraction=0.0,
                             **FAST).fit(X, y)
    assert none.validation_rows_ == [None, None] and none.n_iter_ == [6, 6]


def test_classifier_defaults_are_five_cross_fitted_networks_of_3x64():
    """The defaults: 5 networks of 3×64 ReLU units, each picking its best epoch on one of 5
    stratified folds and stopping 8 epochs after it (lr 4e-3 at the schedule's peak)."""
    from xpnn import Dense

    X, y, _ = frame(150)
    clf = TabularClassifier(random_state=0).fit(X, y)
    assert len(clf.models_) == 5
    np.testing.assert_array_equal(np.sort(np.concatenate(clf.validation_rows_)), np.arange(150))
    widths = [layer.W.shape[1] for layer in clf.models_[0].layers if isinstance(layer, Dense)]
    assert widths == [64, 64, 64, 2]
    stopped = [n for n in clf.n_iter_ if n < 128]
    assert stopped and all(n - b - 1 == 8 for n, b in zip(clf.n_iter_, clf.best_epoch_,
                                                          strict=True) if n < 128)
    assert clf._settings()["learning_rate"] == 4e-3


def test_a_class_too_small_to_stratify_deals_unstratified_folds_without_warnings():
    import warnings

    X, _, _ = frame(60)
    y = np.array(["a"] * 57 + ["b"] * 3)                          # 3 < 5 folds
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = TabularClassifier(random_state=0, n_ensemble=5, **FAST).fit(X, y)
    np.testing.assert_array_equal(np.sort(np.concatenate(clf.validation_rows_)),
                                  np.arange(60))


def test_pipeline_and_grid_search():
    X, y, _ = frame(160)
    pipe = make_pipeline(FunctionTransformer(lambda d: d.drop(columns=["income"])),
                         TabularClassifier(random_state=0, **FAST))
    assert pipe.fit(X, y).predict(X).shape == (160,)
    grid = GridSearchCV(TabularClassifier(random_state=0, **FAST),
                        {"dropout": [0.0, 0.2]}, cv=2).fit(X, y)
    assert grid.best_params_["dropout"] in (0.0, 0.2)


def test_sample_weight_and_class_weight_change_the_fit():
    X, y, _ = frame()
    base = TabularClassifier(random_state=0, **FAST).fit(X, y)
    ones = TabularClassifier(random_state=0, **FAST).fit(X, y, sample_weight=np.ones(120))
    np.testing.assert_allclose(ones.predict_proba(X), base.predict_proba(X), rtol=1e-6)
    w = np.where(y == "yes", 5.0, 1.0)
    weighted = TabularClassifier(random_state=0, **FAST).fit(X, y, sample_weight=w)
    balanced = TabularClassifier(random_state=0, class_weight={"yes": 5.0, "no": 1.0},
                                 **FAST).fit(X, y)
    np.testing.assert_allclose(balanced.predict_proba(X), weighted.predict_proba(X), rtol=1e-6)
    assert weighted.predict_proba(X)[:, 1].mean() > base.predict_proba(X)[:, 1].mean()


@pytest.mark.parametrize("case", ["all-nan", "numeric-strings", "inf", "one-class"])
def test_bad_frames_leave_a_fitted_estimator_as_it_was(case):
    X, y, _ = frame()
    clf = TabularClassifier(random_state=0, **FAST).fit(X, y)
    before, params = clf.predict_proba(X), dict(vars(clf))
    bad_X, bad_y = X.copy(), y
    if case == "all-nan":
        bad_X["age"] = np.nan
        message = "column 'age' has no value"
    elif case == "numeric-strings":
        bad_X["sex"] = "1.5"
        message = "column 'sex' holds strings that all look like numbers"
    elif case == "inf":
        bad_X.loc[5, "income"] = np.inf
        message = "column 'income' holds an infinite value"
    else:
        bad_y = np.full(120, "yes")
        message = r"y has 1 class \('yes'\)"
    with pytest.raises(ValueError, match=message):
        clf.fit(bad_X, bad_y)
    assert vars(clf).keys() == params.keys()
    assert all(vars(clf)[k] is v for k, v in params.items())
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def test_unseen_categories_at_predict_time_work():
    X, y, _ = frame()
    clf = TabularClassifier(random_state=0, **FAST).fit(X, y)
    new = X.iloc[:3].copy()
    new["sex"] = ["alien", None, "m"]
    new["city"] = pd.Categorical(["nowhere", None, "city1"])
    assert np.isfinite(clf.predict_proba(new)).all()


@pytest.mark.parametrize("estimator, opts", [
    (TabularClassifier, {"max_one_hot": 9}),                       # Dense layers, Embedding
    (TabularClassifier, {"k": 3, "numeric_embedding": "plr"}),     # a TabM-style ensemble
    (TabularRegressor, {}),                                        # PBLD embeddings
])
def test_onnx_export_of_the_network(tmp_path, estimator, opts):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    X, y, score = frame()
    est = estimator(random_state=0, **FAST, **opts).fit(
        X, y if estimator is TabularClassifier else score)
    path = est.export(tmp_path / "est.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = session.run(None, {name: est.transform_features(X).astype(np.float32)})[0]
    Z = est.transform_features(X)
    member = np.asarray(est.models_[0].predict(Z))      # member 0 of the ensemble (5 networks)
    np.testing.assert_allclose(got, member, rtol=1e-5, atol=1e-6)
    mean = np.mean([m.predict(Z) for m in est.models_], axis=0)
    if estimator is TabularClassifier:
        np.testing.assert_allclose(mean, est.predict_proba(X), rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(np.clip(mean[:, 0] * est.y_scale_ + est.y_mean_,
                                           *est.output_range_), est.predict(X),
                                   rtol=1e-5, atol=1e-5 * est.y_scale_)


def test_defaults_choose_the_input_layers_by_task_and_columns():
    X, y, score = frame()
    clf = TabularClassifier(random_state=0, max_one_hot=9, **FAST).fit(X, y)
    reg = TabularRegressor(random_state=0, **FAST).fit(X, score)
    names = [type(layer).__name__ for layer in clf.models_[0].layers]
    assert names[0] == "Columns" and "PeriodicEmbedding" not in repr(clf.models_[0].layers[0])
    assert "Embedding" in repr(clf.models_[0].layers[0])           # city: 15 categories
    assert "PeriodicEmbedding" in repr(reg.models_[0].layers[0])
    plain = TabularClassifier(random_state=0, **FAST).fit(X, y)   # city one-hot
    assert [type(layer).__name__ for layer in plain.models_[0].layers][:3] == \
        ["Scale", "Dense", "ReLU"]                              # RealMLP's front scale first
    ens = TabularClassifier(random_state=0, k=4, **FAST).fit(X, y)
    assert [type(layer).__name__ for layer in ens.models_[0].layers][-2:] == \
        ["Softmax", "EnsembleMean"]
    np.testing.assert_allclose(ens.predict_proba(X).sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("estimator", [TabularClassifier, TabularRegressor])
def test_every_backend_fits_the_same_network(backend, estimator):
    X, y, score = frame(80)
    target = y if estimator is TabularClassifier else score
    opts = dict(FAST, dtype="float64", random_state=0)
    ref = estimator(**opts).fit(X, target)
    other = estimator(backend=backend, **opts).fit(X, target)
    assert other.n_iter_ == ref.n_iter_
    out = (lambda e: e.predict_proba(X)) if estimator is TabularClassifier else \
        (lambda e: e.predict(X))
    np.testing.assert_allclose(out(other), out(ref), rtol=1e-7, atol=1e-9)


def test_regressor_trains_realmlps_recipe_with_per_parameter_factors():
    """The regressor's default is RealMLP's recipe: a front Scale (lr × 6), parametric Mish,
    NTK-equivalent factors on the weights (lr / √fan_in, wd · √fan_in), biases lr × 0.1 without
    decay, PBLD lr × 0.1; its networks train on the generic step, which honours them."""
    from xpnn import Columns, Dense, ParametricActivation, PeriodicEmbedding, Scale, fastpath

    X, _, score = frame()
    reg = TabularRegressor(random_state=0, hidden_layer_sizes=(16, 8), max_iter=4).fit(X, score)
    model = reg.models_[0]
    kinds = [type(layer) for layer in model.layers]
    assert Scale in kinds and ParametricActivation in kinds
    assert all(layer.activation == "mish" for layer in model.layers
               if isinstance(layer, ParametricActivation))
    for layer in model.layers:
        if isinstance(layer, Dense):
            W, b = layer.params
            assert W.lr_factor == pytest.approx(1 / np.sqrt(W.shape[0]))
            assert W.wd_factor == pytest.approx(np.sqrt(W.shape[0]))
            assert (b.lr_factor, b.wd_factor) == (0.1, 0.0)
        elif isinstance(layer, Scale):
            assert (layer.params[0].lr_factor, layer.params[0].wd_factor) == (6.0, 0.0)
        elif isinstance(layer, Columns):
            periodic = [p for f in layer.layers if isinstance(f, PeriodicEmbedding)
                        for p in f.params]
            assert periodic and all(p.lr_factor == 0.1 for p in periodic)
    assert fastpath.explain(model) is not None               # Columns, ParametricActivation
    assert reg.n_iter_ == [4] * 5 and np.isfinite(reg.predict(X)).all()   # 5 networks


def test_classifier_default_is_the_plain_network_on_the_fast_path():
    from xpnn import ParametricActivation, ReLU, fastpath

    X, y, _ = frame()
    clf = TabularClassifier(random_state=0, **FAST).fit(X, y)
    assert ReLU in [type(layer) for layer in clf.models_[0].layers]
    scale, *others = clf.models_[0].params                   # the front scale: lr × 6, no decay
    assert (scale.lr_factor, scale.wd_factor) == (6.0, 0.0)
    assert all(p.lr_factor == 1.0 and p.wd_factor == 1.0 for p in others)
    realmlp = TabularClassifier(random_state=0, recipe="realmlp", **FAST).fit(X, y)
    acts = [layer for layer in realmlp.models_[0].layers
            if isinstance(layer, ParametricActivation)]
    assert acts and all(layer.activation == "selu" for layer in acts)
    assert fastpath.explain(realmlp.models_[0]) is not None   # ParametricActivation
    numbers = np.random.default_rng(0).normal(size=(120, 4))
    plain = TabularClassifier(random_state=0, **FAST).fit(numbers, numbers[:, 0] > 0)
    assert fastpath.explain(plain.models_[0]) is None


def test_classifier_one_hot_encodes_large_categoricals_and_trains_on_the_fast_path(monkeypatch):
    """``max_one_hot="auto"``: with the plain recipe every categorical is one-hot encoded while
    the one-hot columns total at most ONE_HOT_WIDTH, so no network needs an Embedding and all
    train on the fast path; beyond the width, and with RealMLP's recipe (9), embeddings."""
    from xpnn import fastpath

    X, y, score = frame()
    X["shop"] = ["s" + str(k) for k in np.random.default_rng(1).integers(0, 30, len(X))]
    clf = TabularClassifier(random_state=0, **FAST).fit(X, y)
    assert clf.preprocessor_.cardinalities_ == [] and all(clf.preprocessor_.one_hot_)
    assert all(fastpath.explain(m) is None for m in clf.models_)
    assert all(getattr(m, "_fastpath_trainer", None) is not None for m in clf.models_)
    old = TabularClassifier(random_state=0, max_one_hot=9, **FAST).fit(X, y)
    assert "Columns" in fastpath.explain(old.models_[0])            # city, shop: embeddings
    realmlp = TabularClassifier(random_state=0, recipe="realmlp", **FAST).fit(X, y)
    assert realmlp.preprocessor_.cardinalities_ == [15, 30]
    reg = TabularRegressor(random_state=0, **FAST).fit(X, score)   # RealMLP's limit: 9
    assert reg.preprocessor_.cardinalities_ == [15, 30]
    assert "Embedding" in repr(reg.models_[0].layers[0])
    # sex 3 + member 1 + city 15 fit in 40 columns, shop's 30 more do not: an embedding
    monkeypatch.setattr("xpnn.sklearn._tabular.ONE_HOT_WIDTH", 40)
    wide = TabularClassifier(random_state=0, **FAST).fit(X, y)
    assert wide.preprocessor_.cardinalities_ == [30] and wide.preprocessor_.n_one_hot_ == 19


@pytest.mark.parametrize("param, value", [("recipe", "tabm"), ("max_iter", 0),
                                          ("patience", -1), ("weight_decay", "high"),
                                          ("learning_rate", 0.0)])
def test_bad_settings_raise(param, value):
    X, y, _ = frame()
    with pytest.raises(ValueError, match=param):
        TabularClassifier(**{param: value}).fit(X, y)


def test_realmlp_schedule_caps_the_steps_on_large_tables():
    """``max_iter="auto"``: 48 epochs, but at most MAX_STEPS optimizer steps (and at least 16
    epochs); an explicit ``max_iter`` is taken as it is."""
    from xpnn.sklearn._tabular import MAX_STEPS

    X, _, score = frame()
    one = {"hidden_layer_sizes": (4,), "n_ensemble": 1, "random_state": 0}
    small = TabularRegressor(batch_size=64, **one)
    assert small.fit(X, score).n_iter_ == [48]                   # 2 steps an epoch
    per_epoch = 96 // 4                                           # 96 training rows
    mid = TabularRegressor(batch_size=4, **one)
    assert mid.fit(X, score).n_iter_ == [MAX_STEPS // per_epoch] != [48]
    tiny = TabularRegressor(batch_size=1, **one)
    assert tiny.fit(X, score).n_iter_ == [max(16, MAX_STEPS // 96)]
    assert TabularRegressor(batch_size=1, max_iter=3, **one).fit(X, score).n_iter_ == [3]


@pytest.mark.parametrize("sizes", [3.5, (16, 0), "16", (16, True)])
def test_bad_hidden_layer_sizes_name_the_parameter(sizes):
    X, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
    with pytest.raises(ValueError, match="hidden_layer_sizes must be an int or a sequence"):
        TabularClassifier(hidden_layer_sizes=sizes).fit(X, y)


def test_regressor_default_is_a_cross_fitted_ensemble():
    """The regressor trains 5 networks of 3×128 units; network i validates on fold i of the
    training rows, so the validation folds are disjoint and cover every row."""
    params = TabularRegressor().get_params()
    assert params["n_ensemble"] == 5 and params["hidden_layer_sizes"] == (128, 128, 128)
    X, _, score = frame()
    reg = TabularRegressor(random_state=0, **FAST).fit(X, score)
    assert len(reg.models_) == 5
    rows = np.concatenate(reg.validation_rows_)
    assert np.array_equal(np.sort(rows), np.arange(len(X)))


def test_n_threads_holds_blas_during_fit_and_restores_it():
    """``n_threads=1``: BLAS runs on one thread inside fit (seen by a callback-free probe of
    the count while the networks train) and has its previous count again afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from xpnn import threads

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    X, y, _ = frame()
    seen = []
    original = threads.decide

    def probe(*args, **kwargs):
        seen.append(max(blas()))
        return original(*args, **kwargs)

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas()
        try:
            threads.decide = probe
            TabularClassifier(random_state=0, n_threads=1, **FAST).fit(X, y)
        finally:
            threads.decide = original
        assert blas() == before
    assert seen and set(seen) == {1}


def test_datetime_and_timedelta_columns_are_numbers_in_seconds():
    """Date-times (naive or time-zone aware) are seconds since 1970-01-01 UTC, durations
    seconds, each scaled as a numeric column; NaT is missing (with its indicator)."""
    rng = np.random.default_rng(0)
    seconds = rng.integers(0, 10**8, 60).astype(float)
    when = pd.to_datetime(seconds, unit="s")
    when_utc = when.tz_localize("UTC").tz_convert("Europe/Paris")   # same instants
    length = pd.to_timedelta(seconds / 7, unit="s")
    X = pd.DataFrame({"when": when, "aware": when_utc, "length": length})
    X.loc[3, "when"] = pd.NaT
    numbers = pd.DataFrame({"when": seconds, "aware": seconds, "length": seconds / 7})
    numbers.loc[3, "when"] = np.nan
    pre = TabularPreprocessor().fit(X)
    assert pre.kinds_ == ["datetime", "datetime", "timedelta"]
    assert pre.get_feature_names_out().tolist() == ["when", "aware", "length", "when_missing"]
    np.testing.assert_allclose(pre.transform(X), TabularPreprocessor().fit_transform(numbers),
                               rtol=1e-12, atol=1e-12)
    y = seconds > np.median(seconds)                 # the same network from the same inputs
    np.testing.assert_allclose(TabularClassifier(random_state=0, **FAST).fit(X, y)
                               .predict_proba(X),
                               TabularClassifier(random_state=0, **FAST).fit(numbers, y)
                               .predict_proba(numbers), rtol=1e-5, atol=1e-6)


def test_a_datetime_column_given_as_numbers_later_is_refused():
    X = pd.DataFrame({"when": pd.date_range("2020-01-01", periods=30, freq="D"),
                      "x": np.arange(30.0)})
    pre = TabularPreprocessor().fit(X)
    later = X.assign(when=np.arange(30.0))
    with pytest.raises(ValueError, match="'when' was datetime when fitted but is numeric"):
        pre.transform(later)


def test_complex_columns_are_refused_naming_the_dtype():
    X = pd.DataFrame({"z": np.arange(10) + 1j, "x": np.arange(10.0)})
    match = r"dtype complex128 are not supported \(Complex data not supported\); convert"
    with pytest.raises(ValueError, match=match):
        TabularPreprocessor().fit(X)


# --------------------------------------------------------------- whole numbers as categories
def id_table(n=1000, seed=0):
    """A school id whose schools differ at random (no smooth curve of the id fits them), a
    count whose effect is a smooth curve, and a noise float."""
    rng = np.random.default_rng(seed)
    school = rng.integers(1, 41, n)
    effect = rng.normal(0, 1, 41)
    count = rng.integers(0, 30, n)
    X = pd.DataFrame({"school": school, "count": count, "noise": rng.normal(size=n)})
    y = effect[school] + 0.1 * (count - 15) ** 2 / 15 + rng.normal(0, 0.3, n)
    return X, y


def test_category_gain_tells_an_id_from_a_smooth_count():
    from xpnn.sklearn._preprocessing import MIN_CATEGORY_GAIN, _target_sample, category_gain
    X, y = id_table()
    rows, Y = _target_sample(y, len(y))
    np.testing.assert_array_equal(rows, np.arange(len(y)))
    assert Y.shape == (len(y), 1) and abs(Y.mean()) < 1e-12 and abs(Y.std() - 1) < 1e-12
    school, count = X["school"].to_numpy(float), X["count"].to_numpy(float)
    z = lambda x: (x - np.median(x)) / np.subtract(*np.quantile(x, [0.75, 0.25]))  # noqa: E731
    assert category_gain(school, z(school), Y) > 0.3          # the schools' effects
    assert category_gain(count, z(count), Y) < MIN_CATEGORY_GAIN
    # class labels: one column per class
    labels = np.where(y > 0, "high", "low")
    L = _target_sample(labels, len(labels))[1]
    assert L.shape == (len(y), 2) and set(np.unique(L)) == {0.0, 1.0}
    assert category_gain(school, z(school), L) > 0.1


def test_category_gain_judges_large_tables_on_a_sample_and_caps_the_classes(monkeypatch):
    from xpnn.sklearn import _preprocessing as P
    monkeypatch.setattr(P, "MAX_GAIN_ROWS", 500)
    rows, Y = P._target_sample(np.arange(2000) % 150, 2000)       # 150 integer classes
    assert rows.shape == (500,) and np.all(np.diff(rows) > 0)
    assert Y.shape == (500, 1)                    # more than 100 integers: a real target
    rows, Y = P._target_sample((np.arange(2000) % 150).astype(str), 2000)
    assert Y.shape == (500, 100) and np.all(Y.sum(axis=1) == 1)  # 99 classes and the rest
    X, y = id_table(2000)
    pre = TabularPreprocessor(max_integer_categories=100).fit(X, y)
    assert pre.integer_columns_ == [0]


def test_whole_number_columns_that_act_as_categories_are_encoded_as_categoricals_too():
    X, y = id_table()
    pre = TabularPreprocessor(max_integer_categories=100).fit(X, y)
    assert pre.kinds_ == ["numeric"] * 3 and pre.n_numeric_out_ == 3
    assert pre.integer_columns_ == [0]                        # school, not count
    np.testing.assert_array_equal(pre.integer_values_[0], np.arange(1, 41))
    assert pre.cardinalities_ == [40]                         # > max_one_hot (9): codes
    names = pre.get_feature_names_out().tolist()
    assert names == ["school", "count", "noise", "school_code"]
    Z = pre.transform(pd.DataFrame({"school": [3, 41, 7], "count": [1, 2, 3],
                                    "noise": [0.0, 0.0, 0.0]}))
    np.testing.assert_array_equal(Z[:, 3], [2, -1, 6])       # 41 never seen: unseen code
    # without targets every whole-number column within the limit; one-hot when small enough
    every = TabularPreprocessor(max_integer_categories=100, max_one_hot=30).fit(X)
    assert every.integer_columns_ == [0, 1] and every.cardinalities_ == [40]
    assert every.n_one_hot_ == 30
    assert every.get_feature_names_out().tolist()[3:6] == ["count_0", "count_1", "count_2"]
    # too many values, fractions, two values or off: none
    assert TabularPreprocessor(max_integer_categories=39).fit(X).integer_columns_ == [1]
    assert TabularPreprocessor().fit(X, y).integer_columns_ == []
    two = pd.DataFrame({"b": [0, 1] * 10, "h": np.arange(20) / 2})
    assert TabularPreprocessor(max_integer_categories=100).fit(two).integer_columns_ == []


def test_max_integer_categories_is_checked():
    X, y = id_table(60)
    with pytest.raises(ValueError, match="max_integer_categories must be an int >= 3"):
        TabularPreprocessor(max_integer_categories=2).fit(X, y)
    with pytest.raises(ValueError, match="max_integer_categories"):
        TabularRegressor(max_integer_categories=1.5).fit(X, y)
    with pytest.raises(ValueError, match=r"y must have 60 rows \(as X\)"):
        TabularPreprocessor(max_integer_categories=10).fit(X, y[:50])


def test_estimators_learn_per_value_effects_of_an_id_column():
    """The default encodes the school id as a categorical too and fits the schools' effects,
    which the scaled number alone does not."""
    X, y = id_table(1500)
    opts = {"hidden_layer_sizes": (64, 64), "max_iter": 30, "n_ensemble": 1,
            "random_state": 0}
    Xtr, Xte, ytr, yte = X[:1200], X[1200:], y[:1200], y[1200:]
    reg = TabularRegressor(**opts).fit(Xtr, ytr)
    off = TabularRegressor(max_integer_categories=None, **opts).fit(Xtr, ytr)
    assert reg.preprocessor_.integer_columns_ == [0] and off.preprocessor_.integer_columns_ == []
    assert reg.score(Xte, yte) > off.score(Xte, yte) + 0.1
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(Xte), reg.predict(Xte))
    high = np.where(y > np.median(y), "high", "low")
    clf = TabularClassifier(**opts).fit(Xtr, high[:1200])
    assert clf.preprocessor_.integer_columns_ == [0]
    assert clf.preprocessor_.n_one_hot_ == 40                 # plain recipe: one-hot
    plain = TabularClassifier(max_integer_categories=None, **opts).fit(Xtr, high[:1200])
    assert clf.score(Xte, high[1200:]) > plain.score(Xte, high[1200:]) + 0.03



def test_auto_integer_categories_grow_with_the_rows():
    """Panel data: each of 150 firms (more ids than the fixed 100) belongs to one sector.
    ``max_integer_categories="auto"`` allows one category per 5 training rows, so with 1,200
    rows the firm id becomes a categorical and the sector is learned per firm; capped at 100,
    the id stays a number and the sector is guessed."""
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(1000, 1150))
    sector = rng.integers(0, 5, 1150)
    firm = np.repeat(ids, 9)
    X = pd.DataFrame({"firm": firm, "size": rng.normal(size=firm.size)})
    y = np.array(["abcde"[k] for k in sector[firm]])
    test = np.arange(firm.size) % 9 == 0                      # one row of every firm
    opts = {"hidden_layer_sizes": (64, 64), "max_iter": 40, "n_ensemble": 1, "random_state": 0}
    auto = TabularClassifier(**opts).fit(X[~test], y[~test])
    capped = TabularClassifier(max_integer_categories=100, **opts).fit(X[~test], y[~test])
    assert auto.preprocessor_.integer_columns_ == [0] and auto.preprocessor_.n_one_hot_ == 150
    assert capped.preprocessor_.integer_columns_ == []
    assert auto.score(X[test], y[test]) > 0.9 > capped.score(X[test], y[test]) + 0.3


# --------------------------------------------------------------------------- rare categories
def test_rare_categories_are_encoded_as_unseen_ones():
    X = pd.DataFrame({"city": ["a", "a", "a", "b", "b", "c", None, None],
                      "id": [f"n{k}" for k in range(8)],
                      "x": np.arange(8.0)})
    every = TabularPreprocessor().fit(X)
    assert [len(c) for c in every.categories_] == [4, 8]
    pre = TabularPreprocessor(min_category_count=2).fit(X)
    assert [c.tolist() for c in pre.categories_] == [["a", "b", None], []]
    assert pre.get_feature_names_out().tolist() == ["x", "city_a", "city_b", "city_None"]
    Z = pre.transform(X)
    np.testing.assert_array_equal(Z[:, 1:], [[1, 0, 0]] * 3 + [[0, 1, 0]] * 2 + [[0, 0, 0]]
                                  + [[0, 0, 1]] * 2)           # "c" (seen once): as unseen
    three = TabularPreprocessor(min_category_count=3).fit(X)
    assert [c.tolist() for c in three.categories_] == [["a"], []]
    np.testing.assert_array_equal(three.transform(X)[:, 1], [1, 1, 1, 0, 0, 0, 0, 0])
    codes = TabularPreprocessor(min_category_count=2, max_one_hot=2).fit(X)
    assert codes.cardinalities_ == [3]            # a, b, None; the ids: no column at all
    np.testing.assert_array_equal(codes.transform(X)[:, -1], [0, 0, 0, 1, 1, -1, 2, 2])
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="min_category_count must be an int >= 1"):
            TabularPreprocessor(min_category_count=bad).fit(X)


def test_estimators_leave_out_categories_seen_once():
    """A column of names, one per row, gets no columns by default (2), and the networks do
    not memorise the training rows through it."""
    X, y, _ = frame(400)
    X["name"] = [f"person{k}" for k in range(400)]
    opts = {"hidden_layer_sizes": (32,), "max_iter": 20, "n_ensemble": 1, "random_state": 0}
    clf = TabularClassifier(**opts).fit(X, y)
    names = clf.preprocessor_.get_feature_names_out().tolist()
    assert not any(n.startswith("name") for n in names)
    assert clf.preprocessor_.categories_[-1].size == 0       # the names: none kept
    every = TabularClassifier(min_category_count=1, **opts).fit(X, y)
    assert any(n.startswith("name") for n in every.preprocessor_.get_feature_names_out())
    assert clf.get_params()["min_category_count"] == 2
    with pytest.raises(ValueError, match="min_category_count"):
        TabularRegressor(min_category_count=0).fit(X, np.arange(400.0))

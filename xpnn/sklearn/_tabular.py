"""Neural networks for raw tables with nothing to tune: :class:`TabularClassifier` and
:class:`TabularRegressor`.

>>> import numpy as np
>>> import pandas as pd
>>> from xpnn.sklearn import TabularClassifier, TabularRegressor
>>> rng = np.random.default_rng(0)
>>> df = pd.DataFrame({"x": rng.normal(size=200),                     # a raw DataFrame
...                    "color": rng.choice(["red", "green", "blue"], 200)})
>>> y = np.where(df["x"] > 0, "yes", "no")
>>> clf = TabularClassifier(hidden_layer_sizes=(32,), batch_size=32, max_iter=30,
...                         random_state=0).fit(df, y)
>>> clf.predict_proba(df[:3]).shape
(3, 2)
>>> clf.score(df, y) > 0.9
True
>>> reg = TabularRegressor(hidden_layer_sizes=(32,), batch_size=32, max_iter=30,
...                        random_state=0).fit(df, 2 * df["x"])
>>> reg.score(df, 2 * df["x"]) > 0.9
True

The recipe (defaults of RealMLP, Holzmüller et al. 2024, and TabM, Gorishniy et al. 2025,
shaped to train fast on a CPU):

* :class:`~xpnn.sklearn.TabularPreprocessor` learned on the training rows: median-centred,
  robust-scaled, smoothly clipped numeric columns; missing-value indicators; one-hot columns for
  categoricals with at most ``max_one_hot`` categories, integer codes for larger ones.
  ``max_one_hot="auto"``: 9 with recipe "realmlp" (RealMLP's limit); with recipe "plain"
  every categorical is one-hot encoded, the smallest first, while the one-hot columns total
  at most ``ONE_HOT_WIDTH`` (256), so that the network has no embedding and trains on the
  fast path (measured as accurate or better on the tuning tables, and faster).
  Whole-number columns with 3 to 100 distinct values (or one per 5 training rows, where that
  is more) whose values act as categories of the target (their per-value means explain at
  least 2 % more of its variance than a smooth curve of the number, cross-validated in the
  training rows: a school id, a disk size, a firm in panel data) are encoded as categoricals
  too (``max_integer_categories``): R² 0.564 → 0.612 on star-math (school ids), 0.912 →
  0.945 on computers-price, accuracy 0.709 → 0.766 on mroz-work, with no column chosen on
  most tables. A category seen only once in the training rows counts as an
  unseen one (``min_category_count=2``), so that a column of names or ids, one per row, gives
  the networks nothing to memorise (the Titanic file with all its columns: accuracy 0.809 →
  0.832).
  Regression targets are standardised (mean 0, standard deviation 1) and mapped back.
* Network: a :class:`~xpnn.Columns` input layer when needed (learned :class:`~xpnn.Embedding` of
  the category codes, ``embedding_dim`` numbers each; optional periodic embeddings
  :class:`~xpnn.PeriodicEmbedding` of the numeric columns, ``numeric_embedding``), RealMLP's
  front :class:`~xpnn.Scale` (one learned factor per input column, ``lr × 6`` and no weight
  decay: a soft feature selection; in the classifier it raised 12 of the 21 benchmark tables
  and lowered 5, and a table of 470 noise columns rose from 0.718 to 0.780), then blocks
  of ``hidden_layer_sizes`` with an activation and dropout: ``Dense`` layers, or with ``k > 1``
  a TabM-style ensemble of k members sharing their weights (:class:`~xpnn.BatchEnsembleDense`;
  the loss is the mean of the members' losses, predictions average their probabilities);
  Softmax output with label smoothing (classification) or a linear output (regression).
* ``recipe="realmlp"`` (the regressor's default): RealMLP_TD's network and training: a learned
  :class:`~xpnn.Scale` in front, :class:`~xpnn.ParametricActivation` (Mish; SELU for
  classification), PBLD embeddings, and its per-parameter factors (``Parameter.lr_factor`` /
  ``wd_factor``): the NTK parametrisation as ``lr / √fan_in`` and ``wd · √fan_in`` on the
  weights, biases ``lr × 0.1`` without decay, PBLD and parametric activations ``lr × 0.1``,
  the scale ``lr × 6``; AdamW (lr 0.2, ``beta2 = 0.95``, weight decay 0.02), a warm-up and a
  cosine decay over 48 epochs (at most 600 steps, at least 16 epochs) with no early stop,
  the best validation epoch kept; regression predictions clipped to the range of the
  training targets (RealMLP's ``clamp_output``). The regressor trains 5 such networks of
  3×128 units (a cross-fitted ensemble, below; RealMLP_TD trains one of 3×256), measured
  better on the tuning tables (R² +0.024 penguins-mass, +0.048 wages, 5-fold
  cross-validation inside the training rows) than one network of 3×256. RealMLP_TD's other
  schedules (``coslog4`` learning rate, ``flat_cos`` dropout and weight decay,
  :class:`~xpnn.schedules.CosLog`, :class:`~xpnn.schedules.FlatCosineDecay`) and its
  ``he+5`` biases, compressed into these 48 epochs, measured no better on the tuning tables
  and are not used.
* ``recipe="plain"`` (the classifier's default, measured better there, and it trains on the
  fast path): ReLU, AdamW (lr 4e-3, ``beta2 = 0.95``, weight decay 0.01), a linear warm-up
  then a cosine decay over 128 epochs, stopping after 8 epochs without a better validation
  loss and keeping the best epoch's weights. The classifier trains 5 such networks of 3×64
  units (a cross-fitted ensemble, below).
* Batches of 256 rows. Cross-fitting: the rows are dealt into ``round(1 /
  validation_fraction)`` folds (stratified for classification), and network ``i`` of the
  ``n_ensemble`` holds out fold ``i`` to pick its best epoch and trains on the others; with as
  many networks as folds (the default: 5 networks, 20 % folds) every row trains
  four of them and no row is wasted on validation only.
* The ``n_ensemble`` networks (different random starts and validation folds) average their
  probabilities (or predictions).
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils import check_random_state, compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d

from .. import threads
from .._compiled import load_kernels
from .._validation import dtype_name
from ..backend import DTYPES, get_backend, host_rng, to_numpy
from ..callbacks import EarlyStopping, LearningRateScheduler
from ..layers import (
    BatchEnsembleDense,
    Columns,
    Dense,
    Dropout,
    Embedding,
    EnsembleDense,
    EnsembleMean,
    EnsembleView,
    ParametricActivation,
    PeriodicEmbedding,
    ReLU,
    Scale,
    Softmax,
)
from ..losses import CategoricalCrossEntropy
from ..model import Sequential
from ..optimizers import AdamW
from ..schedules import CosineDecay, Warmup
from ._params import ParamChecks
from ._preprocessing import TabularPreprocessor

__all__ = ["TabularClassifier", "TabularRegressor"]


#: Most one-hot columns of ``max_one_hot="auto"`` with recipe "plain" (categoricals beyond it,
#: the largest, get learned embeddings).
ONE_HOT_WIDTH = 256

#: Most distinct values of a whole-number column encoded as a categorical too with
#: ``max_integer_categories="auto"`` (when its values act as categories of the target): this
#: many, or one per ``ROWS_PER_INTEGER_CATEGORY`` training rows where that is more.
MAX_INTEGER_CATEGORIES = 100
ROWS_PER_INTEGER_CATEGORY = 5

#: Most optimizer steps of RealMLP's schedule with ``max_iter="auto"`` (large tables train fewer
#: than 48 epochs, at least 16): fit time grows with the rows only up to there.
MAX_STEPS = 600


def _n_rows(X):
    """Rows of a table (None when ``X`` has no length: the preprocessor then says what is
    wrong with it)."""
    try:
        return X.shape[0] if hasattr(X, "shape") and len(X.shape) else len(X)
    except TypeError:
        return None


def _front_scale_factors(model):
    """RealMLP's factors of its front scale (both recipes): ``lr × 6``, no weight decay (a soft
    feature selection that can learn to turn a useless column down within the first epochs)."""
    for layer in model.layers:
        if isinstance(layer, Scale):
            for p in layer.params:
                p.lr_factor, p.wd_factor = 6.0, 0.0


def _realmlp_factors(model):
    """RealMLP's per-parameter learning-rate and weight-decay factors (Holzmüller et al.,
    2024). Its NTK parametrisation (``y = x W / √fan_in`` with ``W ~ N(0, 1)``) trained with
    Adam equals a standard layer trained with ``lr / √fan_in`` and ``wd · √fan_in`` (Adam's
    step does not depend on the gradient's scale): those factors on every weight matrix;
    biases ``lr × 0.1`` and no weight decay; periodic embeddings and parametric activations
    ``lr × 0.1``; neither decays (the front scale's: :func:`_front_scale_factors`)."""
    for layer in model.layers:
        if isinstance(layer, (Dense, BatchEnsembleDense, EnsembleDense)):
            for p in layer.params:
                if p.name == "W":
                    root = float(np.sqrt(p.shape[0]))
                    p.lr_factor, p.wd_factor = 1.0 / root, root
                elif p.name == "b":
                    p.lr_factor, p.wd_factor = 0.1, 0.0
        elif isinstance(layer, ParametricActivation):
            for p in layer.params:
                p.lr_factor, p.wd_factor = 0.1, 0.0
        elif isinstance(layer, Columns):
            for p in (p for f in layer.layers if isinstance(f, PeriodicEmbedding)
                      for p in f.params):
                p.lr_factor, p.wd_factor = 0.1, 0.0


class _BaseTabular(BaseEstimator):
    """Shared fit/predict machinery of the tabular estimators."""

    def __init__(self, *, hidden_layer_sizes=(128, 128, 128), dropout=0.15,
                 learning_rate="auto", weight_decay="auto", batch_size=256, max_iter="auto",
                 patience="auto", validation_fraction=0.2, k=1, numeric_embedding="auto",
                 embedding_dim=8, n_ensemble=5, max_one_hot="auto", max_integer_categories="auto",
                 min_category_count=2, n_threads=1, backend="numpy", dtype="float32", recipe="auto",
                 random_state=None, verbose=0):
        self.recipe = recipe
        self.hidden_layer_sizes = hidden_layer_sizes
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.k = k
        self.numeric_embedding = numeric_embedding
        self.embedding_dim = embedding_dim
        self.n_ensemble = n_ensemble
        self.max_one_hot = max_one_hot
        self.max_integer_categories = max_integer_categories
        self.min_category_count = min_category_count
        self.n_threads = n_threads
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # ---------------------------------------------------------------- checks
    def _check_params(self):
        checks = ParamChecks(self)
        bad, real, integer = checks.bad, checks.real, checks.integer

        sizes = checks.layer_sizes("hidden_layer_sizes")
        real("dropout", 0.0, 1.0)
        if self.learning_rate != "auto":
            real("learning_rate", 0.0, np.inf)
            if self.learning_rate <= 0:
                bad("learning_rate", "'auto' or a number > 0")
        if self.recipe not in ("auto", "realmlp", "plain"):
            bad("recipe", "'auto', 'realmlp' or 'plain'")
        if self.weight_decay != "auto":
            real("weight_decay", 0.0, np.inf)
        for param in ("batch_size", "k", "embedding_dim", "n_ensemble", "min_category_count"):
            integer(param, 1)
        if self.max_one_hot != "auto":
            integer("max_one_hot", 1)
        if self.max_integer_categories not in ("auto", None):
            integer("max_integer_categories", 3)
        if self.max_iter != "auto":
            integer("max_iter", 1)
        if self.patience not in ("auto", None):
            integer("patience", 0)
        real("validation_fraction", 0.0, 1.0)
        if self.numeric_embedding not in ("auto", None, "pbld", "plr"):
            bad("numeric_embedding", "'auto', None, 'pbld' or 'plr'")
        if self.n_threads is not None:
            integer("n_threads", 1)
        if dtype_name(self.dtype, DTYPES) is None:
            bad("dtype", f"one of {DTYPES} (a name, a NumPy dtype or type)")
        return tuple(sizes)

    def _settings(self):
        """The training settings with every ``"auto"`` resolved: RealMLP's recipe for
        regression (learning rate 0.2 with its per-parameter factors, weight decay 0.02, a
        full 48-epoch schedule, at most ``MAX_STEPS`` steps, and the best epoch kept, no early
        stop; predictions clipped to the training targets' range), the plain network for
        classification (learning rate 4e-3, weight decay 0.01, a 128-epoch schedule, stop after
        8 epochs without a better validation loss), which measured better there and trains on
        the fast path. The networks' sizes (3×128 regression, 3×64 classification) and the
        ensemble of 5 cross-fitted networks are parameters' defaults."""
        recipe = self.recipe
        if recipe == "auto":
            recipe = "plain" if self._is_classifier() else "realmlp"
        realmlp = recipe == "realmlp"
        auto = {"learning_rate": (0.04 if self._is_classifier() else 0.2) if realmlp else 4e-3,
                "weight_decay": 0.02 if realmlp else 0.01,
                "max_iter": 48 if realmlp else 128}
        out = {k: v if (v := getattr(self, k)) != "auto" else auto[k] for k in auto}
        patience = self.patience
        if patience == "auto":
            patience = None if realmlp else 8
        out.update(recipe=recipe, patience=patience)
        return out

    # ---------------------------------------------------------------- fit
    def _preprocessor(self, n):
        """The preprocessing of ``n`` training rows, ``"auto"`` resolved: ``max_one_hot`` 9
        (realmlp) or one-hot columns for every categorical while they total at most
        ``ONE_HOT_WIDTH`` (plain); ``max_integer_categories`` ``MAX_INTEGER_CATEGORIES`` or
        ``n // ROWS_PER_INTEGER_CATEGORY``, the larger."""
        ints = self.max_integer_categories
        if ints == "auto":
            ints = max(MAX_INTEGER_CATEGORIES, (n or 0) // ROWS_PER_INTEGER_CATEGORY)
        one_hot, width = self.max_one_hot, None
        if one_hot == "auto":
            one_hot = 9 if self._settings()["recipe"] == "realmlp" else ONE_HOT_WIDTH
            width = None if one_hot == 9 else ONE_HOT_WIDTH
        return TabularPreprocessor(max_one_hot=one_hot, one_hot_width=width,
                                   max_integer_categories=ints,
                                   min_category_count=self.min_category_count)

    def _network(self, pre, n_out, sizes):
        """The layers: per-block input layers (:class:`~xpnn.Columns`: periodic embeddings of
        the numeric columns, the indicator and one-hot columns as they are, learned
        embeddings of the category codes), then the hidden blocks (Dense or, with ``k > 1``,
        BatchEnsembleDense members), the output layer and the output activation."""
        n_num = pre.n_numeric_out_
        n_plain = pre.n_indicators_ + pre.n_one_hot_
        variant = self.numeric_embedding
        if variant == "auto":
            variant = None if self._is_classifier() else "pbld"
        blocks = []
        if n_num and variant is not None:
            blocks.append((n_num, PeriodicEmbedding(n_num, variant=variant)))
        elif n_num:
            blocks.append((n_num, None))
        if n_plain:
            blocks.append((n_plain, None))
        if pre.cardinalities_:
            blocks.append((len(pre.cardinalities_),
                           Embedding(pre.cardinalities_, self.embedding_dim)))
        layers = []
        if any(layer is not None for _, layer in blocks):
            layers.append(Columns(blocks))
        n_in = sum(w if layer is None else layer.output_features(w) for w, layer in blocks)
        realmlp = self._settings()["recipe"] == "realmlp"
        layers.append(Scale(n_in))        # RealMLP's front scale, in both recipes
        k = self.k
        if k > 1:
            layers.append(EnsembleView(k))
        for i, width in enumerate(sizes):
            if k > 1:
                layers.append(BatchEnsembleDense(n_in, width, k,
                                                 r_init="random-signs" if i == 0 else "ones"))
            else:
                layers.append(Dense(n_in, width))
            if realmlp:
                layers.append(ParametricActivation(
                    width, "selu" if self._is_classifier() else "mish"))
            else:
                layers.append(ReLU())
            if self.dropout:
                layers.append(Dropout(self.dropout))
            n_in = width
        layers.append(EnsembleDense(n_in, n_out, k) if k > 1
                      else Dense(n_in, n_out, init="glorot"))
        if self._is_classifier():
            layers.append(Softmax())
        if k > 1:
            layers.append(EnsembleMean(k))
        return layers

    def _on_host(self) -> bool:
        """Whether the networks train with NumPy (False for another or an unknown backend:
        building the network says what is wrong with it)."""
        try:
            return get_backend(self.backend).family == "numpy"
        except Exception:
            return False

    def _is_classifier(self):
        return isinstance(self, ClassifierMixin)

    def _threads(self):
        """BLAS thread limit for fit and predict (no limit with ``n_threads=None``)."""
        if self.n_threads is None:
            return contextlib.nullcontext()
        return threads.limit_blas(self.n_threads)

    def _fit(self, X, y, sample_weight):
        with self._threads():
            return self._fit_checked(X, y, sample_weight)

    def _fit_checked(self, X, y, sample_weight):
        sizes = self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        n = _n_rows(X)
        if n == 0:
            raise ValueError(f"{type(self).__name__}: X has 0 rows; at least 1 is required")
        pre = self._preprocessor(n)
        y = self._check_y(y, n)
        targets, extra = self._encode_targets(y)
        Z = pre.fit_transform(X, targets)   # raises on bad frames before anything is set
        w = None
        if sample_weight is not None:
            w = _check_sample_weight(sample_weight, Z, dtype=np.float64)
        w = self._class_weights(y, w, extra)
        rng = check_random_state(self.random_state)
        holdouts = self._holdouts(targets, rng)
        if self._on_host():
            load_kernels()        # compiled passes for the layers, the fast path's kernels
        models, curves = [], []
        for train_idx, val_idx in holdouts:
            model, history = self._fit_one(Z, targets, w, extra, sizes, rng, pre,
                                           train_idx, val_idx)
            models.append(model)
            curves.append(history)
        vars(self).update(extra)
        self.preprocessor_ = pre
        self.n_features_in_ = pre.n_features_in_
        if hasattr(pre, "feature_names_in_"):
            self.feature_names_in_ = pre.feature_names_in_
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.models_ = models
        self.n_iter_ = [len(h["loss"]) for h in curves]
        self.best_epoch_ = [h["best_epoch"] for h in curves]
        self.loss_curve_ = [h["loss"] for h in curves]
        self.validation_loss_curve_ = [h["val_loss"] for h in curves]
        self.validation_rows_ = [val_idx for _, val_idx in holdouts]
        return self

    def _holdouts(self, targets, rng):
        """The training and validation rows of each network (cross-fitting): the rows are
        dealt into ``K = round(1 / validation_fraction)`` folds (stratified for
        classification) and network ``i`` validates on fold ``i mod K`` and trains on the
        others, a new dealing for every K networks; so K networks together train on every
        row, and each row's validation is done by a network that did not train on it.
        Without enough rows for a validation fold (or ``validation_fraction=0``) every
        network trains on every row and none is held out."""
        n = targets.shape[0]
        idx = np.arange(n)
        folds = max(2, int(round(1.0 / self.validation_fraction))) \
            if self.validation_fraction > 0 else 0
        if not folds or n // folds < 2 or n - n // folds < 2:
            return [(idx, None)] * self.n_ensemble
        out = []
        stratify = self._stratify(targets)
        while len(out) < self.n_ensemble:
            seed = int(rng.randint(np.iinfo(np.int32).max))
            if stratify is not None and np.bincount(stratify).min() >= folds:
                dealing = StratifiedKFold(folds, shuffle=True, random_state=seed)
            else:                            # a class too small to stratify
                dealing = KFold(folds, shuffle=True, random_state=seed)
            out.extend(dealing.split(idx, stratify))
        return out[:self.n_ensemble]

    def _fit_one(self, Z, targets, w, extra, sizes, rng, pre, train_idx, val_idx):
        seed = int(rng.randint(np.iinfo(np.int32).max))
        validation = None
        if val_idx is not None:
            validation = (Z[val_idx], targets[val_idx]) + (() if w is None else (w[val_idx],))
        model = Sequential(*self._network(pre, extra["_n_outputs"], sizes),
                           backend=self.backend, dtype=self.dtype, seed=seed)
        model.rng = host_rng(seed + 1)
        settings = self._settings()
        lr = settings["learning_rate"]
        if settings["recipe"] == "realmlp":
            _realmlp_factors(model)
        _front_scale_factors(model)
        epochs = settings["max_iter"]
        if self.max_iter == "auto" and settings["recipe"] == "realmlp":
            # large tables: at most MAX_STEPS optimizer steps (but 16 epochs)
            per_epoch = -(-train_idx.size // min(self.batch_size, train_idx.size))
            epochs = min(epochs, max(16, MAX_STEPS // per_epoch))
        warmup = max(1, min(8, epochs // 16))
        schedule = Warmup(CosineDecay(lr, epochs=max(1, epochs - warmup),
                                      final=lr * 1e-2), epochs=warmup)
        model.compile(loss=self._loss(),
                      optimizer=AdamW(lr, beta2=0.95,
                                      weight_decay=settings["weight_decay"]))
        callbacks = [LearningRateScheduler(schedule)]
        stopper = None
        if validation is not None:
            patience = epochs if settings["patience"] is None else max(settings["patience"], 1)
            stopper = EarlyStopping("val_loss", patience=patience, restore_best_weights=True)
            callbacks.append(stopper)
        history = model.fit(Z[train_idx], targets[train_idx],
                            epochs=epochs, batch_size=min(self.batch_size, train_idx.size),
                            validation_data=validation, callbacks=callbacks, verbose=self.verbose,
                            sample_weight=None if w is None else w[train_idx])
        curves = history.history
        return model, {"loss": list(curves["loss"]), "val_loss": list(curves.get("val_loss", [])),
                       "best_epoch": (len(curves["loss"]) - 1 if stopper is None
                                      else stopper.best_epoch)}

    def _stratify(self, targets):
        return None

    def _class_weights(self, y, w, extra):
        return w

    # ---------------------------------------------------------------- predict
    def _forward(self, X):
        """Mean of the ensemble's outputs (probabilities or standardised values), on the host."""
        Z = self.transform_features(X)
        out = None
        with self._threads():
            for model in self.models_:
                o = np.asarray(to_numpy(model.predict(Z)), dtype=np.float64)
                out = o if out is None else out + o
        return out / len(self.models_)

    def export(self, path, format: str = "onnx", member: int = 0, **options):
        """Export network ``member`` of the ensemble (its input is ``transform_features(X)``,
        its output the probabilities or the standardised prediction, which ``predict`` maps
        back and clips to ``output_range_``); see
        :meth:`xpnn.Sequential.export`.

        Parameters
        ----------
        path : str or os.PathLike
            File to write.
        format : {"onnx"}
            The format.
        member : int
            Index of the network in ``models_``.
        **options
            Passed to the writer (``opset``, ``input_name``, ``output_name`` for ONNX).

        Returns
        -------
        str
            The path written.
        """
        check_is_fitted(self, "models_")
        return self.models_[member].export(path, format=format, **options)

    def transform_features(self, X):
        """The network's input for ``X``: the fitted preprocessing, as float64 rows.

        Parameters
        ----------
        X : DataFrame or array-like (n_samples, n_features)
            A table with the columns seen by ``fit``.

        Returns
        -------
        numpy.ndarray (n_samples, n_features_out)
            ``preprocessor_.transform(X)``.
        """
        check_is_fitted(self, "models_")
        return self.preprocessor_.transform(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.non_deterministic = False
        return tags


class TabularClassifier(ClassifierMixin, _BaseTabular):
    """A neural-network classifier for raw tables, with nothing to tune.

    Takes a pandas DataFrame (numbers, str/category/bool columns, missing values) or a NumPy
    array as it is; see :mod:`xpnn.sklearn._tabular` for the recipe.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(64, 64, 64)
        Units of each hidden block (of each network of the ensemble).
    dropout : float, default=0.15
        Dropout rate after each hidden block.
    learning_rate : float or "auto", default="auto"
        Peak learning rate of AdamW (after the warm-up, before the cosine decay); "auto":
        4e-3 (plain), 0.04 / 0.2 for classification / regression (realmlp).
    weight_decay : float or "auto", default="auto"
        AdamW's decoupled weight decay; "auto": 0.01 (plain), 0.02 (realmlp).
    batch_size : int, default=256
    max_iter : int or "auto", default="auto"
        Length of the learning-rate schedule and most epochs trained; "auto": 128 (plain),
        48 but at most 600 optimizer steps and at least 16 epochs (realmlp).
    patience : int, None or "auto", default="auto"
        Epochs without a better validation loss before training stops; None: never stop
        early (the best epoch is still kept); "auto": 8 (plain), None (realmlp).
    validation_fraction : float, default=0.2
        Size of the stratified fold each network holds out to pick its best epoch: the rows
        are dealt into ``round(1 / validation_fraction)`` folds and network ``i`` validates
        on fold ``i`` (cross-fitting); 0 trains every network on every row for ``max_iter``
        epochs.
    k : int, default=1
        Members of a BatchEnsemble (TabM) network; 1: plain Dense layers.
    numeric_embedding : {"auto", None, "pbld", "plr"}, default="auto"
        Periodic embeddings of the numeric columns (RealMLP's PBLD, Gorishniy's PLR);
        ``"auto"``: none for classification (measured no better there, and the plain network
        trains on the fast path), PBLD for regression.
    embedding_dim : int, default=8
        Length of the learned vector of each category of a large categorical column.
    n_ensemble : int, default=5
        Networks trained from different random starts, each holding out another fold; their
        probabilities are averaged. With as many networks as folds (5 for the default
        ``validation_fraction``) every row trains all but one of them.
    label_smoothing : float, default=0.1
        Targets ``(1 - ε) · onehot + ε / K`` in the loss (RealMLP's ``ls_eps``;
        :class:`~xpnn.CategoricalCrossEntropy`'s ``label_smoothing``).
    class_weight : dict, "balanced" or None
        Weights of the classes, multiplied into ``sample_weight``.
    max_one_hot : int or "auto", default="auto"
        Categoricals with at most this many categories get one-hot columns, larger ones
        learned embeddings (:class:`TabularPreprocessor`); "auto": every categorical is
        one-hot encoded, the smallest first, while the one-hot columns total at most 256
        (the larger ones get embeddings), so that the networks train on the fast path
        (plain); 9 (realmlp).
    max_integer_categories : int, None or "auto", default="auto"
        Whole-number columns with 3 to this many distinct values whose values act as
        categories of the target (a school id, a product code: their per-value means explain
        at least 2 % more of the target's variance than a smooth curve of the number,
        cross-validated in the training rows) are also encoded as categoricals, besides the
        number (:class:`TabularPreprocessor`); "auto": 100, or one per 5 training rows where
        that is more (a firm id in panel data); None: never.
    min_category_count : int, default=2
        Categories of a categorical column seen fewer times than this in the training rows
        are treated as unseen ones (one-hot zeros, the embedding's reserved row): a column
        of names or ticket numbers, one per row, gives the networks nothing to memorise
        (AutoGluon's ``minimum_cat_count``; scikit-learn's ``OneHotEncoder(min_frequency=)``).
        1 keeps every category.
    n_threads : int or None, default=1
        BLAS threads while fitting and predicting on the CPU (through threadpoolctl): networks
        of this size train fastest on one thread, and several threads fighting other jobs on
        a shared machine run many times slower. None leaves the BLAS settings as they are.
    backend : str, default="numpy"
        xpnn backend of the network (``"numpy"``, ``"torch"``, ``"cupy"``, ...).
    dtype : {"float32", "float64"}, default="float32"
    recipe : {"auto", "plain", "realmlp"}, default="auto"
        The network and training (see :mod:`xpnn.sklearn._tabular`); "auto": "plain" for
        classification, "realmlp" for regression.
    random_state : int, RandomState or None
    verbose : int, default=0

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str (DataFrame input with string column names)
    preprocessor_ : TabularPreprocessor
    models_ : list of xpnn.Sequential
    n_iter_, best_epoch_ : list of int
        Epochs trained and the (0-based) epoch whose weights were kept, per network.
    loss_curve_, validation_loss_curve_ : list of list of float
    validation_rows_ : list of (ndarray of int or None)
        Row indices (of the training table) each network held out; None where none.
    """

    def __init__(self, *, hidden_layer_sizes=(64, 64, 64), dropout=0.15,
                 learning_rate="auto", weight_decay="auto", batch_size=256, max_iter="auto",
                 patience="auto", validation_fraction=0.2, k=1, numeric_embedding="auto",
                 embedding_dim=8, n_ensemble=5, label_smoothing=0.1,
                 class_weight=None, max_one_hot="auto", max_integer_categories="auto",
                 min_category_count=2, n_threads=1, backend="numpy", dtype="float32", recipe="auto",
                 random_state=None, verbose=0):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, dropout=dropout,
                         learning_rate=learning_rate, weight_decay=weight_decay,
                         batch_size=batch_size, max_iter=max_iter, patience=patience,
                         validation_fraction=validation_fraction, k=k,
                         numeric_embedding=numeric_embedding, embedding_dim=embedding_dim,
                         n_ensemble=n_ensemble, max_one_hot=max_one_hot,
                         max_integer_categories=max_integer_categories,
                         min_category_count=min_category_count, n_threads=n_threads,
                         backend=backend, dtype=dtype, recipe=recipe,
                         random_state=random_state, verbose=verbose)
        self.label_smoothing = label_smoothing
        self.class_weight = class_weight

    def _check_y(self, y, n):
        y = column_or_1d(np.asarray(y) if not hasattr(y, "dtype") else y, warn=True)
        if n is not None and y.shape[0] != n:
            raise ValueError(f"TabularClassifier: X has {n} rows but y has {y.shape[0]}")
        check_classification_targets(y)
        if type_of_target(y) not in ("binary", "multiclass"):
            raise ValueError(f"TabularClassifier: y must hold class labels, got "
                             f"{type_of_target(y)} targets")
        return y

    def _encode_targets(self, y):
        classes, codes = np.unique(y, return_inverse=True)
        if classes.shape[0] < 2:
            raise ValueError(f"TabularClassifier: y has 1 class ({classes.tolist()[0]!r}); a "
                             "classifier needs samples of at least 2 classes")
        eps = self.label_smoothing
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 <= eps < 1:
            raise ValueError(f"TabularClassifier: label_smoothing must be a number in [0, 1), "
                             f"got {eps!r}")
        return codes.astype(np.int64), {"classes_": classes, "_n_outputs": len(classes)}

    def _class_weights(self, y, w, extra):
        if self.class_weight is None:
            return w
        cw = compute_sample_weight(self.class_weight, y)
        return cw if w is None else w * cw

    def _stratify(self, codes):
        return codes

    def _loss(self):
        return CategoricalCrossEntropy(label_smoothing=float(self.label_smoothing))

    def fit(self, X, y, sample_weight=None):
        """Fit to a table ``X`` (DataFrame or array, n_samples rows) and class labels ``y``.

        Parameters
        ----------
        X : DataFrame or array-like (n_samples, n_features)
            The raw table: numbers, str/category/bool columns, missing values.
        y : array-like (n_samples,)
            Class labels, at least 2 classes.
        sample_weight : array-like (n_samples,), optional
            Non-negative weights of the rows.

        Returns
        -------
        TabularClassifier
            ``self``, fitted.
        """
        return self._fit(X, y, sample_weight)

    def predict_proba(self, X):
        """Class probabilities, the mean over the ensemble.

        Parameters
        ----------
        X : DataFrame or array-like (n_samples, n_features)
            A table with the columns seen by ``fit``.

        Returns
        -------
        numpy.ndarray (n_samples, n_classes)
            Probabilities, columns in ``classes_`` order.
        """
        return self._forward(X)

    def predict_log_proba(self, X):
        """Logarithm of the class probabilities, ``log(predict_proba(X))``.

        Parameters
        ----------
        X : DataFrame or array-like (n_samples, n_features)
            A table with the columns seen by ``fit``.

        Returns
        -------
        numpy.ndarray (n_samples, n_classes)
            Log-probabilities, columns in ``classes_`` order.
        """
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each row.

        Parameters
        ----------
        X : DataFrame or array-like (n_samples, n_features)
            A table with the columns seen by ``fit``.

        Returns
        -------
        numpy.ndarray (n_samples,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class TabularRegressor(RegressorMixin, _BaseTabular):
    """A neural-network regressor for raw tables, with nothing to tune.

    Parameters and attributes as :class:`TabularClassifier` (without ``label_smoothing``,
    ``class_weight`` and ``classes_``); ``recipe="auto"`` is ``"realmlp"`` here (RealMLP's
    network and training: a learned scale in front, PBLD embeddings of the numeric columns,
    parametric Mish, per-parameter learning-rate and weight-decay factors). The targets are
    standardised for training (``y_mean_``, ``y_scale_``) and the predictions mapped back;
    with recipe "realmlp" they are clipped to the range of the training targets
    (``output_range_``, RealMLP's ``clamp_output``). ``y`` may have several columns
    (n_samples, n_outputs).

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(128, 128, 128)
        Units of each hidden block.
    dropout : float, default=0.15
        Dropout rate after each hidden block.
    learning_rate : float or "auto", default="auto"
        Peak learning rate of AdamW; "auto": 0.2 (realmlp), 4e-3 (plain).
    weight_decay : float or "auto", default="auto"
        AdamW's decoupled weight decay; "auto": 0.02 (realmlp), 0.01 (plain).
    batch_size : int, default=256
        Rows per step.
    max_iter : int or "auto", default="auto"
        Length of the learning-rate schedule and most epochs trained; "auto": 48 but at most
        600 optimizer steps and at least 16 epochs (realmlp), 128 (plain).
    patience : int, None or "auto", default="auto"
        Epochs without a better validation loss before training stops; None: never stop
        early (the best epoch is still kept); "auto": None (realmlp), 8 (plain).
    validation_fraction : float, default=0.2
        Size of the fold each network holds out to pick its best epoch (the rows dealt into
        ``round(1 / validation_fraction)`` folds, network ``i`` validating on fold ``i``); 0
        trains on every row for ``max_iter`` epochs.
    k : int, default=1
        Members of a BatchEnsemble (TabM) network; 1: plain Dense layers.
    numeric_embedding : {"auto", None, "pbld", "plr"}, default="auto"
        Periodic embeddings of the numeric columns; ``"auto"`` is ``"pbld"``.
    embedding_dim : int, default=8
        Length of the learned vector of each category of a large categorical column.
    n_ensemble : int, default=5
        Networks trained from different random starts, each holding out another fold (a
        cross-fitted ensemble: with 5 networks and 20 % folds every row trains four of them);
        their predictions are averaged.
    max_one_hot : int or "auto", default="auto"
        Categoricals with at most this many categories get one-hot columns, larger ones
        learned embeddings; "auto": 9 (realmlp, RealMLP's limit); with recipe "plain" every
        categorical while the one-hot columns total at most 256.
    max_integer_categories : int, None or "auto", default="auto"
        Most distinct values of a whole-number column that is also encoded as a categorical
        when its values act as categories of the target (a school id: see
        :class:`TabularClassifier`); "auto": 100, or one per 5 training rows where that is
        more; None: never.
    min_category_count : int, default=2
        Categories seen fewer times in the training rows are treated as unseen (see
        :class:`TabularClassifier`).
    n_threads : int or None, default=1
        BLAS threads while fitting and predicting on the CPU (None: left as they are).
    backend : str, default="numpy"
        xpnn backend of the network.
    dtype : {"float32", "float64"}, default="float32"
        Floating type of the network.
    recipe : {"auto", "plain", "realmlp"}, default="auto"
        The network and training; "auto" is "realmlp" for regression.
    random_state : int, RandomState or None
        Initial weights, validation rows and shuffling.
    verbose : int, default=0
        Progress printed while fitting.

    Attributes
    ----------
    y_mean_, y_scale_ : float or ndarray (n_outputs,)
        Mean and standard deviation of the training targets (the networks learn
        ``(y - y_mean_) / y_scale_``).
    output_range_ : tuple (low, high) or None
        Smallest and largest training target (per output) the predictions are clipped to,
        with recipe "realmlp"; None otherwise.
    """

    def _check_y(self, y, n):
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim not in (1, 2) or (n is not None and y.shape[0] != n):
            raise ValueError(f"TabularRegressor: y must have shape ({n},) or ({n}, n_outputs), "
                             f"got {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("TabularRegressor: y holds NaN or infinite values")
        return y

    def _encode_targets(self, y):
        mean = y.mean(axis=0)
        scale = y.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        t = (y - mean) / scale
        clamp = self._settings()["recipe"] == "realmlp"       # RealMLP's clamp_output
        return t.reshape(y.shape[0], -1), {
            "y_mean_": mean, "y_scale_": scale,
            "output_range_": (y.min(axis=0), y.max(axis=0)) if clamp else None,
            "_n_outputs": 1 if y.ndim == 1 else y.shape[1]}

    def _loss(self):
        return "mse"

    def fit(self, X, y, sample_weight=None):
        """Fit to a table ``X`` (DataFrame or array, n_samples rows) and real targets ``y``.

        Parameters
        ----------
        X : DataFrame or array-like (n_samples, n_features)
            The raw table: numbers, str/category/bool columns, missing values.
        y : array-like (n_samples,) or (n_samples, n_outputs)
            Finite real targets.
        sample_weight : array-like (n_samples,), optional
            Non-negative weights of the rows.

        Returns
        -------
        TabularRegressor
            ``self``, fitted.
        """
        return self._fit(X, y, sample_weight)

    def predict(self, X):
        """Predicted targets, the mean over the ensemble, in the units of ``y``.

        Parameters
        ----------
        X : DataFrame or array-like (n_samples, n_features)
            A table with the columns seen by ``fit``.

        Returns
        -------
        numpy.ndarray (n_samples,) or (n_samples, n_outputs)
            ``output · y_scale_ + y_mean_``, clipped to ``output_range_`` (recipe
            "realmlp").
        """
        out = self._forward(X)
        out = out[:, 0] if np.ndim(self.y_mean_) == 0 else out
        out = out * self.y_scale_ + self.y_mean_
        bounds = getattr(self, "output_range_", None)
        if bounds is not None:                  # the training targets' range
            out = np.clip(out, *bounds)
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

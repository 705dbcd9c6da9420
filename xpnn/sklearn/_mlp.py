"""scikit-learn estimators trained by xpnn: :class:`MLPClassifier` and :class:`MLPRegressor`.

They are drop-in replacements for :mod:`sklearn.neural_network`'s estimators of the same names
(scikit-learn's own ``test_mlp.py`` passes against them, but for its three tests of private
internals): same parameter names and defaults, same fitted attributes, same training semantics
(minibatch ``"adam"`` or ``"sgd"`` and full-batch ``"lbfgs"``, ``alpha`` as an L2 penalty on
the weights, ``sample_weight``, ``tol`` / ``n_iter_no_change`` convergence, ``early_stopping``
on a validation split, warm starts and ``partial_fit``, ``MLPRegressor(loss="poisson")``,
sparse input), but the training runs on xpnn's backpropagation on any xpnn backend:

>>> from sklearn.datasets import load_iris
>>> from xpnn.sklearn import MLPClassifier
>>> X, y = load_iris(return_X_y=True)
>>> clf = MLPClassifier(hidden_layer_sizes=(16,), solver="lbfgs", random_state=0).fit(X, y)
>>> clf.predict_proba(X[:2]).shape
(2, 3)
>>> clf.score(X, y) > 0.9
True

With ``backend="cupy"`` and CuPy input the data stays on the GPU:
``MLPClassifier(backend="cupy").fit(X_gpu, y)``.

Two parameters are added: ``backend`` (``"numpy"``, ``"torch"``, ``"cupy"``, ...) and ``dtype``
(``None``, the default: float32 for float32 input and float64 otherwise, as scikit-learn's
parameters follow the input; or ``"float32"`` / ``"float64"`` to choose).

How scikit-learn's algorithm maps onto xpnn
-------------------------------------------
* Network: ``Dense`` layers with the hidden ``activation`` (``"identity"``, ``"logistic"``,
  ``"tanh"``, ``"relu"`` -> :class:`~xpnn.Identity`, :class:`~xpnn.Sigmoid`, :class:`~xpnn.Tanh`,
  :class:`~xpnn.ReLU`); output Softmax + categorical cross-entropy (multiclass), Sigmoid + binary
  cross-entropy (binary, multi-label), identity + squared error (regression) or a log-link
  Poisson deviance (:class:`xpnn.losses.Poisson`, ``loss="poisson"``). Weights and
  biases start as scikit-learn draws them (Glorot-uniform from ``random_state``), so both
  libraries start from the same weights for the same ``random_state``.
* Gradients equal scikit-learn's: xpnn's losses average over all outputs while scikit-learn's
  sum over them (and halve the squared error), which only rescales the gradient by a known
  constant; the step size (SGD), ``epsilon`` (Adam) and the L2 term are scaled to compensate.
  ``alpha`` is :class:`~xpnn.Dense`'s ``weight_decay`` (weights only, never biases), as
  ``alpha / batch_size``; scikit-learn divides by the size of each batch, so only a last,
  smaller batch of an epoch sees a slightly weaker penalty. With ``sample_weight`` the loss is
  the weighted mean and scikit-learn divides the penalty by the batch's weight sum; xpnn uses
  ``batch_size × mean weight`` (exact for full batches and L-BFGS).
* ``solver="lbfgs"``: :func:`scipy.optimize.minimize` (``method="L-BFGS-B"``, ``maxiter``,
  ``maxfun``, ``gtol=tol``, as scikit-learn) on :class:`xpnn.flat.FlatObjective`: the loss and
  the gradient come from the model's own forward and backward pass on its backend, and each
  evaluation moves only the parameter vector to the device and the gradient (with the loss)
  back. ``loss_curve_`` has one value per L-BFGS iteration; ``partial_fit`` does not exist.
  Sparse X on the NumPy backend goes through the first layer as SciPy sparse matmuls; other
  backends get it densified on the device.
* Sparse X (CSR/CSC) with ``"adam"``/``"sgd"`` is densified one batch at a time by
  :meth:`Sequential.fit`, never as a whole; ``predict`` densifies blocks of rows.
* ``coefs_`` / ``intercepts_`` assigned (as whole lists) before the first fit are the starting
  weights of ``partial_fit`` or of a ``warm_start`` fit, as in scikit-learn.
* Divergence: without early stopping a non-finite loss raises scikit-learn's ``ValueError``
  ("Solver produced non-finite parameter weights..."); with early stopping training stops,
  ``validation_scores_`` ends with NaN and the best validation weights are kept (scikit-learn
  keeps iterating on NaN weights to the same end).
* ``loss_curve_`` / ``loss_`` / ``best_loss_`` are in scikit-learn's convention (log loss summed
  over labels, half squared error, plus ``alpha/2 ||W||² / batch`` averaged over the epoch's
  batches). The penalty part is computed from the weights at the end of the epoch rather than
  batch by batch, an approximation that only matters for large ``alpha``.
* Adam puts ``epsilon`` where ``torch.optim.Adam`` puts it (outside the bias-corrected
  root), which differs from scikit-learn's placement by a factor ``sqrt(1 - beta_2**t)`` on
  ``epsilon``. SGD momentum is ``torch.optim.SGD``'s form, identical to scikit-learn's for a
  constant learning rate.
* Not supported: ``momentum=1`` (xpnn's SGD needs momentum < 1), raising a clear error.

Inputs: NumPy arrays, pandas DataFrames (``feature_names_in_`` is recorded) and anything
scikit-learn's ``validate_data`` accepts; arrays of the estimator's backend (CuPy arrays with
``backend="cupy"``, torch tensors with ``backend="torch"``) are used where they are, never copied
to the host. ``predict`` / ``predict_proba`` return NumPy arrays for host input and arrays of the
backend for backend input (string class labels always come back as NumPy arrays).
"""

from __future__ import annotations

import warnings

import numpy as np

try:
    import scipy.optimize
    import scipy.sparse
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import type_of_target, unique_labels
    from sklearn.utils.validation import (
        _check_sample_weight,
        check_consistent_length,
        check_is_fitted,
        column_or_1d,
        validate_data,
    )
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("xpnn.sklearn needs scikit-learn >= 1.6: pip install scikit-learn") from exc

from .. import state as model_state
from .._validation import dtype_name
from ..backend import DTYPES, backend_of, get_backend, host_rng, to_numpy
from ..callbacks import Callback
from ..errors import TrainingDivergedError
from ..flat import FlatObjective
from ..inputs import cast_finite as _cast_finite
from ..inputs import prepare_X, prepare_y
from ..layers import Dense, Identity, ReLU, Sigmoid, Softmax, Tanh
from ..model import Sequential
from ..optimizers import SGD, Adam
from ._params import ParamChecks

__all__ = ["MLPClassifier", "MLPRegressor"]

#: scikit-learn's hidden activation names -> xpnn layers.
ACTIVATIONS = {"identity": Identity, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU}

# Output activation -> (xpnn loss, xpnn_loss_value -> sklearn_loss_value factor as a function of
# the number of outputs K, gradient scale xpnn/sklearn as a function of K).
#   softmax:  both are -(1/N) Σ t log p                            -> factor 1, scale 1
#   logistic: xpnn averages over N·K, sklearn sums over K / N      -> factor K, scale 1/K
#   identity: xpnn mean((y-t)²) over N·K; sklearn 0.5·mean(...),
#             but its gradient is (y - t)/N                        -> factor 1/2, scale 2/K
#   exp:      xpnn's Poisson averages over N·K, sklearn sums over K  -> factor K, scale 1/K
_OUTPUTS = {
    "softmax": ("categorical_crossentropy", lambda k: 1.0, lambda k: 1.0),
    "logistic": ("binary_crossentropy", lambda k: float(k), lambda k: 1.0 / k),
    "identity": ("mse", lambda k: 0.5, lambda k: 2.0 / k),
    "exp": ("poisson", lambda k: float(k), lambda k: 1.0 / k),
}


def _set_lr(opt, lr):
    """Change the SGD step size the way scikit-learn's velocity form sees it.

    scikit-learn keeps ``v ← μ v - lr·g`` (the rate inside the velocity), torch.optim and xpnn
    ``b ← μ b + g`` with ``θ ← θ - lr·b``. Both agree while ``lr`` is constant; rescaling the
    momentum buffers by ``lr_old / lr_new`` when it changes keeps them equal (in place, so the
    fast path's flat buffers are updated too).
    """
    ratio = opt.lr / lr
    for state in opt.state:
        buf = state.get("momentum_buffer")
        if buf is not None:
            buf *= ratio
    opt.lr = lr


class _Monitor(Callback):
    """scikit-learn's per-iteration bookkeeping, run by :meth:`Sequential.fit` after each epoch:
    ``loss_curve_``, convergence (``tol`` / ``n_iter_no_change``), early stopping on the
    validation score, learning-rate schedules and ``verbose`` output."""

    def __init__(self, est, n_train, n_batches, validation, mean_weight=1.0):
        self.est = est
        self.n_train = n_train
        self.n_batches = n_batches
        self.validation = validation      # (X_val, t_val, w_val or None), or None
        self.mean_weight = mean_weight    # mean sample weight of the training rows
        self.converged = False
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        est, model = self.est, self.model
        loss = logs["loss"] * est._loss_factor
        if est.alpha:
            xp = model.backend.xp
            sq = sum(xp.sum(layer.W.data * layer.W.data) for layer in model.layers
                     if isinstance(layer, Dense))
            loss += (0.5 * est.alpha * float(sq) * self.n_batches
                     / (self.n_train * self.mean_weight))
        est.n_iter_ += 1
        est.t_ += self.n_train
        est.loss_ = loss
        est.loss_curve_.append(loss)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")

        if self.validation is not None:
            score = est._validation_score(*self.validation)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            if score < est.best_validation_score_ + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                self.best_weights = model_state.snapshot_weights(model)
        else:
            if loss > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if loss < est.best_loss_:
                est.best_loss_ = loss

        opt, sgd = model.optimizer, est.solver == "sgd"
        if sgd and est.learning_rate == "invscaling":
            _set_lr(opt, est.learning_rate_init / (est.t_ + 1) ** est.power_t / est._grad_scale)

        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.validation is not None else "Training loss"
            msg = (f"{what} did not improve more than tol={est.tol:f} for "
                   f"{est.n_iter_no_change} consecutive epochs.")
            if sgd and est.learning_rate == "adaptive" and opt.lr * est._grad_scale > 1e-6:
                _set_lr(opt, opt.lr / 5.0)
                est._no_improvement_count = 0
                if est.verbose:
                    print(f"{msg} Setting learning rate to {opt.lr * est._grad_scale:f}")
            else:
                if est.verbose:
                    print(f"{msg} Stopping." if not (sgd and est.learning_rate == "adaptive")
                          else f"{msg} Learning rate too small. Stopping.")
                self.converged = True
                model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:      # early stopping: keep the best epoch's weights
            model_state.restore_weights(self.model, self.best_weights)


class _BaseMLP(BaseEstimator):
    """What both estimators share; see :class:`MLPClassifier` for the parameters."""

    _estimator_name = "MLP"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="numpy", dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype

    # ------------------------------------------------------------------ parameters
    def _check_params(self):
        checks = ParamChecks(self)
        bad, real, integer = checks.bad, checks.real, checks.integer

        sizes = checks.layer_sizes("hidden_layer_sizes")
        if self.activation not in ACTIVATIONS:
            bad("activation", f"one of {sorted(ACTIVATIONS)}")
        if self.solver not in ("adam", "sgd", "lbfgs"):
            bad("solver", "'adam', 'sgd' or 'lbfgs'")
        real("alpha", 0.0)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            integer("batch_size", 1)
        if self.learning_rate not in ("constant", "invscaling", "adaptive"):
            bad("learning_rate", "'constant', 'invscaling' or 'adaptive'")
        real("learning_rate_init", 0.0, low_open=True)
        real("power_t", 0.0)
        integer("max_iter", 1)
        integer("max_fun", 1)
        real("tol", 0.0)
        real("momentum", 0.0, 1.0)
        real("validation_fraction", 0.0, 1.0)
        real("beta_1", 0.0, 1.0)
        real("beta_2", 0.0, 1.0)
        real("epsilon", 0.0, low_open=True)
        if not (self.n_iter_no_change == np.inf):
            integer("n_iter_no_change", 1)
        for flag in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                bad(flag, "a bool")
        if self.dtype is not None and dtype_name(self.dtype, DTYPES) is None:
            bad("dtype", f"None or one of {DTYPES} (a name, a NumPy dtype or type)")
        return sizes

    # ------------------------------------------------------------------ input handling
    def _on_device(self, X, backend):
        """True when X is an array of ``backend``'s library, to be used where it lives."""
        owner = backend_of(X)
        return owner is not None and owner.family == backend.family

    def _check_device_X(self, X, reset):
        """The checks ``validate_data`` makes, for a backend array (no copy to the host)."""
        be = backend_of(X)
        if X.ndim != 2:
            raise ValueError(f"Expected 2D array, got {X.ndim}D array instead")
        if X.shape[0] < 1:
            raise ValueError(f"Found array with 0 sample(s) (shape={tuple(X.shape)}) while a "
                             "minimum of 1 is required.")
        if not be.xp.isdtype(X.dtype, ("real floating", "integral", "bool")):
            raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        n_features = X.shape[1]
        if reset:
            self.n_features_in_ = n_features
            self.__dict__.pop("feature_names_in_", None)
        elif n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input.")
        return X

    def _validate_X_y(self, X, y, reset, backend):
        if self._on_device(X, backend):
            X = self._check_device_X(X, reset)
            y = np.asarray(to_numpy(y))
            check_consistent_length(X, y)
            if self._is_regressor() and y.dtype.kind not in "biuf":
                y = y.astype(np.float64)
        else:
            if backend_of(X) is not None:      # an array of another library: to the host
                X = to_numpy(X)
            X, y = validate_data(self, X, y, multi_output=True, reset=reset,
                                 accept_sparse=["csr", "csc"],
                                 dtype=(np.float64, np.float32),
                                 y_numeric=self._is_regressor())
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _validate_X(self, X):
        be = self._model.backend
        if self._on_device(X, be):
            return self._check_device_X(X, reset=False), True
        if backend_of(X) is not None:
            X = to_numpy(X)
        return validate_data(self, X, reset=False, accept_sparse=["csr", "csc"],
                             dtype=(np.float64, np.float32)), False

    def _check_weights(self, sample_weight, X):
        """Sample weights as a float64 host vector, or None (also for weights all equal to 1,
        which are the unweighted fit)."""
        if sample_weight is None:
            return None
        sw = _check_sample_weight(to_numpy(sample_weight) if backend_of(sample_weight)
                                  else sample_weight, X, dtype=np.float64,
                                  ensure_non_negative=True)
        return None if np.all(sw == 1.0) else sw

    def _resolve_dtype(self, X):
        """The model's dtype: ``dtype`` when given, else float32 for float32 X, else
        float64 (as scikit-learn's parameters follow the validated input)."""
        if self.dtype is not None:
            return dtype_name(self.dtype, DTYPES)
        return "float32" if str(X.dtype).rsplit(".", 1)[-1] == "float32" else "float64"

    def _is_regressor(self):
        return isinstance(self, RegressorMixin)

    # ------------------------------------------------------------------ the network
    def _build(self, sizes, n_features, rng):
        """A new Sequential with scikit-learn's initial weights drawn from ``rng``."""
        units = [n_features, *sizes, self.n_outputs_]
        act = ACTIVATIONS[self.activation]
        layers = []
        for i in range(len(units) - 1):
            layers.append(Dense(units[i], units[i + 1], init="glorot"))
            if i < len(units) - 2:
                layers.append(act())
        if self.out_activation_ in ("softmax", "logistic"):
            layers.append(Softmax() if self.out_activation_ == "softmax" else Sigmoid())
        model = Sequential(*layers, backend=self.backend, dtype=self._dtype)
        # scikit-learn's initialisation: W and b ~ U(±sqrt(f / (fan_in + fan_out))), f = 2 for
        # logistic, 6 otherwise, drawn in the same order from the same random state.
        factor = 2.0 if self.activation == "logistic" else 6.0
        weights = []
        for fan_in, fan_out in zip(units[:-1], units[1:], strict=True):
            bound = np.sqrt(factor / (fan_in + fan_out))
            weights.append(rng.uniform(-bound, bound, (fan_in, fan_out)))
            weights.append(rng.uniform(-bound, bound, fan_out))
        model.set_weights(weights)
        self.n_layers_ = len(units)
        return model

    def _make_optimizer(self):
        s = self._grad_scale
        if self.solver == "adam":
            return Adam(lr=self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2,
                        eps=self.epsilon * s)
        if self.solver == "sgd":
            return SGD(lr=self.learning_rate_init / s, momentum=self.momentum,
                       nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        return SGD(lr=1.0)          # L-BFGS updates the weights itself; never stepped

    def _initialize(self, sizes, n_features, rng):
        loss_name, factor, scale = _OUTPUTS[self.out_activation_]
        self._loss_factor = factor(self.n_outputs_)
        self._grad_scale = scale(self.n_outputs_)
        self._model = self._build(sizes, n_features, rng)
        self._model.compile(loss=loss_name, optimizer=self._make_optimizer())
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        if self.solver != "lbfgs":
            self._initialize_stochastic()

    def _initialize_stochastic(self):
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _load_user_weights(self, coefs, intercepts):
        """Start from ``coefs_`` / ``intercepts_`` assigned before the first fit (warm start)."""
        coefs, intercepts = list(coefs), list(intercepts)
        if len(coefs) != len(intercepts):
            raise ValueError(f"{type(self).__name__}: coefs_ has {len(coefs)} arrays but "
                             f"intercepts_ has {len(intercepts)}")
        weights = []
        for W, b in zip(coefs, intercepts, strict=True):
            weights += [np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)]
        try:
            self._model.set_weights(weights)
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__}: the coefs_ / intercepts_ set before fit "
                             f"do not fit the network: {exc}") from exc

    def _predict_output(self, X):
        """Predictions for validated X (a sparse X is densified batch by batch by
        :meth:`Sequential.predict`)."""
        return self._output(self._model.predict(X))

    def _output(self, out):
        """Predictions from the network output (the identity but for the Poisson loss)."""
        return out

    def _validation_score(self, X_val, t_val, w_val):
        """The validation score (NaN when the predictions are not finite, as scikit-learn)."""
        out = self._predict_output(X_val)
        xp = self._model.backend.xp
        if not bool(xp.all(xp.isfinite(out))):
            return float("nan")
        return self._device_score(out, t_val, w_val)

    # ------------------------------------------------------------------ training
    def _fit(self, X, y, sample_weight=None, incremental=False):
        """:meth:`_fit_once`, undone when it raises: the estimator keeps its previous fit
        (fitted attributes, network, weights and optimizer state)."""
        saved = dict(self.__dict__)
        model = saved.get("_model")
        in_place = model is not None and (incremental or self.warm_start)
        if in_place:      # trained in place: keep what training changes
            model_dict = dict(model.__dict__)
            decays = [(layer, layer.weight_decay) for layer in model.layers
                      if isinstance(layer, Dense)]
            saved_state = model_state.snapshot(model)
        try:
            return self._fit_once(X, y, sample_weight, incremental)
        except Exception:
            self.__dict__.clear()
            self.__dict__.update(saved)
            if in_place:
                model.__dict__.clear()
                model.__dict__.update(model_dict)
                for layer, decay in decays:
                    layer.weight_decay = decay
                model_state.restore(model, saved_state)
            raise

    def _fit_once(self, X, y, sample_weight, incremental):
        sizes = self._check_params()
        backend = get_backend(self.backend)
        fitted = "_model" in self.__dict__
        user = (not fitted and "_user_coefs" in self.__dict__
                and "_user_intercepts" in self.__dict__ and (self.warm_start or incremental))
        first_pass = (not fitted and not user) or (not self.warm_start and not incremental)
        fresh = first_pass or user
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        X, y = self._validate_X_y(X, y, reset=fresh, backend=backend)
        sw = self._check_weights(sample_weight, X)
        if fresh:
            self._dtype = self._resolve_dtype(X)
        targets, y_score, stratify = self._encode_targets(y, incremental, fresh)

        rng = check_random_state(self.random_state)
        if fresh:
            self._initialize(sizes, X.shape[1], rng)
            if user:
                self._load_user_weights(self.__dict__.pop("_user_coefs"),
                                        self.__dict__.pop("_user_intercepts"))
        elif not incremental:                    # warm start: same weights, new optimizer
            self._model.compile(loss=self._model.loss, optimizer=self._make_optimizer())
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, targets, sw)
        else:
            if not hasattr(self, "_no_improvement_count"):   # first stochastic fit
                self._initialize_stochastic()
            self._fit_stochastic(X, targets, y_score, stratify, sw, rng, incremental)
        return self

    def _set_decay(self, weight_sum):
        """scikit-learn's penalty ``alpha/2 ||W||² / Σw`` as each Dense's weight_decay."""
        decay = self.alpha * self._grad_scale / weight_sum
        for layer in self._model.layers:
            if isinstance(layer, Dense):
                layer.weight_decay = decay

    def _penalty(self, theta, objective, weight_sum):
        """``alpha/2 Σ||W||² / Σw`` for the flat parameters ``theta`` (on the host)."""
        total, start = 0.0, 0
        for p, n in zip(objective.params, objective.sizes, strict=True):
            if p.name == "W":
                part = theta[start:start + n]
                total += float(part @ part)
            start += n
        return 0.5 * self.alpha * total / weight_sum

    def _fit_lbfgs(self, X, targets, sw):
        """Full-batch L-BFGS-B (SciPy) on scikit-learn's objective, with the loss and the
        gradient from xpnn's backpropagation on the model's backend."""
        model = self._model
        be = model.backend
        n = X.shape[0]
        weight_sum = float(n if sw is None else np.sum(sw))
        self._set_decay(weight_sum)
        if scipy.sparse.issparse(X):
            if be.family == "numpy":   # X W and Xᵀ δ of the first layer as SciPy sparse matmuls
                Xd = scipy.sparse.csr_matrix(X, dtype=self._dtype)
            else:                      # other backends: the matrix densified on the device
                Xd = prepare_X(model, X.toarray())
        else:
            Xd = prepare_X(model, X)
        td = prepare_y(model, targets, n)
        wd = None if sw is None else be.asarray(sw, dtype=self._dtype)
        objective = FlatObjective(model, Xd, td, wd)
        scale = self._grad_scale
        # scikit-learn's loss_ from its gradient's objective (they differ only for the
        # squared error with several outputs, whose reported loss is averaged over them)
        to_loss = self._loss_factor * scale

        def fun(theta):
            value, grad = objective(theta)
            return value / scale, grad / scale

        def reported(value, theta):
            penalty = self._penalty(theta, objective, weight_sum)
            return (value - penalty) * to_loss + penalty

        def callback(intermediate_result):
            loss = reported(float(intermediate_result.fun), intermediate_result.x)
            self.loss_curve_.append(loss)
            if self.verbose:
                print(f"Iteration {len(self.loss_curve_)}, loss = {loss:.8f}")

        theta0 = objective.get()
        result = scipy.optimize.minimize(
            fun, theta0, method="L-BFGS-B", jac=True, callback=callback,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        self.n_iter_ = min(int(result.nit), self.max_iter)
        if not (np.all(np.isfinite(result.x)) and np.isfinite(result.fun)):
            objective.set(theta0)
            raise ValueError("Solver produced non-finite parameter weights. The input data may "
                             "contain large values and need to be preprocessed.")
        objective.set(result.x)
        self.loss_ = reported(float(result.fun), result.x)
        if result.status != 0:
            msg = (f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                   f"(status={result.status}):\n{result.message}\n")
            if self.n_iter_ == self.max_iter:
                msg += (f"\nIncrease the number of iterations to improve the convergence "
                        f"(max_iter={self.max_iter}).")
            warnings.warn(msg, ConvergenceWarning, stacklevel=4)

    def _fit_stochastic(self, X, targets, y_score, stratify, sw, rng, incremental):
        model = self._model
        be, xp = model.backend, model.backend.xp
        n_samples = X.shape[0]
        on_device = self._on_device(X, be)

        validation = None
        if self.early_stopping:
            train_idx, val_idx = train_test_split(np.arange(n_samples), random_state=rng,
                                                  test_size=self.validation_fraction,
                                                  stratify=stratify)
            if val_idx.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            if on_device:
                ti, vi = (be.asarray(i, dtype="int64") for i in (train_idx, val_idx))
                X_train, X_val = xp.take(X, ti, axis=0), xp.take(X, vi, axis=0)
            elif scipy.sparse.issparse(X):
                X = scipy.sparse.csr_matrix(X)
                X_train, X_val = X[train_idx], X[val_idx]
            else:
                X_train, X_val = X[train_idx], be.asarray(X[val_idx], dtype=self._dtype)
            t_val = be.asarray(y_score[val_idx],
                               dtype="int64" if y_score.dtype.kind == "i" else self._dtype)
            w_val = None if sw is None else be.asarray(sw[val_idx], dtype=self._dtype)
            validation = (X_val, t_val, w_val)
            targets = targets[train_idx]
            sw = None if sw is None else sw[train_idx]
        else:
            X_train = X
        n_train = X_train.shape[0]

        if self.batch_size == "auto":
            batch_size = min(200, n_train)
        else:
            if self.batch_size > n_train:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped", stacklevel=4)
            batch_size = int(np.clip(self.batch_size, 1, n_train))
        # scikit-learn divides each batch's penalty by the batch's weight sum; xpnn's per-layer
        # decay is one number: the batch size times the mean weight
        mean_weight = 1.0 if sw is None else float(np.mean(sw))
        self._set_decay(batch_size * mean_weight)
        model.rng = host_rng(int(rng.randint(np.iinfo(np.int32).max)))

        monitor = _Monitor(self, n_train, -(-n_train // batch_size), validation, mean_weight)
        self.n_iter_ = 0
        try:
            model.fit(X_train, targets, epochs=1 if incremental else self.max_iter,
                      batch_size=batch_size, shuffle=self.shuffle, callbacks=[monitor],
                      verbose=0, sample_weight=sw)
        except TrainingDivergedError as exc:
            if validation is None:
                raise ValueError("Solver produced non-finite parameter weights. The input data "
                                 "may contain large values and need to be preprocessed."
                                 ) from exc
            # scikit-learn keeps going with NaN scores and ends on the best validation
            # weights; xpnn stops at the first non-finite loss and does the same
            self.n_iter_ += 1
            self.t_ += n_train
            self.loss_ = float("nan")
            self.loss_curve_.append(float("nan"))
            self.validation_scores_.append(float("nan"))
            monitor.on_train_end()
            warnings.warn(f"Training diverged (non-finite loss) in iteration {self.n_iter_}; "
                          "stopped with the weights of the best validation score.",
                          ConvergenceWarning, stacklevel=4)
            return
        if not incremental and not monitor.converged and self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning,
                          stacklevel=4)

    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            NumPy array, SciPy CSR/CSC matrix, pandas DataFrame, or an array of the
            estimator's backend.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classification, any type; a label-indicator matrix for multi-label)
            or real targets (regression).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative sample weights: the loss is their weighted mean and the L2 penalty is
            divided by their sum (per batch for ``"adam"``/``"sgd"``).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _check_solver(self):
        if self.solver not in ("adam", "sgd"):
            raise AttributeError("partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    # ------------------------------------------------------------------ inference
    def _forward(self, X):
        """Predictions for X: a backend array for backend input, else a NumPy array in X's
        validated dtype (float64 unless X is float32, as scikit-learn returns)."""
        check_is_fitted(self)
        X, on_device = self._validate_X(X)
        out = self._predict_output(X)
        if on_device:
            return out, True
        return to_numpy(out).astype(X.dtype, copy=False), False

    def _require_model(self, attr):
        """Fitted attributes exist only after fit: AttributeError (as scikit-learn's) before."""
        if "_model" not in self.__dict__:
            raise AttributeError(f"{attr} is available after fit")

    def _weights(self, name):
        check_is_fitted(self)
        return [np.array(to_numpy(getattr(layer, name).data), copy=True)
                for layer in self._model.layers if isinstance(layer, Dense)]

    def _set_weights(self, name, arrays):
        check_is_fitted(self)
        dense = [layer for layer in self._model.layers if isinstance(layer, Dense)]
        arrays = list(arrays)
        if len(arrays) != len(dense):
            raise ValueError(f"{name}: expected {len(dense)} arrays, got {len(arrays)}")
        current = self._model.get_weights()
        slot = 0 if name == "coefs_" else 1
        for i, a in enumerate(arrays):
            current[2 * i + slot] = a
        self._model.set_weights(current)

    @property
    def coefs_(self):
        """Weight matrices, one per layer (a NumPy copy of the xpnn model's ``W``).

        Assigned before the first fit (a list of arrays), they are the starting weights of
        ``partial_fit`` or of a ``warm_start`` fit, as in scikit-learn."""
        if "_model" not in self.__dict__ and "_user_coefs" in self.__dict__:
            return self._user_coefs
        self._require_model("coefs_")
        return self._weights("W")

    @coefs_.setter
    def coefs_(self, arrays):
        if "_model" not in self.__dict__:
            self.__dict__["_user_coefs"] = arrays if isinstance(arrays, list) else list(arrays)
            return
        self._set_weights("coefs_", arrays)

    @property
    def intercepts_(self):
        """Bias vectors, one per layer (a NumPy copy of the xpnn model's ``b``); assignable
        before the first fit like :attr:`coefs_`."""
        if "_model" not in self.__dict__ and "_user_intercepts" in self.__dict__:
            return self._user_intercepts
        self._require_model("intercepts_")
        return self._weights("b")

    @intercepts_.setter
    def intercepts_(self, arrays):
        if "_model" not in self.__dict__:
            self.__dict__["_user_intercepts"] = (arrays if isinstance(arrays, list)
                                                 else list(arrays))
            return
        self._set_weights("intercepts_", arrays)

    @property
    def model_(self):
        """The trained :class:`xpnn.Sequential` (its output layer included)."""
        self._require_model("model_")
        return self._model

    def export(self, path, format: str = "onnx", **options):
        """Write the trained network for inference elsewhere (see
        :meth:`xpnn.Sequential.export`); returns the path. The graph maps ``x`` to the
        network's outputs: ``predict_proba``'s columns for a multi-class classifier, the
        probability of ``classes_[1]`` for a binary one, the predictions for a regressor
        (their logarithm for ``loss="poisson"``: apply ``exp``).

        Parameters
        ----------
        path : str or os.PathLike
            File to write.
        format : {"onnx"}
            The format.
        **options
            Passed to the writer (``opset``, ``input_name``, ``output_name`` for ONNX).

        Returns
        -------
        str
            The path written.
        """
        return self.model_.export(path, format=format, **options)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by xpnn; scikit-learn's ``MLPClassifier`` API.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default=(100,)
        Units of each hidden layer (``()`` for none: logistic regression).
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        Hidden activation.
    solver : {"adam", "sgd", "lbfgs"}, default="adam"
        Minibatch Adam or SGD, or full-batch L-BFGS (SciPy's L-BFGS-B).
    alpha : float, default=1e-4
        L2 penalty on the weights: ``alpha/2 · Σ||W||²`` divided by the batch size is added to
        each batch's loss.
    batch_size : int or "auto", default="auto"
        ``"auto"`` is ``min(200, n_samples)``.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Schedule for ``solver="sgd"``: ``invscaling`` sets ``lr = learning_rate_init /
        (t + 1) ** power_t`` after each epoch (``t`` samples seen); ``adaptive`` divides the
        rate by 5 each time ``n_iter_no_change`` epochs pass without improvement.
    learning_rate_init, power_t : float
    max_iter : int, default=200
        Maximum number of epochs (L-BFGS iterations for ``"lbfgs"``; ``ConvergenceWarning``
        when reached without converging).
    shuffle : bool, default=True
    random_state : int, RandomState or None
        Initial weights, the early-stopping split and the shuffling order.
    tol : float, default=1e-4
    verbose : bool, default=False
    warm_start : bool, default=False
        Continue from the previous solution on the next ``fit`` (with a fresh optimizer, as
        scikit-learn).
    momentum : float in [0, 1), default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data; stop when the validation accuracy has not
        improved by ``tol`` for ``n_iter_no_change`` epochs, and keep the best epoch's weights.
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float
        Adam's parameters.
    n_iter_no_change : int, default=10
    max_fun : int, default=15000
        Maximum number of loss evaluations of ``"lbfgs"``.
    backend : str, default="numpy"
        xpnn backend to train on: ``"numpy"``, ``"torch"``, ``"cupy"``, ``"array_api_strict"``.
    dtype : {None, "float32", "float64"}, default=None
        Floating type of the weights and computations; None: float32 for float32 input,
        float64 otherwise (scikit-learn's rule), fixed at the first fit.

    Attributes
    ----------
    classes_ : ndarray
        Class labels (any type).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X was a DataFrame with string column names.
    loss_, loss_curve_, best_loss_ : float, list of float, float or None
        Training loss (scikit-learn's convention), per epoch; ``best_loss_`` is None with
        early stopping.
    validation_scores_, best_validation_score_ : list of float or None, float or None
        Validation accuracy per epoch (early stopping only).
    n_iter_ : int
        Epochs (L-BFGS iterations) run by the last ``fit`` (1 after ``partial_fit``).
    t_ : int
        Training samples seen.
    coefs_, intercepts_ : list of ndarray
        Weights and biases per layer, NumPy copies of the model's parameters.
    n_layers_, n_outputs_, out_activation_ :
        As scikit-learn.
    model_ : xpnn.Sequential
        The trained network.
    """

    def _encode_targets(self, y, incremental, first_pass):
        """Fit / check the label binarizer; returns (model targets, validation targets, the
        labels the early-stopping split stratifies on: scikit-learn's binarized column for a
        binary problem, else None)."""
        if first_pass and not incremental:
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same "
                                     "classes as in the previous call to fit. Previously got "
                                     f"{self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        binary = self._label_binarizer.transform(y)
        if first_pass:
            self.n_outputs_ = binary.shape[1]
            multiclass = self._label_binarizer.y_type_ == "multiclass"
            self.out_activation_ = "softmax" if multiclass else "logistic"
        stratify = binary.astype(bool) if self.n_outputs_ == 1 else None
        if self.out_activation_ == "softmax":
            labels = np.argmax(binary, axis=1).astype(np.int64)
            return labels, labels, stratify
        binary = binary.astype(self._dtype)
        return binary, binary, stratify

    @available_if(_BaseMLP._check_solver)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch of training on (X, y) (``solver="adam"`` or ``"sgd"`` only).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
        sample_weight : array-like of shape (n_samples,), optional
        classes : array of shape (n_classes,), optional
            All the classes, required on the first call (``y`` need not contain all of them).
        """
        if "_model" not in self.__dict__:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
            self.classes_ = self._label_binarizer.classes_
        elif classes is not None and not np.array_equal(unique_labels(classes), self.classes_):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                             f"partial_fit, was: {self.classes_!r}")
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _device_score(self, out, t, w=None):
        """Accuracy (subset accuracy for multi-label), weighted by ``w`` when given, on the
        device; one float back."""
        xp = self._model.backend.xp
        if self.out_activation_ == "softmax":
            correct = xp.argmax(out, axis=1) == t
        else:
            correct = xp.all((out > 0.5) == (t > 0.5), axis=1)
        correct = xp.astype(correct, out.dtype)
        if w is None:
            return float(xp.mean(correct))
        return float(xp.sum(w * correct) / xp.sum(w))

    def predict(self, X):
        """Class labels for X.

        Parameters
        ----------
        X : array-like or sparse matrix (n_samples, n_features)
            The inputs; an array of the model's backend (a CuPy array on the GPU) stays there.

        Returns
        -------
        array (n_samples,) or (n_samples, n_classes)
            Labels of the type of ``classes_``; an indicator matrix for multi-label.
        """
        out, on_device = self._forward(X)
        if not on_device:
            y_pred = out
            if self.n_outputs_ == 1:
                y_pred = y_pred.ravel()
            return self._label_binarizer.inverse_transform(y_pred)
        xp = self._model.backend.xp
        if self._label_binarizer.y_type_ == "multilabel-indicator":
            return xp.astype(out > 0.5, xp.int64)
        if self.out_activation_ == "softmax":
            index = xp.argmax(out, axis=1)
        else:
            index = xp.astype(out[:, 0] > 0.5, xp.int64)
        if len(self.classes_) == 1:
            index = index * 0
        if self.classes_.dtype.kind in "biuf":
            return xp.take(self._model.backend.asarray(self.classes_), index, axis=0)
        return self.classes_[to_numpy(index)]

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like or sparse matrix (n_samples, n_features)
            The inputs; an array of the model's backend (a CuPy array on the GPU) stays there.

        Returns
        -------
        array (n_samples, n_classes)
            Probabilities, columns in ``classes_`` order.
        """
        out, on_device = self._forward(X)
        if self.n_outputs_ == 1:
            if on_device:
                return self._model.backend.xp.concat([1.0 - out, out], axis=1)
            return np.hstack([1.0 - out, out])
        return out

    def predict_log_proba(self, X):
        """Logarithm of the class probabilities, ``log(predict_proba(X))``.

        Parameters
        ----------
        X : array-like or sparse matrix (n_samples, n_features)
            The inputs; an array of the model's backend (a CuPy array on the GPU) stays there.

        Returns
        -------
        array (n_samples, n_classes)
            Log-probabilities, columns in ``classes_`` order.
        """
        proba = self.predict_proba(X)
        return backend_of(proba).xp.log(proba) if backend_of(proba) else np.log(proba)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy (subset accuracy for multi-label) on (X, y).

        Parameters
        ----------
        X : array-like or sparse matrix (n_samples, n_features)
            The inputs; an array of the model's backend (a CuPy array on the GPU) stays there.
        y : array-like (n_samples,) or (n_samples, n_classes)
            True labels.
        sample_weight : array-like (n_samples,), optional
            Weights of the rows.

        Returns
        -------
        float
            ``Σ w_n [pred_n = y_n] / Σ w_n``.
        """
        return float(accuracy_score(to_numpy(y), to_numpy(self.predict(X)),
                                    sample_weight=sample_weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by xpnn; scikit-learn's ``MLPRegressor`` API.

    Parameters and attributes are those of :class:`MLPClassifier` (without ``classes_``),
    plus ``loss``. ``validation_scores_`` holds the validation R².

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        ``"squared_error"``: half the squared error, identity output. ``"poisson"``: half the
        Poisson deviance with a log link: the network's output is ``log μ`` and ``predict``
        returns ``μ = exp(output)``; targets must be >= 0.
    hidden_layer_sizes : int or sequence of int, default=(100,)
        Units of each hidden layer (``()`` for none: linear regression).
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        Hidden activation.
    solver : {"adam", "sgd", "lbfgs"}, default="adam"
        Minibatch Adam or SGD, or full-batch L-BFGS.
    alpha : float, default=1e-4
        L2 penalty on the weights.
    batch_size : int or "auto", default="auto"
        ``"auto"`` is ``min(200, n_samples)``.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Schedule for ``solver="sgd"``, as :class:`MLPClassifier`.
    learning_rate_init, power_t : float
        Initial rate; exponent of ``"invscaling"``.
    max_iter : int, default=200
        Maximum number of epochs (L-BFGS iterations).
    shuffle : bool, default=True
        Reshuffle the rows every epoch.
    random_state : int, RandomState or None
        Initial weights, the early-stopping split and the shuffling order.
    tol : float, default=1e-4
        Smallest improvement of the loss (or validation score) that counts.
    verbose : bool, default=False
        Print the loss of every epoch.
    warm_start : bool, default=False
        Continue from the previous solution on the next ``fit``.
    momentum, nesterovs_momentum : float, bool
        SGD's momentum in [0, 1) and whether it is Nesterov's.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data; stop when the validation R² has not
        improved by ``tol`` for ``n_iter_no_change`` epochs, keeping the best weights.
    validation_fraction : float, default=0.1
        Fraction held out for early stopping.
    beta_1, beta_2, epsilon : float
        Adam's parameters.
    n_iter_no_change : int, default=10
        Epochs without improvement before stopping.
    max_fun : int, default=15000
        Maximum number of loss evaluations of ``"lbfgs"``.
    backend : str, default="numpy"
        xpnn backend to train on.
    dtype : {None, "float32", "float64"}, default=None
        Floating type (None: float32 for float32 input, float64 otherwise).
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="numpy", dtype=None):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, backend=backend, dtype=dtype)
        self.loss = loss

    def _check_params(self):
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"MLPRegressor: loss must be 'squared_error' or 'poisson', got "
                             f"{self.loss!r}")
        return super()._check_params()

    def _encode_targets(self, y, incremental, first_pass):
        if first_pass:
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif (1 if y.ndim == 1 else y.shape[1]) != self.n_outputs_:
            raise ValueError(f"y has {1 if y.ndim == 1 else y.shape[1]} outputs but the model "
                             f"was fitted with {self.n_outputs_}")
        if self.out_activation_ == "exp" and y.size and np.min(y) < 0:
            raise ValueError("Some value(s) of y are negative which is not allowed for "
                             "Poisson regression.")
        y = _cast_finite(y, self._dtype, "y")     # 1e300 is inf in float32: refused
        return y, y, None

    @available_if(_BaseMLP._check_solver)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch of training on (X, y) (``solver="adam"`` or ``"sgd"`` only)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _output(self, out):
        return self._model.backend.xp.exp(out) if self.out_activation_ == "exp" else out

    def _device_score(self, out, t, w=None):
        """R² averaged over outputs (scikit-learn's ``r2_score``, weighted by ``w`` when
        given), on the device."""
        xp = self._model.backend.xp
        if t.ndim == 1:
            t = xp.reshape(t, (-1, 1))
        if w is None:
            w = xp.ones((t.shape[0],), dtype=out.dtype, device=out.device)
        w = xp.reshape(w, (-1, 1))
        mean = xp.sum(w * t, axis=0) / xp.sum(w)
        sse = xp.sum(w * (t - out) ** 2, axis=0)
        sst = xp.sum(w * (t - mean) ** 2, axis=0)
        safe = xp.where(sst > 0, sst, xp.ones_like(sst))
        r2 = xp.where(sst > 0, 1.0 - sse / safe,
                      xp.where(sse > 0, xp.zeros_like(sse), xp.ones_like(sse)))
        return float(xp.mean(r2))

    def predict(self, X):
        """Predicted targets.

        Parameters
        ----------
        X : array-like or sparse matrix (n_samples, n_features)
            The inputs; an array of the model's backend (a CuPy array on the GPU) stays there.

        Returns
        -------
        array (n_samples,) or (n_samples, n_outputs)
            The predictions (``exp`` of the network's output for ``loss="poisson"``).
        """
        out, on_device = self._forward(X)
        if out.shape[1] == 1:
            return self._model.backend.xp.reshape(out, (-1,)) if on_device else out.ravel()
        return out

    def score(self, X, y, sample_weight=None):
        """R² of the predictions (averaged over outputs).

        Parameters
        ----------
        X : array-like or sparse matrix (n_samples, n_features)
            The inputs; an array of the model's backend (a CuPy array on the GPU) stays there.
        y : array-like (n_samples,) or (n_samples, n_outputs)
            True targets.
        sample_weight : array-like (n_samples,), optional
            Weights of the rows.

        Returns
        -------
        float
            ``1 - Σ w (y - ŷ)² / Σ w (y - ȳ)²``, averaged over the outputs.
        """
        return float(r2_score(to_numpy(y), to_numpy(self.predict(X)),
                              sample_weight=sample_weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

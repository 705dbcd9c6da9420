"""scikit-learn estimators trained by xpnn.

* :class:`MLPClassifier` / :class:`MLPRegressor` (:mod:`xpnn.sklearn._mlp`): drop-in replacements
  for :mod:`sklearn.neural_network`'s estimators of the same names.

* :class:`TabularClassifier` / :class:`TabularRegressor` (:mod:`xpnn.sklearn._tabular`): neural
  networks for raw tables (DataFrames with categorical columns and missing values), nothing to
  tune.
* :class:`TabularPreprocessor` (:mod:`xpnn.sklearn._preprocessing`): robust scaling with a
  smooth clip, missing-value indicators and categorical encodings of a raw table (a
  scikit-learn transformer, usable on its own).

>>> from xpnn.sklearn import MLPClassifier, MLPRegressor
"""

from ._mlp import ACTIVATIONS, MLPClassifier, MLPRegressor
from ._preprocessing import TabularPreprocessor
from ._tabular import TabularClassifier, TabularRegressor

__all__ = ["ACTIVATIONS", "MLPClassifier", "MLPRegressor", "TabularClassifier",
           "TabularPreprocessor", "TabularRegressor"]

"""scikit-learn estimators trained by xpnn.

* :class:`MLPClassifier` / :class:`MLPRegressor` (:mod:`xpnn.sklearn._mlp`): drop-in replacements
  for :mod:`sklearn.neural_network`'s estimators of the same names.

>>> from xpnn.sklearn import MLPClassifier, MLPRegressor
"""

from ._mlp import ACTIVATIONS, MLPClassifier, MLPRegressor

__all__ = ["ACTIVATIONS", "MLPClassifier", "MLPRegressor"]

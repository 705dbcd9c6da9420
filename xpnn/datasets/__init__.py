"""Datasets for examples and tests.

Every loader returns NumPy arrays ready for a model:

====================================  ==========================================  =========
function                              returns                                     source
====================================  ==========================================  =========
:func:`load_xor`                      X (4, 2) float, y (4,) int                  built in
:func:`load_mnist`                    (X (60000, 784) uint8, y int), test 10000   download
:func:`load_mnist` ``("fashion")``    same shapes, Fashion-MNIST                  download
:func:`load_titanic`                  X (891, 16) float, y (891,) int {0, 1}      Kaggle
:func:`load_diabetes`                 X (442, 10) float, y (442,) float           sklearn
:func:`load_student_performance`      X (10000, 5) float, y (10000,) float        Kaggle
====================================  ==========================================  =========

Files live in the data home (:func:`get_data_home`): the ``data_home=`` argument, else
the ``XPNN_DATA`` environment variable, else a per-user cache (``~/.cache/xpnn`` on
Linux, honouring ``XDG_CACHE_HOME``). Datasets with a public download (MNIST,
Fashion-MNIST) are fetched once and checked with SHA-256; Kaggle data must be placed
there by hand, and a missing file raises :class:`DatasetNotFoundError` naming the path.

Only NumPy is needed to import this package; Titanic needs pandas and scikit-learn,
diabetes scikit-learn.
"""

from ._home import (
    ChecksumError,
    ChecksumWarning,
    DatasetNotFoundError,
    get_data_home,
)
from .idx import IDXFormatError, load_idx_images, load_idx_labels, read_idx, write_idx
from .mnist import FASHION_MNIST_CLASSES, load_mnist
from .tabular import (
    STUDENT_FEATURES,
    load_diabetes,
    load_student_performance,
    load_titanic,
    load_xor,
    titanic_preprocessor,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "STUDENT_FEATURES",
    "ChecksumError",
    "ChecksumWarning",
    "DatasetNotFoundError",
    "IDXFormatError",
    "get_data_home",
    "load_diabetes",
    "load_idx_images",
    "load_idx_labels",
    "load_mnist",
    "load_student_performance",
    "load_titanic",
    "load_xor",
    "read_idx",
    "titanic_preprocessor",
    "write_idx",
]

"""xpnn: a readable neural-network library with hand-written backpropagation.

The same code runs on NumPy (default), CuPy (``backend="cupy"``), PyTorch tensors
(``backend="torch"``) and array-api-strict, through the Python array API standard.

>>> import numpy as np
>>> import xpnn
>>> rng = np.random.default_rng(0)
>>> X_train = rng.random((512, 784), dtype=np.float32)     # 512 "images" of 784 pixels
>>> y_train = rng.integers(0, 10, size=512)                # their classes, 0-9
>>> model = xpnn.Sequential(xpnn.Dense(784, 128), xpnn.ReLU(), xpnn.Dense(128, 10),
...                         xpnn.Softmax(), seed=0)
>>> model.compile(loss="crossentropy", optimizer=xpnn.Adam(1e-3), metrics=["accuracy"])
Sequential(...)
>>> history = model.fit(X_train, y_train, epochs=5, batch_size=128, verbose=0)
>>> sorted(history.history)
['accuracy', 'loss', 'lr']
>>> model.predict(X_train[:2]).shape                       # class probabilities
(2, 10)
"""

from . import distributed, schedules
from .backend import (
    BACKENDS,
    Backend,
    BackendUnavailableError,
    available_backends,
    get_backend,
    to_numpy,
)
from .builders import mlp
from .callbacks import (
    Callback,
    DropoutScheduler,
    EarlyStopping,
    History,
    LearningRateScheduler,
    ReduceLROnPlateau,
    WeightDecayScheduler,
)
from .checkpoint import BackupAndRestore, ModelCheckpoint
from .errors import TrainingDivergedError
from .layers import (
    BatchEnsembleDense,
    Columns,
    Dense,
    Dropout,
    Embedding,
    EnsembleDense,
    EnsembleMean,
    EnsembleScale,
    EnsembleView,
    Identity,
    Layer,
    LayerNorm,
    LeakyReLU,
    Parameter,
    ParametricActivation,
    PeriodicEmbedding,
    ReLU,
    Rescaling,
    Scale,
    Sigmoid,
    Softmax,
    Tanh,
)
from .layers.ensemble import MemberBatches
from .losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy, Loss
from .model import Sequential, load
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSprop
from .progress import ProgressBar

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "MSE", "SGD", "Adam", "AdamW", "Backend", "BackupAndRestore",
    "BatchEnsembleDense", "EnsembleDense", "EnsembleMean", "EnsembleScale", "EnsembleView",
    "LayerNorm", "MemberBatches", "ParametricActivation", "PeriodicEmbedding", "Scale",
    "BackendUnavailableError",
    "BinaryCrossEntropy", "Callback", "CategoricalCrossEntropy", "Columns", "Dense", "Dropout",
    "EarlyStopping", "Embedding", "History", "Identity", "Layer", "LearningRateScheduler",
    "LeakyReLU", "Loss",
    "ModelCheckpoint", "Optimizer", "Parameter", "ProgressBar", "RMSprop", "ReLU",
    "ReduceLROnPlateau", "Rescaling", "Sequential", "Sigmoid", "Softmax", "Tanh",
    "TrainingDivergedError", "DropoutScheduler", "WeightDecayScheduler",
    "available_backends", "distributed", "get_backend", "load", "mlp", "schedules", "to_numpy",
]

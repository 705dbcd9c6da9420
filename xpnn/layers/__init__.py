"""Layers: :class:`Dense`, activations, :class:`Dropout` and :class:`Rescaling`."""

from .activations import Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer, Parameter
from .dense import Dense
from .dropout import Dropout
from .rescaling import Rescaling

#: Layer classes by name, for ``load``.
LAYERS = {cls.__name__: cls for cls in
          (Dense, Dropout, Identity, LeakyReLU, ReLU, Rescaling, Sigmoid, Softmax, Tanh)}

__all__ = ["Dense", "Dropout", "Identity", "LAYERS", "Layer", "LeakyReLU", "Parameter", "ReLU",
           "Rescaling", "Sigmoid", "Softmax", "Tanh"]

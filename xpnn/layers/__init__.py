"""Layers: :class:`Dense`, activations and :class:`Dropout`."""

from .activations import Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer, Parameter
from .dense import Dense
from .dropout import Dropout

#: Layer classes by name, for ``load``.
LAYERS = {cls.__name__: cls for cls in
          (Dense, Dropout, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh)}

__all__ = ["Dense", "Dropout", "Identity", "LAYERS", "Layer", "LeakyReLU", "Parameter", "ReLU",
           "Sigmoid", "Softmax", "Tanh"]

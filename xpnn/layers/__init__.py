"""Layers: :class:`Dense`, activations, :class:`Dropout`, :class:`Rescaling`, and the layers of
tabular models: :class:`Embedding`, :class:`PeriodicEmbedding`, :class:`Columns`,
:class:`LayerNorm`, :class:`Scale`, :class:`ParametricActivation` and the ensemble layers
(:class:`EnsembleView`, :class:`BatchEnsembleDense`, :class:`EnsembleScale`, :class:`EnsembleDense`,
:class:`EnsembleMean`)."""

from .activations import Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer, Parameter
from .columns import Columns
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding
from .ensemble import (
    BatchEnsembleDense,
    EnsembleDense,
    EnsembleMean,
    EnsembleScale,
    EnsembleView,
)
from .normalization import LayerNorm
from .parametric import ParametricActivation
from .periodic import PeriodicEmbedding
from .rescaling import Rescaling
from .scale import Scale

#: Layer classes by name, for ``load``.
LAYERS = {cls.__name__: cls for cls in
          (BatchEnsembleDense, Columns, Dense, Dropout, Embedding, EnsembleDense, EnsembleMean,
           EnsembleScale, EnsembleView, Identity, LayerNorm, LeakyReLU, ParametricActivation,
           PeriodicEmbedding, ReLU, Rescaling, Scale, Sigmoid, Softmax, Tanh)}

__all__ = ["BatchEnsembleDense", "Columns", "Dense", "Dropout", "Embedding", "EnsembleDense",
           "EnsembleMean", "EnsembleScale", "EnsembleView", "Identity", "LAYERS", "Layer",
           "LayerNorm", "LeakyReLU", "ParametricActivation", "Parameter", "PeriodicEmbedding",
           "ReLU", "Rescaling", "Scale", "Sigmoid", "Softmax", "Tanh"]

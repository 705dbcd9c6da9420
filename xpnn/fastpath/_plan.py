"""Recognise the networks the fast paths support and describe them as a :class:`Plan`."""

from __future__ import annotations

from dataclasses import dataclass

from ..layers import Dense, Dropout, Identity, LeakyReLU, ReLU, Rescaling, Sigmoid, Softmax, Tanh
from ..layers.scale import Scale
from ..losses import MSE, BinaryCrossEntropy, CategoricalCrossEntropy, Poisson
from ..optimizers import SGD, Adam, AdamW, RMSprop

#: Layers a fast trainer may find after a Dense (exact classes: subclasses may change math).
#: Those it does not compute itself (Dropout always) run as the generic layer objects.
ACTIVATIONS = {ReLU: "relu", LeakyReLU: "leaky_relu", Tanh: "tanh", Sigmoid: "sigmoid",
               Identity: "identity", Dropout: "dropout"}
OPTIMIZERS = {Adam: "adam", AdamW: "adamw", SGD: "sgd", RMSprop: "rmsprop"}


@dataclass(frozen=True)
class Plan:
    """What to compute: the ``pre`` layers (Rescaling, Dropout on the input) on the batch, the
    ``scale`` (a :class:`~xpnn.Scale` in front of the first Dense, or None), then each
    ``dense[i]`` followed by the layers ``acts[i]`` (a tuple of ``(name, layer)``).

    ``head`` is ``"softmax_ce"`` (Softmax fused with categorical cross-entropy), ``"sigmoid_bce"``
    (Sigmoid fused with binary cross-entropy) or ``"plain"`` (the loss's own forward/backward on
    the network output: MSE or Poisson).
    """

    layers: tuple        # the model's layer objects (compared by identity)
    pre: tuple           # Rescaling and Dropout layers before the first Dense
    dense: tuple         # the Dense layers, input to output
    acts: tuple          # per Dense: tuple of (name, layer) activations that follow it
    head: str
    optimizer: object
    loss: object
    dtype: str
    backend: str
    scale: object = None  # the front Scale layer

    def __eq__(self, other):
        return (isinstance(other, Plan) and self.head == other.head
                and self.dtype == other.dtype and self.backend == other.backend
                and self.optimizer is other.optimizer and self.loss is other.loss
                and len(self.layers) == len(other.layers)
                and all(a is b for a, b in zip(self.layers, other.layers, strict=True)))

    __hash__ = None


def analyze(model):
    """``(Plan, None)`` when a fast trainer can run ``model``, else ``(None, reason)``."""
    if not model.built or model.loss is None:
        return None, "the model is not built and compiled"
    if type(model.optimizer) not in OPTIMIZERS:
        return None, f"no fast path for the {type(model.optimizer).__name__} optimizer"
    loss = model.loss
    if type(loss) not in (MSE, Poisson, BinaryCrossEntropy, CategoricalCrossEntropy):
        return None, f"no fast path for the loss {type(loss).__name__}"
    layers = list(model.layers)
    head = "plain"
    if model._fused:
        head = "softmax_ce" if type(loss) is CategoricalCrossEntropy else "sigmoid_bce"
        layers = layers[:-1]
    elif type(loss) not in (MSE, Poisson):
        return None, f"{type(loss).__name__} without its fused output activation"
    pre, dense, acts, scale = [], [], [], None
    for layer in layers:
        if type(layer) in (Dropout, Rescaling) and not dense and scale is None:
            pre.append(layer)        # run as the layer objects on the batch (out of place)
        elif type(layer) is Scale and not dense and scale is None:
            scale = layer            # folded into the first Dense's step by the trainer
        elif type(layer) is Dense:
            dense.append(layer)
            acts.append([])
        elif type(layer) in ACTIVATIONS and dense:
            acts[-1].append((ACTIVATIONS[type(layer)], layer))
        elif type(layer) is Softmax and dense and head == "plain" and layer is layers[-1]:
            acts[-1].append(("softmax", layer))
        else:
            return None, f"no fast path for a {type(layer).__name__} layer here"
    if not dense:
        return None, "the model has no Dense layer"
    plan = Plan(layers=tuple(model.layers), pre=tuple(pre), dense=tuple(dense),
                acts=tuple(tuple(a) for a in acts), head=head, optimizer=model.optimizer,
                loss=loss, dtype=model.dtype, backend=model.backend.name, scale=scale)
    return plan, None

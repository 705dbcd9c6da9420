"""Builders of common networks: :func:`mlp`."""

from __future__ import annotations

from .layers import (
    Dense,
    Dropout,
    Identity,
    Layer,
    LeakyReLU,
    ReLU,
    Rescaling,
    Sigmoid,
    Softmax,
    Tanh,
)
from .model import Sequential

#: Names accepted for ``activation`` and ``output``.
ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid,
               "softmax": Softmax, "identity": Identity, "linear": Identity}


def _layer_factory(what, spec):
    """A zero-argument callable making a new layer for ``spec`` (name, Layer class or
    factory); ``None`` for no layer."""
    if spec is None:
        return None
    if isinstance(spec, str):
        key = spec.lower()
        if key not in ACTIVATIONS:
            raise ValueError(f"mlp: unknown {what} {spec!r}; valid names are: "
                             f"{', '.join(ACTIVATIONS)} (or a Layer class)")
        return ACTIVATIONS[key]
    if isinstance(spec, Layer):
        raise TypeError(f"mlp: {what} must be a name or a Layer class, not an instance "
                        f"({spec!r}): every layer needs its own")
    if callable(spec):
        return spec
    raise TypeError(f"mlp: {what} must be a name or a Layer class, got {spec!r}")


def _fraction(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"mlp: {name} must be in [0, 1), got {value!r}")
    return float(value)


def mlp(sizes, activation="relu", output="softmax", dropout: float = 0.0,
        input_dropout: float = 0.0, init: str | None = None, rescale: float | None = None,
        **kwargs) -> Sequential:
    """A multilayer perceptron as a :class:`~xpnn.Sequential`.

    ``mlp([n_in, h1, ..., hk, n_out])`` is::

        [Rescaling(rescale)], [Dropout(input_dropout)], Dense(n_in, h1), activation,
        [Dropout(dropout)], ..., Dense(hk, n_out), output

    Parameters
    ----------
    sizes : sequence of int
        Widths from the input to the output, at least two. ``sizes[0]`` may be ``None``: the
        input width is then taken from the data at the first ``fit``.
    activation : str or Layer class
        Hidden activation: ``"relu"``, ``"leaky_relu"``, ``"tanh"``, ``"sigmoid"``,
        ``"identity"``, or a class such as ``xpnn.LeakyReLU`` (or any callable returning a new
        layer, e.g. ``lambda: xpnn.LeakyReLU(0.2)``).
    output : str, Layer class or None
        Output layer: ``"softmax"`` (classes), ``"sigmoid"`` (binary or multi-label),
        ``None``/``"linear"`` (regression).
    dropout : float
        Dropout rate after each hidden activation (0: none).
    input_dropout : float
        Dropout rate on the inputs (0: none).
    init : {"he", "glorot"} or None
        Initialisation of the Dense weights; ``None``: ``"glorot"`` for tanh and sigmoid
        hidden layers, ``"he"`` otherwise.
    rescale : float or None
        Multiply the inputs by this first (:class:`~xpnn.Rescaling`): ``1/255`` for ``uint8``
        pixels streamed as they are stored.
    **kwargs
        Passed to :class:`~xpnn.Sequential`: ``backend``, ``dtype``, ``seed``.

    Examples
    --------
    >>> import xpnn
    >>> model = xpnn.mlp([784, 256, 128, 10], dropout=0.2, seed=0)
    >>> model.compile(loss="crossentropy", optimizer="adam", metrics=["accuracy"])
    Sequential(...)
    >>> model.count_params()
    235146
    >>> small = xpnn.mlp([8, 16, 1], output="sigmoid", backend="numpy", dtype="float64", seed=1)
    >>> [type(layer).__name__ for layer in small.layers]
    ['Dense', 'ReLU', 'Dense', 'Sigmoid']
    """
    try:
        sizes = list(sizes)
    except TypeError:
        raise TypeError(f"mlp: sizes must be a list of widths, got {sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"mlp: sizes needs the input and output widths at least, got {sizes}")
    for i, n in enumerate(sizes):
        if (n is None and i == 0) or (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            continue
        raise ValueError(f"mlp: sizes[{i}] must be a positive int, got {n!r}")
    hidden = _layer_factory("activation", activation)
    head = _layer_factory("output", output)
    dropout = _fraction("dropout", dropout)
    input_dropout = _fraction("input_dropout", input_dropout)
    if init is None:
        init = "glorot" if hidden in (Tanh, Sigmoid) else "he"
    layers = [] if rescale is None else [Rescaling(rescale)]
    if input_dropout:
        layers.append(Dropout(input_dropout))
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(Dense(n_in, n_out, init=init))
        if i < len(sizes) - 2:
            layers.append(hidden())
            if dropout:
                layers.append(Dropout(dropout))
    if head is not None and head is not Identity:
        layers.append(head())
    return Sequential(*layers, **kwargs)


__all__ = ["ACTIVATIONS", "mlp"]

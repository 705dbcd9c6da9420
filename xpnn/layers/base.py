"""The :class:`Layer` interface and the :class:`Parameter` it trains.

A layer is a function with a hand-written derivative:

* ``forward(x, training)`` computes the output ``y`` and remembers what ``backward`` will need;
* ``backward(delta)`` receives ``delta = dL/dy`` (shape of ``y``), stores ``dL/dθ`` in each
  parameter's ``grad`` and returns ``dL/dx`` (shape of ``x``) for the layer below.

Layers compute only through ``self.xp``, the array-API namespace of the model's backend.
"""

from __future__ import annotations

import numpy as np


class Parameter:
    """A trainable array and its gradient.

    Parameters
    ----------
    name : str
        What the owning layer calls it (``"W"``, ``"b"``).
    data : array
        The initial value, an array of the model's backend.

    Attributes
    ----------
    name : str
        ``"W"`` or ``"b"``: what the owning layer calls it.
    data : array
        The current value, an array of the model's backend.
    grad : array or None
        ``dL/d(data)`` from the last ``backward``, same shape as ``data``.
    """

    __slots__ = ("name", "data", "grad")

    def __init__(self, name, data):
        self.name = name
        self.data = data
        self.grad = None

    @property
    def shape(self):
        """The shape of ``data``, as a tuple of ints."""
        return tuple(self.data.shape)

    def __repr__(self):
        return f"Parameter({self.name}, shape={self.shape})"


class Layer:
    """Base class of every layer.

    Subclasses set ``in_features``/``out_features`` when they know them (``None`` means "same as
    the input", as for activations), create their parameters in :meth:`build` and implement
    :meth:`forward` and :meth:`backward`.
    """

    #: Features of the input this layer expects (None: any).
    in_features: int | None = None
    #: Whether ``backward`` must return dL/dx. The model turns it off for the first layer with
    #: parameters, whose input gradient nobody uses; ``backward`` then returns None.
    input_grad_needed: bool = True

    def __init__(self):
        self.params: list[Parameter] = []
        self.xp = None
        self.backend = None
        self.dtype = None
        self.built = False

    # -- construction -------------------------------------------------------------------------
    def output_features(self, in_features: int | None) -> int | None:
        """Features of the output for an input with ``in_features`` features.

        Parameters
        ----------
        in_features : int or None
            Features of the input (None: not known yet).

        Returns
        -------
        int or None
            Features of the output (None: not known yet).
        """
        return in_features

    def build(self, backend, dtype: str, rng: np.random.Generator, in_features: int | None):
        """Bind the layer to a backend and create its parameters (drawn on the host from ``rng``).

        Parameters
        ----------
        backend : Backend
            Where the parameters live and the math runs.
        dtype : {"float32", "float64"}
            Floating dtype of the parameters.
        rng : numpy.random.Generator
            The model's host generator; initial weights are drawn from it.
        in_features : int or None
            Features of the input (from the previous layer, or the data at the first ``fit``).
        """
        self.backend = backend
        self.xp = backend.xp
        self.dtype = dtype
        self.built = True

    def bind(self, backend):
        """Rebind to another backend, moving the parameters there (used by ``Sequential.to``).

        Parameters
        ----------
        backend : Backend
            The new backend.
        """
        from ..backend import to_numpy

        for p in self.params:
            p.data = backend.asarray(to_numpy(p.data))
            p.grad = None
        self.backend = backend
        self.xp = backend.xp

    # -- computation --------------------------------------------------------------------------
    def forward(self, x, training: bool = False):
        """Compute the layer's output.

        Parameters
        ----------
        x : array of shape (n, in_features)
            A batch of inputs, an array of the model's backend.
        training : bool
            True inside ``fit``: the layer keeps what :meth:`backward` needs (and Dropout
            drops).

        Returns
        -------
        array of shape (n, out_features)
            The output for each row.
        """
        raise NotImplementedError

    def backward(self, delta):
        """Back-propagate: store the parameters' gradients and return the input's.

        Parameters
        ----------
        delta : array of shape (n, out_features)
            ``dL/dy``, the gradient of the loss with respect to this layer's output.

        Returns
        -------
        array of shape (n, in_features) or None
            ``dL/dx``; None when ``input_grad_needed`` is False.
        """
        raise NotImplementedError

    # -- description --------------------------------------------------------------------------
    def get_config(self) -> dict:
        """Constructor arguments, JSON-serialisable (used by ``save``/``load``)."""
        return {}

    @property
    def n_params(self) -> int:
        """Number of trainable numbers in the layer's parameters."""
        return sum(int(np.prod(p.shape)) for p in self.params)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

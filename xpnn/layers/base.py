"""The :class:`Layer` interface and the :class:`Parameter` it trains.

A layer is a function with a hand-written derivative:

* ``forward(x, training)`` computes the output ``y`` and remembers what ``backward`` will need;
* ``backward(delta)`` receives ``delta = dL/dy`` (shape of ``y``), stores ``dL/dθ`` in each
  parameter's ``grad`` and returns ``dL/dx`` (shape of ``x``) for the layer below.

Layers compute only through ``self.xp``, the array-API namespace of the model's backend.
"""

from __future__ import annotations

import math

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
    lr_factor, wd_factor : float
        This parameter's multipliers of the optimizer's learning rate and weight decay
        (default 1): the optimizer updates it as a ``torch.optim`` parameter group with
        ``lr = lr · lr_factor`` and ``weight_decay = weight_decay · wd_factor``.
        RealMLP trains biases with ``lr_factor=0.1`` and ``wd_factor=0``.
    """

    __slots__ = ("name", "data", "grad", "lr_factor", "wd_factor")

    def __init__(self, name, data):
        self.name = name
        self.data = data
        self.grad = None
        self.lr_factor = 1.0
        self.wd_factor = 1.0

    @property
    def shape(self):
        """The shape of ``data``, as a tuple of ints."""
        return tuple(self.data.shape)

    def __repr__(self):
        return f"Parameter({self.name}, shape={self.shape})"


def uniform_parameters(backend, dtype, rng, bound, shapes):
    """Parameters ``[(name, shape)]`` drawn from Uniform(±bound) on the host (``rng``) and moved
    to ``backend`` in ``dtype``."""
    return [Parameter(name, backend.asarray(rng.uniform(-bound, bound, size=shape), dtype=dtype))
            for name, shape in shapes]


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

    def check_width(self, in_features):
        """In :meth:`build`: raise an error naming this layer when it was made for inputs of
        :attr:`in_features` features and is built for others.

        Parameters
        ----------
        in_features : int or None
            Features of the input the layer is being built for (None: unknown, accepted).

        Raises
        ------
        ValueError
            When both widths are known and differ.
        """
        if in_features is not None and self.in_features is not None \
                and in_features != self.in_features:
            raise ValueError(f"{type(self).__name__}: made for {self.in_features} input "
                             f"features but its input has {in_features}")

    def param_shapes(self, in_features: int) -> list[tuple[str, tuple[int, ...]]]:
        """The parameters :meth:`build` creates, without allocating anything (``load`` checks
        files against them).

        Parameters
        ----------
        in_features : int
            Features of the layer's input.

        Returns
        -------
        list of (str, tuple of int)
            ``(name, shape)`` of each parameter, in the order of ``params``.
        """
        return []

    def check_input(self, x, width: int | None = None, multiple: int = 1):
        """Raise an error naming this layer unless ``x`` is a 2-D array of the layer's dtype
        with the expected width and a number of rows that is a multiple of ``multiple``.

        Parameters
        ----------
        x : array
            The input given to :meth:`forward`.
        width : int, optional
            Columns expected (default :attr:`in_features`; when that is None, any).
        multiple : int
            The rows must be a multiple of it (k for the rows of a k-member ensemble).

        Raises
        ------
        ValueError
            Not 2-D, another width, or rows not a multiple of ``multiple``.
        TypeError
            Another dtype than the layer's.
        """
        name = type(self).__name__
        width = self.in_features if width is None else width
        shape = tuple(x.shape)
        if len(shape) != 2 or (width is not None and shape[1] != width):
            raise ValueError(f"{name}: expected an input of shape (n, {width or 'features'}), "
                             f"got shape {shape}")
        if shape[0] % multiple:
            raise ValueError(f"{name}: expected a number of rows that is a multiple of "
                             f"{multiple} (n_samples * k members), got {shape[0]}")
        expected = self.backend.dtype(self.dtype)
        if x.dtype != expected:
            raise TypeError(f"{name}: expected an input of dtype {self.dtype} (the model's), "
                            f"got {x.dtype}")

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

    def to_onnx(self, g, x, name):
        """Write the layer's inference (``forward`` with ``training=False``) as ONNX nodes.

        Layers other than the built-in ones of :mod:`xpnn.export` implement it; the others
        cannot be exported.

        Parameters
        ----------
        g : object
            The graph being written (:mod:`xpnn.export`): ``g.node(op, inputs, **attrs)`` adds a
            node and returns its output's name, ``g.const(name, array)`` and
            ``g.weight(name, parameter_data)`` add constants, ``g.layer(layer, x, name)``
            writes a nested layer, ``g.dtype`` is the model's NumPy dtype.
        x : str
            Name of the layer's input in the graph.
        name : str
            A prefix, unique in the graph, for the names of the layer's nodes and constants.

        Returns
        -------
        str
            Name of the layer's output in the graph.
        """
        raise NotImplementedError(f"{type(self).__name__} has no ONNX form")

    def output_bound(self, m: float) -> float:
        """An upper bound on ``|y|`` for ``y = forward(x)`` (inference) over every ``x`` with
        ``|x| <= m``, every value computed on the way finite too; ``fit`` checks with it at the
        end of each epoch that the outputs on the training data are finite without computing
        them (``xpnn.guard.outputs_bounded``). The base class knows none: inf.

        Parameters
        ----------
        m : float
            Largest ``|x|`` of the inputs.

        Returns
        -------
        float
            The bound (inf: unknown).
        """
        return math.inf

    # -- description --------------------------------------------------------------------------
    def get_config(self) -> dict:
        """Constructor arguments, JSON-serialisable (used by ``save``/``load``)."""
        return {}

    @property
    def n_params(self) -> int:
        """Number of trainable numbers in the layer's parameters."""
        return sum(math.prod(p.shape) for p in self.params)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

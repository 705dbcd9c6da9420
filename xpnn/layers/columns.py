"""Different layers for different columns of the input: numeric and categorical features of a
table in one :class:`~xpnn.Sequential`."""

from __future__ import annotations

from .._validation import check_int
from .base import Layer


class Columns(Layer):
    r"""Split the input's columns into consecutive blocks, transform each block with its own
    layer, and concatenate the results (as scikit-learn's ``ColumnTransformer``, inside the
    network).

    With blocks ``[(w_1, f_1), ..., (w_m, f_m)]`` the input x (N, w_1 + ... + w_m) is cut into
    ``x_1 = x[:, :w_1]``, ``x_2 = x[:, w_1:w_1 + w_2]``, ... and::

        y = [f_1(x_1), f_2(x_2), ..., f_m(x_m)]          (concatenated along the features)

    where a block whose layer is ``None`` passes its columns through (``f(x) = x``). Backward
    cuts ``δ = dL/dy`` at the same boundaries of the output, gives each piece to its block's
    ``backward`` and concatenates the ``dL/dx_i`` (each layer stores its parameters'
    gradients itself).

    Parameters
    ----------
    blocks : list of (int, Layer or None)
        Width of each block and the layer applied to it, left to right. A layer with a fixed
        input width (``in_features``) must match its block's width. In a saved model each
        layer is stored as ``{"class": ..., "config": ...}``; the constructor accepts that
        form too.

    Examples
    --------
    Three numeric columns through periodic embeddings, two passed through, two categorical
    columns embedded::

        Columns([(3, PeriodicEmbedding(3)), (2, None), (2, Embedding([5, 12], 4))])
    """

    def __init__(self, blocks: list):
        super().__init__()
        if isinstance(blocks, (str, bytes, dict)) or not hasattr(blocks, "__iter__"):
            raise ValueError(f"Columns: blocks must be a list of (width, layer or None), got "
                             f"{blocks!r}")
        self.widths, self.layers = [], []
        for i, block in enumerate(blocks):
            if not isinstance(block, (list, tuple)) or len(block) != 2:
                raise ValueError(f"Columns: block {i} must be a pair (width, layer or None), "
                                 f"got {block!r}")
            width = check_int(f"the width of block {i}", block[0], "Columns", 1)
            layer = _as_layer(block[1], i)
            if layer is not None and layer.in_features is not None \
                    and layer.in_features != width:
                raise ValueError(f"Columns: block {i} is {width} columns wide but its layer "
                                 f"{layer!r} expects {layer.in_features}")
            self.widths.append(width)
            self.layers.append(layer)
        if not self.widths:
            raise ValueError("Columns: needs at least one block")
        self.in_features = sum(self.widths)

    def _out_widths(self):
        return [w if f is None else f.output_features(w)
                for w, f in zip(self.widths, self.layers, strict=True)]

    def output_features(self, in_features):
        return sum(self._out_widths())

    def param_shapes(self, in_features):
        return [(f"{name} of block {i}", shape)
                for i, (w, f) in enumerate(zip(self.widths, self.layers, strict=True))
                if f is not None for name, shape in f.param_shapes(w)]

    def build(self, backend, dtype, rng, in_features):
        self.check_width(in_features)
        super().build(backend, dtype, rng, in_features)
        for w, f in zip(self.widths, self.layers, strict=True):
            if f is not None:
                f.build(backend, dtype, rng, w)
        self.params = [p for f in self.layers if f is not None for p in f.params]

    def bind(self, backend):
        for f in self.layers:
            if f is not None:
                f.bind(backend)
        self.backend, self.xp = backend, backend.xp

    def _cuts(self, widths):
        start = 0
        for w in widths:
            yield start, start + w
            start += w

    def forward(self, x, training=False):
        self.check_input(x)
        outs = []
        for (a, b), f in zip(self._cuts(self.widths), self.layers, strict=True):
            part = x[:, a:b]
            outs.append(part if f is None else f.forward(part, training=training))
        return outs[0] if len(outs) == 1 else self.xp.concat(outs, axis=1)

    def backward(self, delta):
        grads = []
        for (a, b), f in zip(self._cuts(self._out_widths()), self.layers, strict=True):
            part = delta[:, a:b]
            if f is None:
                grads.append(part)
                continue
            f.input_grad_needed = self.input_grad_needed
            grads.append(f.backward(part))
        if not self.input_grad_needed:
            return None
        return grads[0] if len(grads) == 1 else self.xp.concat(grads, axis=1)

    def output_bound(self, m):
        # The largest bound of the blocks (a block without a layer passes m on).
        from ..guard import layer_bound

        return max(m if f is None else layer_bound(f, m) for f in self.layers)

    def to_onnx(self, g, x, name):
        # ONNX: one ``Slice`` per block, its layer's nodes, one ``Concat``.
        import numpy as np

        outs = []
        for i, ((a, b), f) in enumerate(zip(self._cuts(self.widths), self.layers, strict=True)):
            part = g.node("Slice", [x, g.const(f"{name}.{i}.start", np.asarray([a], np.int64)),
                                    g.const(f"{name}.{i}.end", np.asarray([b], np.int64)),
                                    g.const(f"{name}.{i}.axis", np.asarray([1], np.int64))])
            outs.append(part if f is None else g.layer(f, part, f"{name}.block{i}"))
        return g.node("Concat", outs, axis=1)

    def get_config(self):
        return {"blocks": [[w, None if f is None else
                            {"class": type(f).__name__, "config": f.get_config()}]
                           for w, f in zip(self.widths, self.layers, strict=True)]}

    def __repr__(self):
        inner = ", ".join(f"({w}, {f!r})" for w, f in zip(self.widths, self.layers, strict=True))
        return f"Columns([{inner}])"


def _as_layer(spec, i):
    """A block's layer: a Layer, None, or a saved ``{"class", "config"}`` entry (built through
    the same checks as the layers of a model file)."""
    if spec is None or isinstance(spec, Layer):
        return spec
    if isinstance(spec, dict):
        from ..serialization import layer_from_spec

        return layer_from_spec(spec, f"block {i} of Columns")
    raise ValueError(f"Columns: the layer of block {i} must be an xpnn Layer or None, got "
                     f"{type(spec).__name__}")

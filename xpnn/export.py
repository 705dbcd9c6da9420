"""Export a trained :class:`~xpnn.Sequential` for inference outside xpnn: ONNX.

The graph is written layer by layer from the model's weights, one or two standard ONNX
operators per layer (tracing the layers' own ``forward`` through ``ndonnx``, an array-API
namespace that records ONNX, also works, but adds shape checks and control flow to the graph and
two dependencies):

=============  ==========================================
xpnn layer     ONNX nodes
=============  ==========================================
Dense          ``MatMul(x, W)``, then ``Add(·, b)`` with a bias
ReLU           ``Relu``
LeakyReLU      ``PRelu(x, negative_slope)`` (the slope in the model's dtype)
Sigmoid        ``Sigmoid``
Tanh           ``Tanh``
Softmax        ``Softmax(axis=-1)``
Rescaling      ``Mul(x, scale)``, then ``Add(·, offset)`` with an offset
Identity       (nothing)
Dropout        (nothing: inference)
others         their ``to_onnx(g, x, name)`` method (Embedding,
               PeriodicEmbedding, Columns, LayerNorm, Scale,
               ParametricActivation, the ensemble layers)
=============  ==========================================

The input is ``"x"`` of shape ``(batch, n_features)`` with a symbolic batch dimension, the
output ``"y"`` of shape ``(batch, n_outputs)``: what :meth:`~xpnn.Sequential.predict` returns,
in the model's dtype (float32 or float64). The model's configuration (``get_config``) is stored
as JSON in the metadata entry ``"xpnn_config"``.

::

    import onnxruntime as ort
    runner = ort.InferenceSession("model.onnx")
    y = runner.run(None, {"x": X.astype("float32")})[0]
"""

from __future__ import annotations

import json
import os

import numpy as np

FORMATS = ("onnx",)

#: The element-wise activations: xpnn class name -> ONNX operator.
_UNARY = {"ReLU": "Relu", "Sigmoid": "Sigmoid", "Tanh": "Tanh"}
_SKIPPED = ("Identity", "Dropout")


def export(model, path, format: str = "onnx", **options):
    """Write ``model`` to ``path`` in ``format`` (only ``"onnx"``); returns ``path``."""
    if format not in FORMATS:
        raise ValueError(f"export: format must be one of {FORMATS}, got {format!r}")
    return export_onnx(model, path, **options)


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("export to ONNX needs the onnx package: pip install \"xpnn[onnx]\" "
                          "(or pip install onnx)") from None
    return onnx


def to_onnx(model, opset: int = 17, input_name: str = "x", output_name: str = "y"):
    """The ONNX ``ModelProto`` of ``model`` (see the module's table).

    Parameters
    ----------
    model : Sequential
        A model with weights (after ``fit``, or built with ``in_features`` given).
    opset : int
        ONNX opset of the graph, >= 17 (every operator used exists unchanged since opset 16).
    input_name, output_name : str
        Names of the graph's input and output.
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper

    model._require_weights("export")
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < 17:
        raise ValueError(f"export: opset must be an int >= 17, got {opset!r}")
    if opset > onnx.defs.onnx_opset_version():
        raise ValueError(f"export: opset {opset} is newer than this onnx package supports "
                         f"({onnx.defs.onnx_opset_version()})")
    np_dtype = np.dtype(model.dtype)
    elem = TensorProto.FLOAT if np_dtype == np.float32 else TensorProto.DOUBLE

    g = _Graph(np_dtype)
    current = input_name
    for i, layer in enumerate(model.layers):
        current = g.layer(layer, current, f"{i}_{type(layer).__name__.lower()}", index=i)
    nodes, initializers = g.nodes, g.initializers
    # The output gets its own name (an Identity when no node computes it last).
    if nodes and nodes[-1].output[0] == current:
        nodes[-1].output[0] = output_name
    else:
        nodes.append(helper.make_node("Identity", [current], [output_name], name="identity"))

    graph = helper.make_graph(
        nodes, "xpnn_sequential",
        [helper.make_tensor_value_info(input_name, elem, ["batch", model.n_features_in])],
        [helper.make_tensor_value_info(output_name, elem, ["batch", model.n_outputs])],
        initializer=initializers)
    from . import __version__

    proto = helper.make_model(graph, producer_name="xpnn", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", opset)])
    # The IR version this onnx writes can be newer than runtimes read; the opset's own is enough.
    proto.ir_version = min(proto.ir_version, _ir_version_for(opset))
    helper.set_model_props(proto, {"xpnn_config": json.dumps(model.get_config())})
    onnx.checker.check_model(proto, full_check=True)
    return proto


class _Graph:
    """The nodes and constants of the graph being written. Layers with an ONNX form of their own
    (a ``to_onnx(g, x, name)`` method returning the name of their output) write through
    :meth:`node` and :meth:`const`; :meth:`layer` writes any layer."""

    def __init__(self, dtype):
        from onnx import TensorProto

        self.dtype = dtype
        self.int64 = TensorProto.INT64
        self.nodes, self.initializers = [], []
        self._count = 0

    @staticmethod
    def host(array):
        return _host(array)

    def const(self, name, value):
        """Add the constant ``value`` (a NumPy array, kept in its dtype) named ``name`` (made
        unique); returns its name."""
        from onnx import numpy_helper

        taken = {t.name for t in self.initializers}
        base, n = name, 1
        while name in taken:                      # a layer inside another may reuse a name
            n += 1
            name = f"{base}_{n}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def weight(self, name, array):
        """Add a parameter (any backend's array) as a constant in the model's dtype."""
        return self.const(name, np.asarray(_host(array), dtype=self.dtype))

    def node(self, op, inputs, name=None, **attrs):
        """Add one node; returns the name of its output."""
        from onnx import helper

        self._count += 1
        name = name or f"{op.lower()}_{self._count}"
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def layer(self, layer, x, name, index=None):
        """Write ``layer`` applied to ``x``; returns the name of its output."""
        kind = type(layer).__name__
        if kind == "Dense":
            x = self.node("MatMul", [x, self.weight(f"{name}.W", layer.W.data)],
                          f"{name}_matmul")
            if layer.b is not None:
                x = self.node("Add", [x, self.weight(f"{name}.b", layer.b.data)],
                              f"{name}_add")
            return x
        if kind in _UNARY:
            return self.node(_UNARY[kind], [x], name)
        if kind == "LeakyReLU":  # PRelu: the slope as a tensor of the model's dtype
            slope = self.const(f"{name}.slope", np.asarray([layer.negative_slope], self.dtype))
            return self.node("PRelu", [x, slope], name)
        if kind == "Softmax":
            return self.node("Softmax", [x], name, axis=-1)
        if kind == "Rescaling":   # x · scale (+ offset), constants in the model's dtype
            x = self.node("Mul", [x, self.const(f"{name}.scale", np.asarray(
                [layer.scale], self.dtype))], f"{name}_mul")
            if layer.offset:
                x = self.node("Add", [x, self.const(f"{name}.offset", np.asarray(
                    [layer.offset], self.dtype))], f"{name}_add")
            return x
        if kind in _SKIPPED:
            return x
        try:
            return layer.to_onnx(self, x, name)
        except NotImplementedError:
            pass
        where = f"layer {index}" if index is not None else name
        raise ValueError(f"export: {where} ({layer!r}) has no ONNX form; supported: "
                         f"Dense, LeakyReLU, Rescaling, Softmax, {', '.join(_UNARY)}, "
                         f"{', '.join(_SKIPPED)} and the layers with a to_onnx method")


def _ir_version_for(opset: int) -> int:
    from onnx import helper

    for entry in helper.VERSION_TABLE:      # (release, ir_version, ai.onnx opset, ...)
        if entry[2] >= opset:
            return entry[1]
    return helper.VERSION_TABLE[-1][1]


def _host(array):
    from .backend import to_numpy

    return to_numpy(array)


def export_onnx(model, path, opset: int = 17, input_name: str = "x", output_name: str = "y"):
    """Write :func:`to_onnx`'s graph of ``model`` to ``path`` (``.onnx``); returns ``path``."""
    proto = to_onnx(model, opset=opset, input_name=input_name, output_name=output_name)
    from .serialization import atomic_write

    path = os.fspath(path)
    data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data))        # no torn file under the real name
    return path


__all__ = ["FORMATS", "export", "export_onnx", "to_onnx"]

"""Rescaling of the input: the layer that lets raw pixels (``uint8`` images read from disk one
batch at a time) enter the network in a sensible range without a converted copy of the data."""

from __future__ import annotations

from .._validation import check_real
from .base import Layer


class Rescaling(Layer):
    """``y = x · scale + offset``, element-wise; ``dL/dx = δ · scale``. No parameters.

    Keras's ``Rescaling``: ``Rescaling(1 / 255)`` maps pixels 0-255 to [0, 1],
    ``Rescaling(1 / 127.5, offset=-1)`` to [-1, 1]. As the first layer it lets ``fit`` stream
    ``uint8`` images (a memmap, HDF5) and scale each batch after it is read, instead of a float
    copy of the whole dataset. The fast paths run it on the batch before the first ``Dense``.

    Parameters
    ----------
    scale : float
        Multiplier, finite.
    offset : float
        Added after the multiplication, finite. Default 0.
    """

    def __init__(self, scale: float, offset: float = 0.0):
        super().__init__()
        self.scale = check_real("scale", scale, "Rescaling")
        self.offset = check_real("offset", offset, "Rescaling")

    def forward(self, x, training=False):
        y = x * self.scale
        return y + self.offset if self.offset else y

    def backward(self, delta):
        return delta * self.scale

    def output_bound(self, m):
        return m * abs(self.scale) + abs(self.offset)

    def get_config(self):
        return {"scale": self.scale, **({"offset": self.offset} if self.offset else {})}

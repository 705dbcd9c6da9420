"""Reader and writer for the IDX format used by MNIST and Fashion-MNIST.

An IDX file is a big-endian header followed by a dense array:

* magic number (uint32): two zero bytes, a type code (``0x08`` = uint8, ...) and the
  number of dimensions; so 2051 (``0x00000803``) for 3-D uint8 images and 2049
  (``0x00000801``) for 1-D uint8 labels;
* one uint32 size per dimension (count, then rows and cols for images);
* the data, in C (row-major) order, big-endian.

Files may be gzip-compressed (detected from their first bytes, not their name).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..serialization import atomic_write

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "IDXFormatError",
    "load_idx_images",
    "load_idx_labels",
    "parse_idx",
    "read_idx",
    "write_idx",
]

#: Magic number of IDX image files: 3-D uint8 (``0x00000803``).
IDX_IMAGES_MAGIC = 2051
#: Magic number of IDX label files: 1-D uint8 (``0x00000801``).
IDX_LABELS_MAGIC = 2049

# IDX type code -> big-endian NumPy dtype.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}


class IDXFormatError(ValueError):
    """The bytes are not a valid IDX file (bad magic number, truncated, bad gzip, ...)."""


#: Deflate's largest expansion (a 258-byte match from about 2 bits): a gzip file of ``n`` bytes
#: never inflates to more than about ``1032 n``.
_MAX_DEFLATE_RATIO = 1032


def _parse_header(data: bytes, expected_magic, source):
    """``(shape, dtype, header_len)`` from the first bytes of an IDX file (``data`` may hold more
    than the header). Raises IDXFormatError for a bad magic number or a truncated header."""
    if len(data) < 4:
        raise IDXFormatError(
            f"{source}: only {len(data)} bytes, too short for an IDX header "
            "(truncated or empty file)"
        )
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise IDXFormatError(
            f"{source}: bad magic number {magic} (0x{magic:08x}), expected {expected_magic} "
            f"(0x{expected_magic:08x}); this is not the kind of IDX file expected here"
        )
    code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or code not in _DTYPES or ndim == 0:
        raise IDXFormatError(f"{source}: bad magic number {magic} (0x{magic:08x}); not an IDX file")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXFormatError(
            f"{source}: truncated header: {ndim} dimensions need {header_len} bytes, "
            f"file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    return shape, _DTYPES[code], header_len


def _decode(payload, shape, dtype, source):
    """The array of ``shape`` from exactly its data bytes ``payload`` (a bytes-like object),
    checking the length against the header's."""
    expected = math.prod(shape) * dtype.itemsize
    actual = len(payload)
    if actual < expected:
        raise IDXFormatError(
            f"{source}: truncated: header announces shape {shape} ({expected} data bytes) "
            f"but only {actual} data bytes follow"
        )
    if actual > expected:
        raise IDXFormatError(
            f"{source}: {actual - expected} unexpected bytes after the {expected} data bytes "
            f"announced by the header (shape {shape})"
        )
    array = np.frombuffer(payload, dtype=dtype, count=math.prod(shape))
    return array.reshape(shape).astype(dtype.newbyteorder("="))  # copy: writable, native


def parse_idx(data: bytes, *, expected_magic: int | None = None, source: str = "IDX data"):
    """Decode the bytes of an (uncompressed) IDX file into a NumPy array.

    Parameters
    ----------
    data : bytes
        The whole decompressed file.
    expected_magic : int, optional
        If given, the magic number the file must have, e.g. :data:`IDX_IMAGES_MAGIC`
        (2051) or :data:`IDX_LABELS_MAGIC` (2049).
    source : str, optional
        Name used in error messages (usually the file path).

    Returns
    -------
    numpy.ndarray
        Writable array in native byte order whose shape is the sizes from the header,
        e.g. ``(count, rows, cols)`` uint8 for images or ``(count,)`` uint8 for labels.

    Raises
    ------
    IDXFormatError
        Wrong or unknown magic number, header or data shorter than announced
        (truncated file), or extra bytes after the data.
    """
    shape, dtype, header_len = _parse_header(data, expected_magic, source)
    return _decode(memoryview(data)[header_len:], shape, dtype, source)


def read_idx(path: str | os.PathLike[str], *, expected_magic: int | None = None):
    """Read an IDX file, gzip-compressed or not.

    The header is read first and the size it announces checked against the file (for a
    gzip file: against the most its compressed bytes can inflate to), so a damaged or
    hostile header is refused before any large allocation; then exactly the announced data
    bytes are decompressed.

    Parameters
    ----------
    path : str or os.PathLike
        File to read. Gzip compression is detected from the content.
    expected_magic : int, optional
        Magic number the file must have (see :func:`~xpnn.datasets.idx.parse_idx`).

    Returns
    -------
    numpy.ndarray
        The decoded array (see :func:`~xpnn.datasets.idx.parse_idx`).

    Raises
    ------
    IDXFormatError
        Invalid IDX content, a header announcing more data than the file can hold, or a
        corrupt / truncated gzip stream.
    FileNotFoundError
        The file does not exist.
    """
    path = Path(path)
    source = str(path)
    with open(path, "rb") as raw:
        file_size = os.fstat(raw.fileno()).st_size
        if raw.read(2) != b"\x1f\x8b":
            raw.seek(0)
            return parse_idx(raw.read(), expected_magic=expected_magic, source=source)
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw) as gz:
                head = gz.read(4)
                if len(head) == 4:
                    head += gz.read(4 * head[3])
                shape, dtype, _ = _parse_header(head, expected_magic, source)
                expected = math.prod(shape) * dtype.itemsize
                if expected > _MAX_DEFLATE_RATIO * file_size:
                    raise IDXFormatError(
                        f"{source}: header announces shape {shape} ({expected} data bytes), "
                        f"more than a {file_size}-byte gzip file can hold (truncated or "
                        "damaged)")
                payload = gz.read(expected)
                if len(payload) == expected and gz.read(1):
                    raise IDXFormatError(
                        f"{source}: unexpected bytes after the {expected} data bytes "
                        f"announced by the header (shape {shape})")
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXFormatError(f"{source}: corrupt or truncated gzip stream ({exc})") from exc
    return _decode(payload, shape, dtype, source)


def load_idx_images(path: str | os.PathLike[str]):
    """Read an IDX image file (magic 2051).

    Parameters
    ----------
    path : str or os.PathLike
        ``*-images-idx3-ubyte[.gz]`` file.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape ``(count, rows, cols)``, e.g. ``(60000, 28, 28)``.

    Raises
    ------
    IDXFormatError
        Not an image IDX file, or truncated.
    """
    return read_idx(path, expected_magic=IDX_IMAGES_MAGIC)


def load_idx_labels(path: str | os.PathLike[str]):
    """Read an IDX label file (magic 2049).

    Parameters
    ----------
    path : str or os.PathLike
        ``*-labels-idx1-ubyte[.gz]`` file.

    Returns
    -------
    numpy.ndarray
        uint8 array of shape ``(count,)``.

    Raises
    ------
    IDXFormatError
        Not a label IDX file, or truncated.
    """
    return read_idx(path, expected_magic=IDX_LABELS_MAGIC)


def write_idx(path: str | os.PathLike[str], array) -> Path:
    """Write an array as an IDX file (gzip-compressed when ``path`` ends in ``.gz``),
    atomically (:func:`xpnn.serialization.atomic_write`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    array : array_like
        Array of dtype uint8, int8, int16, int32, float32 or float64, with 1 to 255
        dimensions. A uint8 array of shape ``(n, rows, cols)`` gives an MNIST-style
        image file (magic 2051), a uint8 array of shape ``(n,)`` a label file (2049).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        Unsupported dtype or number of dimensions.
    """
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    code = _CODES[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    atomic_write(path, lambda f: f.write(payload))
    return path

"""Model files: the whole training state in one ``.npz`` archive, written atomically, read
defensively.

Layout (format version 2)
-------------------------
A ZIP archive of uncompressed ``.npy`` entries (the layout of :func:`numpy.savez`, so
``numpy.load`` reads it too):

* ``__xpnn__``: a 0-d string array holding JSON: ``format`` (``"xpnn-model"``), ``version``,
  the architecture (``backend``, ``dtype``, ``seed``, ``n_features_in``, ``layers``), the
  compile settings (``compile``: loss, optimizer class and hyperparameters, metrics),
  ``training`` (the optimizer's iterations, current ``lr`` and per-parameter step counts, the
  random generator's state, ``epochs_trained``, the training ``position`` inside an epoch,
  the state of every callback that has one, ``param_factors``: each parameter's
  ``[lr_factor, wd_factor]`` when one is not 1) and ``checksum``;
* ``param_<i>``: the i-th parameter (W1, b1, W2, ...), in the model's dtype;
* ``opt_<i>_<key>``: the optimizer's state array ``key`` (``exp_avg``, ``momentum_buffer``...)
  of parameter i;
* ``cb_<j>``: arrays inside callback states (EarlyStopping's best weights...).

``checksum`` is ``"sha256:<hex>"`` over the JSON without that field (``sort_keys``, compact)
followed by the name and the stored bytes of every array entry in name order: any damaged byte
of a payload is detected. No pickle is involved anywhere. Files of version 1 (JSON plus
``param_<i>``, no training state, no checksum) load too; their ZIP CRC-32s guard the bytes.

Reading never trusts the file: the JSON is validated completely (types, ranges, layer and
optimizer arguments, sizes) before anything is allocated; every array's ``.npy`` header is read
from the ZIP directory and compared with the shape and dtype the architecture implies, and the
entry's size with what that header implies, before the array itself is read; compressed,
encrypted, duplicated or overlapping entries are refused, so loading allocates a small
multiple of the file's size at most. Whatever is wrong raises ``ValueError`` naming the file
and the problem.

Writing goes through :func:`atomic_write`: a temporary file in the target's folder, flushed and
fsynced, then renamed over the target, so a crash never leaves a torn file under the real name.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import io
import json
import math
import os
import re
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from .position import Position, check_rng_state

FORMAT = "xpnn-model"
FORMAT_VERSION = 2
#: Largest ``__xpnn__`` JSON entry read (bytes of the stored UTF-32 string).
MAX_JSON_BYTES = 64 * 2**20
#: Deepest nesting of JSON containers accepted.
MAX_DEPTH = 24
#: Largest layer width or feature count accepted.
MAX_WIDTH = 2**31 - 1

#: Test hook: ``callable(tmp_path, final_path)`` run by :func:`atomic_write` between writing
#: the temporary file and renaming it (e.g. to kill the process at that moment).
_before_replace = None

_NPY_MAGIC = b"\x93NUMPY"
_WEIGHT_DTYPES = ("float16", "float32", "float64")
_STATE_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                 "uint64", "float16", "float32", "float64")
#: Optimizer state entries: the arrays (shaped like their parameter) and the integer counters.


class _Bad(Exception):
    """A problem with the file; :func:`read` turns it into ``ValueError(f"{path} {message}")``."""


# ====================================================================== atomic writes
def atomic_write(path, write) -> None:
    """Create or replace the file ``path`` with what ``write(fileobj)`` writes, atomically.

    The data goes to a temporary file in the same folder, is flushed and fsynced, and the
    temporary file is then renamed over ``path`` (``os.replace``; the folder is fsynced after
    it). A crash or an exception at any moment leaves either the old file or the new one under
    ``path``, never a partial one; the temporary file is removed on an exception.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: the folder {folder} does not exist "
                                "(create it first)")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)      # mkstemp creates 0600; give the usual permissions
        if _before_replace is not None:
            _before_replace(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:           # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:           # pragma: no cover
        pass
    finally:
        os.close(fd)


# ====================================================================== writing
def npz_path(path) -> str:
    """``path`` with ``.npz`` appended when it has another ending (as :func:`numpy.savez`)."""
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def save(model, path, *, callbacks=None, position=None) -> str:
    """Write ``model``'s complete state to ``path`` (``.npz`` appended when missing).

    Parameters
    ----------
    model : Sequential
    path : str or path-like
    callbacks : sequence of Callback, optional
        Callbacks whose ``get_state()`` is stored too (what :class:`~xpnn.BackupAndRestore`
        restores).
    position : Position, optional
        Where the training run stands (:meth:`xpnn.training.TrainingRun.capture_position`).

    Returns
    -------
    str
        The path written.
    """
    path = npz_path(path)
    config, arrays = state_of(model, callbacks=callbacks, position=position)
    blobs = {name: _npy_bytes(a) for name, a in arrays.items()}
    config["checksum"] = _checksum(config, blobs)
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    blobs = {"__xpnn__": _npy_bytes(np.array(text)), **blobs}
    atomic_write(path, lambda f: _write_zip(f, blobs))
    return path


def state_of(model, *, callbacks=None, position=None):
    """``(config, arrays)``: the JSON document (without checksum) and the named NumPy arrays of
    a version-2 file."""
    from .backend import to_numpy

    config = model.get_config()
    config["version"] = FORMAT_VERSION
    arrays = {}
    if model.built:
        for i, w in enumerate(model.get_weights()):
            arrays[f"param_{i}"] = w
    opt = model.optimizer
    optimizer = None
    if opt is not None:
        spec = type(opt).STATE            # the entries the optimizer declares
        states = []
        for i, s in enumerate(opt.state):
            entry = {}
            for key, value in s.items():
                if key in spec.buffers:
                    name = f"opt_{i}_{key}"
                    arrays[name] = np.array(to_numpy(value), copy=True)
                    entry[key] = name
                elif key == "step" and spec.counts_steps:
                    entry[key] = int(value)
                else:
                    raise ValueError(f"save: unknown optimizer state entry {key!r}")
            states.append(entry)
        optimizer = {"iterations": int(opt.iterations), "lr": float(opt.lr), "state": states}
    saved_callbacks = []
    for cb in callbacks or ():
        state = cb.get_state()
        if state:
            saved_callbacks.append({"class": type(cb).__name__,
                                    "state": _encode(state, arrays, type(cb).__name__)})
    factors = [[float(p.lr_factor), float(p.wd_factor)] for p in model.params]
    config["training"] = {
        **({"param_factors": factors} if any(f != [1.0, 1.0] for f in factors) else {}),
        "optimizer": optimizer,
        "rng": _json_rng(model.rng.bit_generator.state),
        "epochs_trained": int(getattr(model, "epochs_trained", 0)),
        "position": None if position is None else _encode(position.to_json(), arrays,
                                                          "position"),
        "callbacks": saved_callbacks,
    }
    return config, arrays


def _json_rng(state):
    return {k: (_json_rng(v) if isinstance(v, dict) else int(v) if not isinstance(v, str)
                else v) for k, v in state.items()}


def _encode(value, arrays, owner, depth=0):
    """JSON form of a callback state: arrays become ``{"__array__": name, ...}`` references
    into ``arrays``, non-finite floats ``{"__float__": "inf"}``."""
    if depth > MAX_DEPTH:
        raise ValueError(f"save: the state of {owner} is nested too deeply")
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or k in ("__array__", "__float__"):
                raise ValueError(f"save: the state of {owner} has a key {k!r} that cannot be "
                                 "stored")
            out[k] = _encode(v, arrays, owner, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays, owner, depth + 1) for v in value]
    if hasattr(value, "shape"):
        from .backend import to_numpy

        a = np.array(to_numpy(value), copy=True)
        if a.dtype.name not in _STATE_DTYPES:
            raise ValueError(f"save: the state of {owner} holds an array of dtype {a.dtype}")
        name = f"cb_{sum(k.startswith('cb_') for k in arrays)}"
        arrays[name] = a
        return {"__array__": name, "dtype": a.dtype.name, "shape": list(a.shape)}
    raise ValueError(f"save: the state of {owner} holds a {type(value).__name__}, which cannot "
                     "be stored (JSON values and arrays only)")


def _npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def _write_zip(f, blobs):
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, data in blobs.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, data)


def _checksum(config, blobs) -> str:
    body = {k: v for k, v in config.items() if k != "checksum"}
    h = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                  allow_nan=False).encode())
    for name in sorted(blobs):
        h.update(b"\0" + name.encode() + b"\0")
        h.update(blobs[name])
    return "sha256:" + h.hexdigest()


# ====================================================================== reading
@dataclass
class Payload:
    """A validated model file: everything :func:`build` and :func:`restore_into` need."""

    path: str
    config: dict
    version: int
    layers: list
    weights: list = field(default_factory=list)
    optimizer: object = None            # an Optimizer instance (from the compile settings)
    loss: object = None                 # a Loss instance (from the compile settings)
    training: dict | None = None        # decoded: arrays in place of references


def read(path) -> Payload:
    """Read and validate the file ``path``; raises ``ValueError`` naming it if it is not a
    valid xpnn model file (``FileNotFoundError`` if it does not exist)."""
    name = os.fspath(path)
    try:
        return _read(name)
    except _Bad as exc:
        raise ValueError(f"{name} {exc}") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error,
            struct.error, KeyError, IndexError, TypeError, ValueError, OverflowError,
            UnicodeError, RecursionError, NotImplementedError, RuntimeError) as exc:
        raise ValueError(f"{name} is damaged ({type(exc).__name__}: {exc})") from exc


def _open_regular(path):
    """``path`` opened for reading, refusing what is not a regular file before reading a byte:
    a FIFO (opened without blocking, so a pipe without a writer cannot hang the caller), a
    device such as ``/dev/zero`` (endless), a socket. A directory raises IsADirectoryError, a
    missing file or dangling link FileNotFoundError."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode)
                    or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "special")
            raise _Bad(f"is not an xpnn model file (not a regular file: {kind})")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def find(path) -> str:
    """The file :func:`read` opens for ``path``: ``path`` itself, or ``path + ".npz"`` when
    ``path`` does not exist and that does (what :func:`save` wrote for a name without
    ``.npz``)."""
    path = os.fspath(path)
    if not os.path.lexists(path) and not path.endswith(".npz") and \
            os.path.lexists(path + ".npz"):
        return path + ".npz"
    return path


def _read(path) -> Payload:
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
            raise _Bad("is not an xpnn model file (a .npy array, not an .npz archive)")
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error) as exc:
            raise _Bad("is not an xpnn model file (not a NumPy .npz archive, or a truncated "
                       f"one: {exc})") from None
        with zf:
            entries = _directory(zf, size)
            if "__xpnn__" not in entries:
                raise _Bad("is not an xpnn model file (no '__xpnn__' entry)")
            config = _read_json(zf, entries.pop("__xpnn__"))
            payload, expected = _check_config(path, config)
            _check_entries(entries, expected)
            headers = {key: _read_header(zf, entries[key], key, spec)
                       for key, spec in expected.items()}
            blobs = {key: zf.read(entries[key]) for key in sorted(expected)}
    if payload.version >= 2:
        stored = config.get("checksum")
        if not isinstance(stored, str):
            raise _Bad("is not a valid xpnn model (no checksum)")
        if _checksum(config, blobs) != stored:
            raise _Bad("is damaged (checksum mismatch: its content is not what was written)")
    arrays = {key: _parse_array(blobs.pop(key), key, expected[key], headers[key])
              for key in sorted(expected)}
    _fill(payload, arrays)
    return payload


def from_state(config, arrays, source="state") -> Payload:
    """A validated :class:`Payload` from the ``(config, arrays)`` of :func:`state_of` (used by
    unpickling; the same checks as reading a file, the checksum aside)."""
    try:
        payload, expected = _check_config(source, config)
        _check_entries(arrays, expected)
        checked = {}
        for key, spec in expected.items():
            a = np.asarray(arrays[key])
            if a.dtype.name not in spec.dtypes or a.shape != spec.shape:
                raise _Bad(f"is not a valid xpnn model ({spec.what} is a {a.dtype} array of "
                           f"shape {a.shape}, expected {spec.shape})")
            checked[key] = _check_values(a, spec)
        _fill(payload, checked)
    except _Bad as exc:
        raise ValueError(f"{source} {exc}") from None
    return payload


def _directory(zf, size):
    """The archive's entries by array name, after checking the ZIP directory itself."""
    entries = {}
    infos = zf.infolist()
    if len(infos) > 100_000:
        raise _Bad(f"is not a valid xpnn model (the archive has {len(infos)} entries)")
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise _Bad(f"is not an xpnn model file (entry {info.filename!r} is not a .npy "
                       "array)")
        key = info.filename[:-4]
        if key in entries:
            raise _Bad(f"is damaged (entry {info.filename!r} appears twice)")
        if info.flag_bits & 0x1:
            raise _Bad(f"is not a valid xpnn model (entry {info.filename!r} is encrypted)")
        if info.compress_type != zipfile.ZIP_STORED:
            raise _Bad(f"is not a valid xpnn model (entry {info.filename!r} is compressed "
                       f"(method {info.compress_type}); xpnn model files store arrays "
                       "uncompressed)")
        if info.file_size != info.compress_size or info.header_offset + info.file_size > size:
            raise _Bad(f"is damaged (entry {info.filename!r} declares {info.file_size} bytes, "
                       f"more than the file holds)")
        entries[key] = info
    # Entries may not share bytes (overlapping entries would let a small file expand into
    # many large arrays): together they hold at most the file's size.
    if sum(info.file_size for info in entries.values()) > size:
        raise _Bad("is damaged (its entries overlap: they declare more bytes than the file "
                   "holds)")
    return entries


def _read_json(zf, info):
    if info.file_size > MAX_JSON_BYTES:
        raise _Bad(f"is not a valid xpnn model (its '__xpnn__' entry has {info.file_size} "
                   "bytes)")
    try:
        raw = zf.read(info)
        f = io.BytesIO(raw)
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        # the header alone decides how much read_array allocates: check it first
        if dtype.kind != "U" or shape != () or f.tell() + dtype.itemsize != len(raw):
            raise _Bad("is not an xpnn model file (unreadable header: '__xpnn__' is not a "
                       "string)")
        f.seek(0)
        a = np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, SyntaxError, TypeError, OSError, EOFError, zipfile.BadZipFile,
            zlib.error) as exc:
        raise _Bad(f"is not an xpnn model file (unreadable header: {exc})") from None

    def no_constant(token):
        raise ValueError(f"non-finite number {token} in JSON")

    def no_duplicates(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"key {k!r} appears twice")
            out[k] = v
        return out

    try:
        config = json.loads(str(a), parse_constant=no_constant, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise _Bad(f"is not an xpnn model file (unreadable header: {exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise _Bad("is not an xpnn model file (format tag missing)")
    return config


@dataclass
class _Expect:
    """What one array entry must hold."""

    shape: tuple
    dtypes: tuple             # acceptable dtype names
    what: str                 # for messages
    target: str | None = None  # the model's dtype, whose range the values must fit
    nonnegative: bool = False


def _check_entries(entries, expected):
    missing = sorted(set(expected) - set(entries))
    extra = sorted(set(entries) - set(expected))
    if missing:
        raise _Bad(f"is not a valid xpnn model (missing arrays: {', '.join(missing[:5])}"
                   f"{' ...' if len(missing) > 5 else ''})")
    if extra:
        raise _Bad(f"is not a valid xpnn model (unexpected arrays: {', '.join(extra[:5])}"
                   f"{' ...' if len(extra) > 5 else ''})")


def _read_header(zf, info, key, spec):
    """Shape, order and dtype of entry ``key`` from its ``.npy`` header only, checked against
    ``spec`` and against the entry's size in the ZIP directory."""
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, SyntaxError, TypeError, EOFError, OverflowError) as exc:
            raise _Bad(f"is damaged (array {key}: unreadable .npy header: {exc})") from None
        header_size = f.tell()
    if dtype.hasobject or dtype.name not in spec.dtypes:
        raise _Bad(f"is not a valid xpnn model ({spec.what} has dtype {dtype}, expected "
                   f"{' or '.join(spec.dtypes)})")
    if tuple(shape) != spec.shape:
        raise _Bad(f"is not a valid xpnn model ({spec.what} has shape {tuple(shape)}, expected "
                   f"{spec.shape})")
    nbytes = math.prod(spec.shape) * dtype.itemsize
    if header_size + nbytes != info.file_size:
        raise _Bad(f"is damaged (array {key}: the entry holds {info.file_size} bytes, its "
                   f"header implies {header_size + nbytes})")
    return shape, fortran, dtype


def _parse_array(raw, key, spec, header):
    a = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    if a.shape != tuple(header[0]) or a.dtype != header[2]:       # pragma: no cover - paranoia
        raise _Bad(f"is damaged (array {key} does not match its header)")
    return _check_values(a, spec)


def _check_values(a, spec):
    """``a`` if its values are acceptable: finite, within the model dtype's range,
    non-negative where required."""
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise _Bad(f"is not a valid xpnn model ({spec.what} contains NaN or infinite values)")
    if spec.target is not None and a.size:
        biggest = float(np.max(np.abs(a)))
        if biggest > float(np.finfo(spec.target).max):
            raise _Bad(f"is not a valid xpnn model ({spec.what} has values beyond the "
                       f"{spec.target} range (max |x| = {biggest:.3g}))")
        if spec.nonnegative and float(np.min(a)) < 0:
            raise _Bad(f"is not a valid xpnn model ({spec.what} has negative values)")
    return a


# ---------------------------------------------------------------------- the JSON document
_V1_KEYS = {"format", "version", "backend", "dtype", "seed", "n_features_in", "layers",
            "compile"}
_V2_KEYS = _V1_KEYS | {"training", "checksum"}
_TRAINING_KEYS = {"optimizer", "rng", "epochs_trained", "position", "callbacks"}
#: Written only when a parameter has a learning-rate or weight-decay factor other than 1.
_OPTIONAL_TRAINING_KEYS = {"param_factors"}


def _is_int(value, low=0, high=2**63 - 1):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_keys(d, allowed, where, required=None):
    if not isinstance(d, dict):
        raise _Bad(f"is not a valid xpnn model ({where} must be a JSON object, got "
                   f"{type(d).__name__})")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise _Bad(f"is not a valid xpnn model ({where} has unknown entries {unknown})")
    missing = sorted(set(allowed if required is None else required) - set(d))
    if missing:
        raise _Bad(f"is not a valid xpnn model ({where} lacks {missing})")


def _check_config(path, config):
    """Validate the whole JSON document; returns the :class:`Payload` (arrays still to fill)
    and the arrays the file must hold, by name."""
    from .backend import DTYPES
    from .layers import LAYERS
    from .losses import LOSS_CLASSES
    from .metrics import get_metric
    from .optimizers import OPTIMIZERS

    version = config.get("version")
    if not _is_int(version, 1):
        raise _Bad(f"is not a valid xpnn model (format version {version!r})")
    if version > FORMAT_VERSION:
        raise _Bad(f"was written by a newer xpnn (format version {version}); upgrade xpnn to "
                   "read it")
    _check_keys(config, _V1_KEYS if version == 1 else _V2_KEYS, "the header",
                required=_V1_KEYS | ({"training"} if version > 1 else set()))
    backend = config["backend"]
    if not isinstance(backend, str) or not 0 < len(backend) <= 64:
        raise _Bad(f"is not a valid xpnn model (backend {backend!r})")
    dtype = config["dtype"]
    if dtype not in DTYPES:
        raise _Bad(f"is not a valid xpnn model (dtype {dtype!r}, expected one of {DTYPES})")
    seed = config["seed"]
    seeds = seed if isinstance(seed, list) else [seed]
    if seed is not None and not (0 < len(seeds) <= 64
                                 and all(_is_int(s, 0, 2**128 - 1) for s in seeds)):
        raise _Bad(f"is not a valid xpnn model (seed {seed!r})")
    n_in = config["n_features_in"]
    if n_in is not None and not _is_int(n_in, 1, MAX_WIDTH):
        raise _Bad(f"is not a valid xpnn model (n_features_in {n_in!r})")

    specs = config["layers"]
    if not isinstance(specs, list) or len(specs) > 10_000:
        raise _Bad("is not a valid xpnn model ('layers' must be a list)")
    layers = []
    for i, spec in enumerate(specs):
        _check_keys(spec, {"class", "config"}, f"layer {i}")
        cls = LAYERS.get(spec["class"]) if isinstance(spec["class"], str) else None
        if cls is None:
            raise _Bad(f"is not a valid xpnn model (unknown layer class {spec['class']!r})")
        layers.append(_construct(cls, spec["config"], f"layer {i} ({spec['class']})"))
    shapes = _param_shapes(layers, n_in)
    payload = Payload(path=path, config=config, version=version, layers=layers)
    expected = {f"param_{i}": _Expect(shape, _WEIGHT_DTYPES,
                                      f"parameter {i} ({what})", target=dtype)
                for i, (what, shape) in enumerate(shapes)}

    compiled = config["compile"]
    if compiled is not None:
        _check_keys(compiled, {"loss", "optimizer", "metrics", "loss_config"}, "'compile'",
                    required={"loss", "optimizer", "metrics"})
        if compiled["loss"] not in LOSS_CLASSES:
            raise _Bad(f"is not a valid xpnn model (unknown loss {compiled['loss']!r})")
        payload.loss = _construct(LOSS_CLASSES[compiled["loss"]],
                                  compiled.get("loss_config", {}), f"loss {compiled['loss']}")
        opt = compiled["optimizer"]
        _check_keys(opt, {"class", "config"}, "the optimizer")
        cls = OPTIMIZERS.get(opt["class"].lower()) if isinstance(opt["class"], str) else None
        if cls is None:
            raise _Bad(f"is not a valid xpnn model (unknown optimizer {opt['class']!r})")
        payload.optimizer = _construct(cls, opt["config"], f"optimizer {opt['class']}")
        metrics = compiled["metrics"]
        if not isinstance(metrics, list) or len(metrics) > 64 or not all(
                isinstance(m, str) for m in metrics):
            raise _Bad(f"is not a valid xpnn model (metrics {metrics!r})")
        for m in metrics:
            try:
                get_metric(m)
            except ValueError as exc:
                raise _Bad(f"is not a valid xpnn model ({exc})") from None
    if version > 1:
        payload.training = _check_training(config["training"], shapes, dtype, compiled,
                                           expected)
    return payload, expected


def _construct(cls, config, where):
    """``cls(**config)`` after checking every argument against the constructor's signature
    (names, JSON types from the annotations, finite numbers; an optimizer's ``lr`` may be a
    schedule's configuration)."""
    from .optimizers import Optimizer

    if not isinstance(config, dict):
        raise _Bad(f"is not a valid xpnn model ({where}: its arguments must be a JSON object)")
    accepted = {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
                if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for key, value in config.items():
        if key not in accepted:
            raise _Bad(f"is not a valid xpnn model ({where}: unknown argument {key!r})")
        if key == "lr" and isinstance(value, dict) and issubclass(cls, Optimizer):
            continue          # a schedule's configuration: checked by building it below
        kinds = _kinds(accepted[key])
        if not any(_matches(value, kind) for kind in kinds):
            raise _Bad(f"is not a valid xpnn model ({where}: {key}={_short(value)}, expected "
                       f"{' or '.join('finite ' + k if k == 'float' else k for k in kinds)})")
    missing = [n for n, p in accepted.items() if p.default is p.empty and n not in config]
    if missing:
        raise _Bad(f"is not a valid xpnn model ({where}: missing arguments {missing})")
    try:
        return cls(**config)
    except (ValueError, TypeError, OverflowError, KeyError, RecursionError) as exc:
        raise _Bad(f"is not a valid xpnn model ({where}: {exc})") from None


_FLOAT_MAX = float(np.finfo(np.float64).max)


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _kinds(param):
    ann = param.annotation
    if isinstance(ann, type):
        ann = ann.__name__
    names = re.findall(r"[A-Za-z_]+", ann) if isinstance(ann, str) else []
    kinds = [k for k in ("bool", "int", "float", "str", "list", "None") if k in names]
    if not kinds and param.default is not param.empty:
        kinds = ["None" if param.default is None else type(param.default).__name__]
    return kinds or ["bool", "int", "float", "str", "None"]


def _matches(value, kind):
    if kind == "None":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return _is_int(value, -MAX_WIDTH, MAX_WIDTH)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return math.isfinite(value) if isinstance(value, float) else \
            abs(value) <= _FLOAT_MAX
    if kind == "str":
        return isinstance(value, str) and len(value) <= 256
    if kind == "list":        # its items are checked by the constructor that takes it
        return isinstance(value, list) and len(value) <= MAX_WIDTH
    return False


def _param_shapes(layers, n_in):
    """``[(description, shape)]`` of the parameters the layers get for ``n_in`` input features
    (none while ``n_in`` is unknown): computed from the configuration, nothing allocated."""
    if n_in is None:
        return []
    shapes, features = [], n_in
    for i, layer in enumerate(layers):
        if layer.in_features is not None and layer.in_features != features:
            raise _Bad(f"is not a valid xpnn model (layer {i} expects {layer.in_features} "
                       f"input features, gets {features})")
        shapes += [(f"{name} of layer {i}", shape)
                   for name, shape in layer.param_shapes(features)]
        features = layer.output_features(features)
    return shapes


def layer_from_spec(spec, where):
    """A layer from its saved form ``{"class": ..., "config": ...}``, with the checks every
    layer of a model file gets (layers holding layers, as :class:`~xpnn.Columns`, build theirs
    through this). Raises ValueError naming ``where`` and the problem."""
    from .layers import LAYERS

    try:
        _check_keys(spec, {"class", "config"}, where)
        cls = LAYERS.get(spec["class"]) if isinstance(spec["class"], str) else None
        if cls is None:
            raise _Bad(f"is not a valid xpnn model ({where}: unknown layer class "
                       f"{_short(spec['class'])})")
        return _construct(cls, spec["config"], f"{where}: {spec['class']}")
    except _Bad as exc:
        message = str(exc).removeprefix("is not a valid xpnn model (").removesuffix(")")
        raise ValueError(message) from None


def _check_training(training, shapes, dtype, compiled, expected):
    _check_keys(training, _TRAINING_KEYS | _OPTIONAL_TRAINING_KEYS, "'training'",
                required=_TRAINING_KEYS)
    factors = training.get("param_factors", [[1.0, 1.0]] * len(shapes))
    if not isinstance(factors, list) or len(factors) != len(shapes) or not all(
            isinstance(f, list) and len(f) == 2 and all(
                _matches(v, "float") and math.isfinite(v) and v >= 0 for v in f)
            for f in factors):
        raise _Bad("is not a valid xpnn model (param_factors must be a [lr_factor, wd_factor] "
                   f"pair of finite numbers >= 0 for each of the {len(shapes)} parameters)")
    opt = training["optimizer"]
    if (opt is None) != (compiled is None):
        raise _Bad("is not a valid xpnn model (optimizer state and compile settings disagree)")
    out = {"optimizer_state": [], "iterations": 0,
           "param_factors": [[float(a), float(b)] for a, b in factors]}
    if opt is not None:
        _check_keys(opt, {"iterations", "lr", "state"}, "the optimizer state")
        if not _is_int(opt["iterations"]):
            raise _Bad(f"is not a valid xpnn model (iterations {opt['iterations']!r})")
        if not _matches(opt["lr"], "float") or opt["lr"] < 0:
            raise _Bad(f"is not a valid xpnn model (current learning rate "
                       f"{_short(opt['lr'])})")
        out["lr"] = float(opt["lr"])
        states = opt["state"]
        if not isinstance(states, list) or len(states) not in (0, len(shapes)):
            raise _Bad(f"is not a valid xpnn model (optimizer state for "
                       f"{len(states) if isinstance(states, list) else '?'} parameters, the "
                       f"model has {len(shapes)})")
        from .optimizers import OPTIMIZERS

        spec = OPTIMIZERS[compiled["optimizer"]["class"].lower()].STATE   # checked before
        keys = None
        for i, s in enumerate(states):
            _check_keys(s, spec.keys, f"optimizer state {i}", required=())
            if keys is not None and set(s) != keys:
                raise _Bad("is not a valid xpnn model (optimizer state entries differ "
                           "between parameters)")
            keys = set(s)
            for key, value in s.items():
                if key == "step":
                    if not _is_int(value):
                        raise _Bad(f"is not a valid xpnn model (optimizer {key} {value!r})")
                elif value != f"opt_{i}_{key}":
                    raise _Bad(f"is not a valid xpnn model (optimizer state {i} refers to "
                               f"{value!r})")
                else:
                    expected[value] = _Expect(shapes[i][1], _WEIGHT_DTYPES,
                                              f"optimizer {key} of parameter {i}",
                                              target=dtype,
                                              nonnegative=key in spec.nonnegative)
        out["iterations"] = opt["iterations"]
        out["optimizer_state"] = states
    rng = training["rng"]
    _check_rng(rng)
    out["rng"] = rng
    if not _is_int(training["epochs_trained"]):
        raise _Bad(f"is not a valid xpnn model (epochs_trained "
                   f"{training['epochs_trained']!r})")
    out["epochs_trained"] = training["epochs_trained"]
    position = training["position"]
    if position is not None:
        try:
            position = Position.from_json(position, len(compiled["metrics"]) if compiled else 0)
        except ValueError as exc:
            raise _Bad(f"is not a valid xpnn model ({exc})") from None
    out["position"] = position
    cbs = training["callbacks"]
    if not isinstance(cbs, list) or len(cbs) > 1000:
        raise _Bad("is not a valid xpnn model ('callbacks' must be a list)")
    for j, cb in enumerate(cbs):
        _check_keys(cb, {"class", "state"}, f"callback state {j}")
        if not isinstance(cb["class"], str) or not isinstance(cb["state"], dict):
            raise _Bad(f"is not a valid xpnn model (callback state {j})")
        _scan(cb["state"], expected, f"the {cb['class']} state")
    out["callbacks"] = cbs
    return out


def _check_rng(rng, what="the random generator state"):
    try:
        check_rng_state(rng, what)
    except ValueError as exc:
        raise _Bad(f"is not a valid xpnn model ({exc})") from None


def _scan(value, expected, owner, depth=0):
    """Check a callback state's JSON (nesting, array references) and register its arrays."""
    if depth > MAX_DEPTH:
        raise _Bad(f"is not a valid xpnn model ({owner} is nested too deeply)")
    if isinstance(value, list):
        for v in value:
            _scan(v, expected, owner, depth + 1)
    elif isinstance(value, dict):
        if "__float__" in value:
            if set(value) != {"__float__"} or value["__float__"] not in ("inf", "-inf", "nan"):
                raise _Bad(f"is not a valid xpnn model ({owner}: bad number {value!r})")
        elif "__array__" in value:
            _check_keys(value, {"__array__", "dtype", "shape"}, f"an array of {owner}")
            name, dt, shape = value["__array__"], value["dtype"], value["shape"]
            if (not isinstance(name, str) or not re.fullmatch(r"cb_[0-9]{1,9}", name)
                    or name in expected):
                raise _Bad(f"is not a valid xpnn model ({owner} refers to array {name!r})")
            if dt not in _STATE_DTYPES or not isinstance(shape, list) or len(shape) > 8 or \
                    not all(_is_int(d, 0, MAX_WIDTH) for d in shape):
                raise _Bad(f"is not a valid xpnn model ({owner}: array {name} is declared "
                           f"as {dt!r} {shape!r})")
            expected[name] = _Expect(tuple(shape), (dt,), f"array {name} of {owner}")
        else:
            for v in value.values():
                _scan(v, expected, owner, depth + 1)


def _resolve(value, arrays):
    if isinstance(value, list):
        return [_resolve(v, arrays) for v in value]
    if isinstance(value, dict):
        if "__float__" in value:
            return float(value["__float__"])
        if "__array__" in value:
            return arrays[value["__array__"]]
        return {k: _resolve(v, arrays) for k, v in value.items()}
    return value


def _fill(payload, arrays):
    n = sum(k.startswith("param_") for k in arrays)
    payload.weights = [arrays[f"param_{i}"] for i in range(n)]
    t = payload.training
    if t is None:
        return
    t["optimizer_state"] = [{k: arrays[v] if isinstance(v, str) else v for k, v in s.items()}
                            for s in t["optimizer_state"]]
    t["callbacks"] = [(cb["class"], _resolve(cb["state"], arrays)) for cb in t["callbacks"]]


# ====================================================================== building
def build(payload: Payload, cls, backend=None):
    """The model (of class ``cls``, :class:`~xpnn.Sequential`) a validated :class:`Payload`
    describes, compiled when it was, with its weights and training state."""
    from .losses import LOSS_CLASSES

    cfg = payload.config
    try:
        model = cls(*payload.layers, backend=backend or cfg["backend"],
                           dtype=cfg["dtype"], seed=cfg["seed"])
        if payload.weights:
            if not model.built:
                model.build(cfg["n_features_in"])
            model.set_weights(payload.weights)
        compiled = cfg["compile"]
        if compiled:
            model.compile(loss=payload.loss or LOSS_CLASSES[compiled["loss"]](),
                          optimizer=payload.optimizer,
                          metrics=compiled["metrics"])
    except ValueError as exc:
        raise ValueError(f"{payload.path} is not a valid xpnn model ({exc})") from None
    if payload.training is not None:
        _apply_training(model, payload.training)
    return model


def _apply_training(model, training):
    for p, (lr_factor, wd_factor) in zip(model.params, training["param_factors"], strict=True):
        p.lr_factor, p.wd_factor = lr_factor, wd_factor
    opt = model.optimizer
    if opt is not None:
        be = model.backend
        opt.state = [{k: be.asarray(v, dtype=model.dtype) if isinstance(v, np.ndarray) else v
                      for k, v in s.items()} for s in training["optimizer_state"]]
        opt.iterations = training["iterations"]
        opt.lr = training["lr"]
    model.rng.bit_generator.state = training["rng"]
    model.epochs_trained = training["epochs_trained"]


def restore_into(model, payload: Payload) -> None:
    """Put the training state of ``payload`` (a checkpoint of this very architecture) into
    ``model`` in place: weights, optimizer hyperparameters and state, random generator, epochs
    trained. Raises ValueError naming the file when the checkpoint belongs to another model."""
    check_fits(model, payload)
    if payload.weights:
        model.set_weights(payload.weights)
    if model.optimizer is not None:          # hyperparameters (the current lr: below)
        opt, saved = model.optimizer, payload.optimizer
        opt.schedule = getattr(saved, "schedule", None)
        for key in saved.get_config():
            setattr(opt, key, getattr(saved, key))
    _apply_training(model, payload.training)


#: Layer settings a callback changes during ``fit`` (:class:`~xpnn.DropoutScheduler` sets
#: ``Dropout.p``): a checkpoint written in between still fits the model.
_SCHEDULED = {"Dropout": ("p",)}


def _architecture(layers):
    """Layer configurations without the settings in :data:`_SCHEDULED`."""
    if not isinstance(layers, list):
        return layers
    out = []
    for spec in layers:
        drop = _SCHEDULED.get(spec.get("class"), ()) if isinstance(spec, dict) else ()
        if drop and isinstance(spec.get("config"), dict):
            spec = {**spec, "config": {k: v for k, v in spec["config"].items()
                                       if k not in drop}}
        out.append(spec)
    return out


def check_fits(model, payload: Payload) -> None:
    """Raise ValueError naming the file unless ``payload`` is a checkpoint (with training
    state) of ``model``'s architecture, dtype and compile settings."""
    if payload.training is None:
        raise ValueError(f"{payload.path} holds no training state (written by an older xpnn)")
    mine, theirs = model.get_config(), payload.config
    for key, what in (("layers", "layers"), ("dtype", "dtype"),
                      ("n_features_in", "input width")):
        if key == "layers" and _architecture(mine[key]) == _architecture(theirs[key]):
            continue
        if mine[key] != theirs[key]:
            raise ValueError(f"{payload.path} was written by a different model: its {what} "
                             f"are {theirs[key]!r}, this model's {mine[key]!r}")
    a, b = mine["compile"], theirs["compile"]
    if (a is None) != (b is None) or (a is not None and (
            a["loss"] != b["loss"] or a["optimizer"]["class"] != b["optimizer"]["class"])):
        raise ValueError(f"{payload.path} was written by a model compiled differently "
                         f"({b and (b['loss'], b['optimizer']['class'])} vs "
                         f"{a and (a['loss'], a['optimizer']['class'])})")

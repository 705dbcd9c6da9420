"""Property-based fuzzing of ``xpnn.load``: truncated files, flipped bytes and mutated JSON
(with and without a recomputed checksum) give a ValueError naming the file or a model
identical to the saved one (or, for a consistently re-checksummed mutation, a valid model),
never any other exception, within a time limit (hypothesis ``deadline``) and a memory bound."""

from __future__ import annotations

import copy
import json
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xpnn
from xpnn import serialization
from xpnn.backend import to_numpy

FUZZ = settings(max_examples=120, deadline=2000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
MEMORY_LIMIT = 16 * 2**20        # bytes traced while loading a 10 KB file
FOLDER = Path(tempfile.mkdtemp(prefix="xpnn-fuzz-"))


def _original():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, size=40)
    model = xpnn.Sequential(xpnn.Dense(4, 8), xpnn.LeakyReLU(0.1), xpnn.Dropout(0.2),
                            xpnn.Dense(8, 3), xpnn.Softmax(), seed=1)
    model.compile(loss="crossentropy", optimizer=xpnn.SGD(0.05, momentum=0.9),
                  metrics=["accuracy"])
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    path = FOLDER / "original.npz"
    model.save(path)
    return model, path.read_bytes(), X


MODEL, DATA, X = _original()
with np.load(FOLDER / "original.npz") as _f:
    CONFIG = json.loads(str(_f["__xpnn__"]))
    ARRAYS = {k: _f[k] for k in _f.files if k != "__xpnn__"}


def fingerprint(model):
    opt = model.optimizer
    return (json.dumps(model.get_config(), sort_keys=True),
            [w.tobytes() for w in model.get_weights()],
            [{k: to_numpy(v).tobytes() if hasattr(v, "shape") else v for k, v in s.items()}
             for s in opt.state], opt.iterations, model.rng.bit_generator.state)


ORIGINAL = fingerprint(MODEL)


def load_bounded(data: bytes, name="fuzzed.npz"):
    """``xpnn.load`` of ``data``: the model, or the ValueError (which must name the file);
    any other exception fails the test. Memory traced while loading stays bounded."""
    path = FOLDER / name
    path.write_bytes(data)
    tracemalloc.start()
    try:
        model = xpnn.load(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"loading used {peak} bytes"
    return model


def write_file(config, arrays, checksum=True):
    if checksum:
        try:
            config["checksum"] = serialization._checksum(
                config, {k: serialization._npy_bytes(v) for k, v in arrays.items()})
        except ValueError:
            pass
    path = FOLDER / "built.npz"
    np.savez(path, __xpnn__=np.array(json.dumps(config)), **arrays)
    return path.read_bytes()


@FUZZ
@given(cut=st.integers(0, len(DATA)))
def test_truncated_files(cut):
    result = load_bounded(DATA[:cut])
    if cut < len(DATA):
        assert isinstance(result, ValueError)
    else:
        assert fingerprint(result) == ORIGINAL


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, len(DATA) - 1), st.integers(1, 255)),
                      min_size=1, max_size=8))
def test_flipped_bytes(flips):
    data = bytearray(DATA)
    for at, mask in flips:
        data[at] ^= mask
    result = load_bounded(bytes(data))
    if not isinstance(result, ValueError):      # e.g. a flip in a ZIP timestamp
        assert fingerprint(result) == ORIGINAL


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def nested(depth):
    """``[[...[]...]]``, ``depth`` lists deep (deeper JSON: test_deeply_nested_json)."""
    value = []
    for _ in range(depth):
        value = [value]
    return value


PATHS = [p for p in _paths(CONFIG) if p and p != ("checksum",)]
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-2**70, 2**70), st.sampled_from([0, 1, -1, 2**31, 2**63, 10**400, 12000]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["Dense", "Adam", "numpy", "float64", "PCG64", "exp_avg", "param_0"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4),
                   st.dictionaries(st.text(max_size=6), SCALARS, max_size=3),
                   st.integers(1, 200).map(lambda depth: nested(depth)))


@st.composite
def mutated_configs(draw):
    config = copy.deepcopy(CONFIG)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = config
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(VALUES)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = draw(VALUES)
            else:
                parent.append(draw(VALUES))
        except (KeyError, IndexError, TypeError):
            pass                     # the path went away with an earlier mutation
    return config


@FUZZ
@given(config=mutated_configs(), rechecksum=st.booleans())
def test_mutated_json(config, rechecksum):
    """Without a fresh checksum every real change is caught; with one (a hostile but
    consistent file) the result is a ValueError or a model that works."""
    same = json.dumps(config, sort_keys=True) == json.dumps(CONFIG, sort_keys=True)
    result = load_bounded(write_file(config, dict(ARRAYS), checksum=rechecksum))
    if isinstance(result, ValueError):
        assert not same
        return
    if not rechecksum or same:
        assert fingerprint(result) == ORIGINAL
        return
    out = to_numpy(result.predict(X))            # a valid model: it predicts finite values
    assert np.all(np.isfinite(out))


@FUZZ
@given(name=st.sampled_from(sorted(ARRAYS)),
       change=st.sampled_from(["drop", "float64", "complex", "reshape", "huge", "int", "nan"]))
def test_mutated_arrays(name, change):
    arrays = dict(ARRAYS)
    a = arrays[name]
    if change == "drop":
        del arrays[name]
    elif change == "float64":
        arrays[name] = a.astype(np.float64) + 1e300
    elif change == "complex":
        arrays[name] = a + 1j
    elif change == "reshape":
        arrays[name] = a.reshape(-1)[: max(a.size - 1, 0)]
    elif change == "huge":
        arrays[name] = np.zeros((a.size + 7,) * 2, np.float32)
    elif change == "int":
        arrays[name] = a.astype(np.int64)
    elif change == "nan":
        arrays[name] = np.full_like(a, np.nan)
    result = load_bounded(write_file(copy.deepcopy(CONFIG), arrays))
    assert isinstance(result, ValueError)


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deeply_nested_json(depth):
    config = copy.deepcopy(CONFIG)
    path = FOLDER / "deep.npz"
    text = json.dumps(config)[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    np.savez(path, __xpnn__=np.array(text), **ARRAYS)
    with pytest.raises(ValueError, match="deep.npz"):
        xpnn.load(path)


def test_header_entry_declaring_a_huge_string_is_refused_cheaply():
    """An ``__xpnn__`` entry whose .npy header declares 10**10 characters (40 GB) is refused
    from the header, before anything that size is allocated."""
    import zipfile

    header = {"descr": "<U10000000000", "fortran_order": False, "shape": ()}
    text = repr(header).encode()
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    entry = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + b"abcd"
    path = FOLDER / "huge-header.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("__xpnn__.npy", entry)
    result = load_bounded(path.read_bytes(), "huge-header.npz")
    assert isinstance(result, ValueError) and "unreadable header" in str(result)


def test_overlapping_entries_are_refused():
    """Directory entries all pointing at the same bytes (a way to make a small file expand into
    many large arrays) are refused from the ZIP directory, before anything is read."""
    import zipfile

    path = FOLDER / "overlap.npz"
    path.write_bytes(DATA)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    big = max(infos, key=lambda i: i.file_size)
    assert big.file_size * len(infos) > len(DATA)
    data = bytearray(DATA)
    records = [i for i in range(len(data) - 3) if data[i:i + 4] == b"PK\x01\x02"]
    assert len(records) == len(infos)
    for r in records:        # central directory: sizes at +20/+24, local header offset at +42
        data[r + 20:r + 28] = big.compress_size.to_bytes(4, "little") * 2
        data[r + 42:r + 46] = big.header_offset.to_bytes(4, "little")
    result = load_bounded(bytes(data), "overlap.npz")
    assert isinstance(result, ValueError) and "overlap" in str(result)

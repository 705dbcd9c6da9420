"""Model files (xpnn.serialization): exact continuation after save/load, atomic writes, and
refusal of every damaged, hostile or foreign file with a ValueError naming it."""

from __future__ import annotations

import json
import os
import zipfile
from functools import partial

import _models
import numpy as np
import pytest
from _models import blobs

import xpnn
from xpnn import serialization
from xpnn.backend import to_numpy

mlp = partial(_models.mlp, hidden=16, dropout=0.25)     # 4 → 16 → 3


OPTIMIZERS = {
    "sgd-momentum": lambda: xpnn.SGD(0.05, momentum=0.9),
    "sgd-nesterov": lambda: xpnn.SGD(0.05, momentum=0.9, nesterov=True),
    "rmsprop": lambda: xpnn.RMSprop(0.005, momentum=0.5),
    "adam": lambda: xpnn.Adam(0.01),
    "adamw": lambda: xpnn.AdamW(0.01, weight_decay=0.05),
}


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------ exact continuation
@pytest.mark.parametrize("path_kind", ["fast", "generic"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_fit_save_load_fit_equals_one_long_fit(tmp_path, opt, path_kind):
    """fit(3); save; load; fit(3) gives bitwise the weights of fit(6): the file carries the
    optimizer's moments and step counts, the learning rate and the generator behind the
    shuffles and dropout masks."""
    X, y = blobs(72)

    def fresh():
        model = mlp()
        model.fastpath = path_kind == "fast"
        model.compile(loss="crossentropy", optimizer=OPTIMIZERS[opt](), metrics=["accuracy"])
        return model

    whole = fresh()
    whole.fit(X, y, epochs=6, batch_size=16, verbose=0)
    first = fresh()
    first.fit(X, y, epochs=3, batch_size=16, verbose=0)
    first.save(tmp_path / "half.npz")
    resumed = xpnn.load(tmp_path / "half.npz")
    resumed.fastpath = path_kind == "fast"
    select = xpnn.fastpath.select
    assert (select(resumed) is None) == (select(first) is None)
    assert (select(first) is None) == (path_kind == "generic")
    resumed.fit(X, y, epochs=3, batch_size=16, verbose=0)
    assert_same_weights(resumed.get_weights(), whole.get_weights())
    assert resumed.optimizer.iterations == whole.optimizer.iterations


def test_current_learning_rate_is_saved(tmp_path):
    X, y = blobs(72)
    model = mlp()
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01))
    model.fit(X, y, epochs=2, verbose=0,
              callbacks=[xpnn.LearningRateScheduler(lambda epoch, lr: lr * 0.5)])
    model.save(tmp_path / "m.npz")
    assert xpnn.load(tmp_path / "m.npz").optimizer.lr == 0.0025


def test_checkpoint_resumes_on_another_backend(tmp_path):
    """A file written on NumPy continues on torch: the same run within float tolerance."""
    pytest.importorskip("torch")
    X, y = blobs(72)
    whole = mlp(dtype="float64")
    whole.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01))
    whole.fit(X, y, epochs=4, batch_size=16, verbose=0)
    first = mlp(dtype="float64")
    first.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01))
    first.fit(X, y, epochs=2, batch_size=16, verbose=0)
    first.save(tmp_path / "m.npz")
    resumed = xpnn.load(tmp_path / "m.npz", backend="torch")
    assert resumed.backend.name == "torch"
    resumed.fit(X, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(resumed.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_save_appends_npz_and_writes_identical_bytes(tmp_path):
    model = mlp()
    model.compile(loss="crossentropy", optimizer="adam")
    model.save(tmp_path / "plain")
    assert (tmp_path / "plain.npz").exists()
    model.save(tmp_path / "again.npz")
    assert (tmp_path / "plain.npz").read_bytes() == (tmp_path / "again.npz").read_bytes()


def test_version_1_files_keep_loading(tmp_path):
    """The previous format (JSON + param_i, no training state) still loads."""
    model = mlp()
    model.compile(loss="crossentropy", optimizer=xpnn.SGD(0.1), metrics=["accuracy"])
    config = model.get_config()
    config["version"] = 1
    arrays = {"__xpnn__": np.array(json.dumps(config))}
    arrays.update({f"param_{i}": w for i, w in enumerate(model.get_weights())})
    np.savez(tmp_path / "v1.npz", **arrays)
    loaded = xpnn.load(tmp_path / "v1.npz")
    assert_same_weights(loaded.get_weights(), model.get_weights())
    assert loaded.optimizer.get_config() == model.optimizer.get_config()


# ------------------------------------------------------------------ atomic writes
def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    serialization.atomic_write(target, lambda f: f.write(b"old"))

    def fails(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        serialization.atomic_write(target, fails)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]          # no temporary file left behind


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model = mlp()
    model.compile(loss="crossentropy", optimizer="adam")
    model.save(tmp_path / "m.npz")
    before = (tmp_path / "m.npz").read_bytes()

    def interrupt(tmp, final):
        assert os.path.getsize(tmp) > 0 and final.endswith("m.npz")
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization, "_before_replace", interrupt)
    model.fit(*blobs(72), epochs=1, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "m.npz")
    assert (tmp_path / "m.npz").read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]


# ------------------------------------------------------------------ bad files
@pytest.fixture
def saved(tmp_path):
    X, y = blobs(72)
    model = mlp()
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01), metrics=["accuracy"])
    model.fit(X, y, epochs=1, verbose=0)
    path = tmp_path / "good.npz"
    model.save(path)
    return path, model


def rewrite(src, dst, change_json=None, change_arrays=None, checksum=True):
    """Copy a model file, editing its JSON and arrays; recompute the checksum (a consistent
    but hostile file) unless told not to."""
    with np.load(src, allow_pickle=False) as f:
        config = json.loads(str(f["__xpnn__"]))
        arrays = {k: f[k] for k in f.files if k != "__xpnn__"}
    if change_json:
        config = change_json(config) or config
    if change_arrays:
        arrays = change_arrays(arrays) or arrays
    if checksum:
        try:
            config["checksum"] = serialization._checksum(
                config, {k: serialization._npy_bytes(v) for k, v in arrays.items()})
        except ValueError:          # NaN/Infinity in the JSON: refused before the checksum
            config["checksum"] = "sha256:0"
    np.savez(dst, __xpnn__=np.array(json.dumps(config)), **arrays)
    return dst


def expect_refused(path, match):
    with pytest.raises(ValueError, match=match) as info:
        xpnn.load(path)
    assert str(path) in str(info.value)


def test_truncated_and_flipped_files_are_refused(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        expect_refused(tmp_path / "cut.npz", "not a NumPy .npz archive, or a truncated one")
    # a flipped bit in the weights' bytes: the checksum catches it (the ZIP CRC too)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("param_0.npy")
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    flipped = bytearray(data)
    flipped[at] ^= 0x10
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    expect_refused(tmp_path / "flip.npz", "damaged")


def test_changed_content_fails_the_checksum(saved, tmp_path):
    path, _ = saved

    def bump(arrays):
        arrays["param_0"] = arrays["param_0"] + np.float32(1e-3)

    expect_refused(rewrite(path, tmp_path / "a.npz", change_arrays=bump, checksum=False),
                   "checksum mismatch")

    def lr(config):
        config["compile"]["optimizer"]["config"]["lr"] = 0.5

    expect_refused(rewrite(path, tmp_path / "b.npz", change_json=lr, checksum=False),
                   "checksum mismatch")


@pytest.mark.parametrize("case, match", [
    ("huge_dense", r"parameter 0 \(W of layer 0\) has shape \(4, 16\), expected \(12000, "),
    ("leaky_nan", "non-finite number NaN"),
    ("lr_inf", "non-finite number Infinity"),
    ("lr_huge", r"lr=1000000.*expected finite float"),
    ("lr_bool", "lr=True"),
    ("unknown_layer", "unknown layer class 'Conv2D'"),
    ("unknown_arg", "unknown argument 'kernel'"),
    ("missing_array", "missing arrays: param_3"),
    ("extra_array", "unexpected arrays: param_9"),
    ("complex", "has dtype complex64"),
    ("beyond_float32", "beyond the float32 range"),
    ("nan_weight", "NaN or infinite"),
    ("string_weight", "has dtype <U"),
    ("negative_second_moment", "negative values"),
    ("bad_rng", "random generator state"),
    ("step_mismatch", "optimizer state for 2 parameters"),
    ("dropout_p", "Dropout"),
    ("other_format", "format tag missing"),
])
def test_hostile_files_are_refused(saved, tmp_path, case, match):
    path, _ = saved

    def js(config):
        layers = config["layers"]
        if case == "huge_dense":
            layers[0]["config"].update(in_features=12000, out_features=12000)
            layers[3]["config"]["in_features"] = 12000
            config["n_features_in"] = 12000
        elif case == "leaky_nan":
            layers[1] = {"class": "LeakyReLU", "config": {"negative_slope": float("nan")}}
        elif case == "lr_inf":
            config["compile"]["optimizer"]["config"]["lr"] = float("inf")
        elif case == "lr_huge":
            config["compile"]["optimizer"]["config"]["lr"] = 10 ** 309   # an int beyond floats
        elif case == "lr_bool":
            config["compile"]["optimizer"]["config"]["lr"] = True
        elif case == "unknown_layer":
            layers[1] = {"class": "Conv2D", "config": {}}
        elif case == "unknown_arg":
            layers[0]["config"]["kernel"] = 3
        elif case == "bad_rng":
            config["training"]["rng"]["state"]["state"] = -1
        elif case == "step_mismatch":
            config["training"]["optimizer"]["state"] = \
                config["training"]["optimizer"]["state"][:2]
        elif case == "dropout_p":
            layers[2]["config"]["p"] = 1.5
        elif case == "other_format":
            config["format"] = "keras"

    def arr(arrays):
        if case == "missing_array":
            del arrays["param_3"]
        elif case == "extra_array":
            arrays["param_9"] = np.zeros(3, np.float32)
        elif case == "complex":
            arrays["param_1"] = arrays["param_1"] + 1j
        elif case == "beyond_float32":
            arrays["param_0"] = np.full((4, 16), 1e300)
        elif case == "nan_weight":
            arrays["param_0"] = np.full((4, 16), np.nan, np.float32)
        elif case == "string_weight":
            arrays["param_1"] = np.array(["x"] * 16)
        elif case == "negative_second_moment":
            arrays["opt_0_exp_avg_sq"] = -np.ones((4, 16), np.float32)

    bad = rewrite(path, tmp_path / f"{case}.npz", change_json=js, change_arrays=arr)
    expect_refused(bad, match)


def test_huge_declared_model_is_refused_before_allocating(saved, tmp_path):
    """A small file declaring a 144M-parameter Dense is refused from the headers alone."""
    import tracemalloc

    path, _ = saved

    def js(config):
        config["layers"][0]["config"].update(in_features=12000, out_features=12000)
        config["layers"][3]["config"]["in_features"] = 12000
        config["n_features_in"] = 12000

    bad = rewrite(path, tmp_path / "huge.npz", change_json=js)
    tracemalloc.start()
    with pytest.raises(ValueError, match="expected"):
        xpnn.load(bad)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5 * 2**20


def test_compressed_and_oversized_entries_are_refused(saved, tmp_path):
    path, _ = saved
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    np.savez_compressed(tmp_path / "deflated.npz", **arrays)
    expect_refused(tmp_path / "deflated.npz", "compressed")
    # an entry whose header promises more data than the entry holds
    def shrink(a):
        a["param_1"] = a["param_1"][:8]
    expect_refused(rewrite(path, tmp_path / "short.npz", change_arrays=shrink), "shape")


def test_load_error_messages_for_foreign_files(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises((IsADirectoryError, PermissionError)):
        xpnn.load(tmp_path / "dir.npz")
    with zipfile.ZipFile(tmp_path / "text.npz", "w") as zf:
        zf.writestr("readme.txt", "hello")
    expect_refused(tmp_path / "text.npz", "not a .npy array")


def test_pickle_goes_through_the_same_validation():
    import pickle

    model = mlp()
    model.compile(loss="crossentropy", optimizer="adam")
    state = model.__getstate__()
    state["arrays"]["param_0"] = np.full((4, 16), np.inf, np.float32)
    clone = object.__new__(xpnn.Sequential)
    with pytest.raises(ValueError, match="pickled model.*NaN or infinite"):
        clone.__setstate__(state)
    twin = pickle.loads(pickle.dumps(model))
    assert_same_weights(twin.get_weights(), model.get_weights())
    np.testing.assert_array_equal(to_numpy(twin.predict(blobs(72)[0])),
                                  to_numpy(model.predict(blobs(72)[0])))


def test_pickles_of_the_earlier_layout_still_load():
    """A state dict as the earlier ``__getstate__`` wrote it (config, weights, optimizer state,
    rng) unpickles into the same model."""
    X, y = blobs(72)
    model = mlp()
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01))
    model.fit(X, y, epochs=1, verbose=0)
    config = model.get_config()
    config["version"] = 1
    old = {"config": config, "weights": model.get_weights(),
           "optimizer_state": [{k: np.array(to_numpy(v)) if hasattr(v, "shape") else v
                                for k, v in s.items()} for s in model.optimizer.state],
           "optimizer_iterations": model.optimizer.iterations,
           "rng": model.rng.bit_generator.state, "extra": {}}
    twin = object.__new__(xpnn.Sequential)
    twin.__setstate__(old)
    model.fit(X, y, epochs=1, verbose=0)
    twin.fit(X, y, epochs=1, verbose=0)
    assert_same_weights(twin.get_weights(), model.get_weights())


def test_every_file_xpnn_writes_goes_through_atomic_write():
    """No module writes a file directly: opening for writing, ``write_bytes``/``write_text``,
    ``numpy.save*``/``tofile`` appear only in ``atomic_write`` itself and in the dataset
    downloader, which streams into a temporary file renamed once its checksum matched."""
    import ast
    from pathlib import Path

    # (locks.acquire creates its lock file with O_EXCL: creating it is the atomic step; a lock
    # torn by a crash is unreadable and taken over)
    allowed = {("serialization.py", "atomic_write"), ("_home.py", "_download"),
               ("locks.py", "acquire")}
    package = Path(xpnn.__file__).parent
    found = []

    def visit(node, path, function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            writes = name in ("write_bytes", "write_text", "savez", "savez_compressed",
                              "tofile") or (name == "save" and isinstance(f, ast.Attribute)
                                            and getattr(f.value, "id", "") in ("np", "numpy"))
            if name in ("open", "fdopen"):
                modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
                modes += [k.value.value for k in node.keywords
                          if k.arg == "mode" and isinstance(k.value, ast.Constant)]
                writes = any(isinstance(m, str) and set(m) & set("wax+") for m in modes)
            if writes and (path.name, function) not in allowed:
                found.append(f"{path.relative_to(package)}:{node.lineno} {name}")
        for child in ast.iter_child_nodes(node):
            visit(child, path, function)

    for path in package.rglob("*.py"):
        visit(ast.parse(path.read_text()), path, "<module>")
    assert not found, f"files written without atomic_write: {found}"

"""What a new user meets first: arguments in the forms NumPy, scikit-learn and Keras accept,
errors that name the argument at fault and the fix, files found and written where expected."""

from __future__ import annotations

import os

import numpy as np
import pytest

import xpnn


def _model(**kw):
    model = xpnn.Sequential(xpnn.Dense(3, 4), xpnn.ReLU(), xpnn.Dense(4, 2), xpnn.Softmax(),
                            seed=0, **kw)
    model.compile("crossentropy", xpnn.Adam(1e-2))
    return model


@pytest.mark.parametrize("dtype, name", [(np.float64, "float64"), (np.float32, "float32"),
                                         (np.dtype("float64"), "float64"),
                                         ("float32", "float32"), (float, "float64")])
def test_dtype_accepts_numpy_dtypes_and_types(dtype, name):
    model = _model(dtype=dtype)
    assert model.dtype == name
    assert xpnn.to_numpy(model.params[0].data).dtype == np.dtype(name)
    assert xpnn.mlp([3, 2], dtype=dtype).dtype == name



@pytest.mark.parametrize("dtype", [np.float64, np.dtype("float64")])
def test_estimators_accept_numpy_dtypes(dtype):
    from xpnn.sklearn import MLPClassifier, TabularRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, dtype=dtype, random_state=0)
    with pytest.warns(Warning):                    # ConvergenceWarning after 5 iterations
        clf.fit(X, (X[:, 0] > 0).astype(int))
    assert clf.coefs_[0].dtype == np.float64
    reg = TabularRegressor(hidden_layer_sizes=(4,), max_iter=2, dtype=dtype, random_state=0)
    assert reg.fit(X, X[:, 1]).predict(X).dtype == np.float64
    with pytest.raises(ValueError, match="dtype must be"):
        MLPClassifier(dtype=np.int32).fit(X, (X[:, 0] > 0).astype(int))

@pytest.mark.parametrize("dtype", ["float16", np.int32, 3, None, True])
def test_dtype_refused_names_the_choices(dtype):
    with pytest.raises(ValueError, match=r"Sequential: dtype must be one of \('float32', "
                                         r"'float64'\)"):
        xpnn.Sequential(xpnn.Dense(2, 1), dtype=dtype)


def test_compile_takes_classes_as_their_default_instances():
    model = xpnn.Sequential(xpnn.Dense(3, 1), xpnn.Sigmoid())
    model.compile(xpnn.BinaryCrossEntropy, xpnn.Adam)
    assert type(model.optimizer) is xpnn.Adam and model.optimizer.lr == xpnn.Adam().lr
    assert type(model.loss) is xpnn.BinaryCrossEntropy
    model.compile("mse", xpnn.SGD)
    assert type(model.optimizer) is xpnn.SGD and model.optimizer.lr == xpnn.SGD().lr


def test_load_names_a_bad_backend_argument_not_the_file(tmp_path):
    path = _model().save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"load: backend='pytorch' is not a backend") as info:
        xpnn.load(path, backend="pytorch")
    assert "not a valid" not in str(info.value)


def test_save_returns_the_path_and_load_finds_it_without_suffix(tmp_path):
    model = _model()
    path = model.save(tmp_path / "model")
    assert path == os.fspath(tmp_path / "model.npz") and os.path.isfile(path)
    again = xpnn.load(tmp_path / "model")
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_writing_into_a_missing_folder_names_the_folder_not_a_temporary_file(tmp_path):
    model = _model()
    target = tmp_path / "nope" / "m.npz"
    with pytest.raises(FileNotFoundError, match="the folder .*nope does not exist") as info:
        model.save(target)
    assert ".tmp" not in str(info.value)
    pytest.importorskip("onnx")
    with pytest.raises(FileNotFoundError, match="the folder .*nope does not exist") as info:
        model.export(tmp_path / "nope" / "m.onnx")
    assert ".tmp" not in str(info.value)


def test_non_finite_data_is_located_and_counted_in_good_grammar():
    model = _model()
    X = np.ones((6, 3))
    X[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"^X contains 1 NaN or infinite value \(at row 4, "
                                         r"column 2\)$"):
        model.predict(X)
    X[5, 0] = np.inf
    X[1, 1] = -np.inf
    with pytest.raises(ValueError, match=r"^X contains 3 NaN or infinite values \(the first at "
                                         r"row 1, column 1\)$"):
        model.predict(X)
    y = np.zeros(6)
    y[3] = np.nan
    reg = xpnn.Sequential(xpnn.Dense(3, 1), seed=0).compile("mse", "sgd")
    with pytest.raises(ValueError, match=r"^y contains 1 NaN or infinite value \(at index 3\)"):
        reg.fit(np.ones((6, 3)), y, verbose=0)
    big = np.ones((6, 3))
    big[2, 1] = big[3, 0] = 1e300
    with pytest.raises(ValueError, match=r"^X contains 2 values \(the first at row 2, column 1\)"
                                         r" beyond the float32 range"):
        model.predict(big)


def test_streamed_row_with_nan_names_its_column(tmp_path):
    X = np.ones((6, 3), np.float32)
    X[4, 2] = np.nan
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(ValueError, match=r"X row 4 contains NaN or infinite values \(the first "
                                         r"in column 2\)"):
        _model().predict(np.load(tmp_path / "x.npy", mmap_mode="r"))


def test_history_records_the_learning_rate_of_every_epoch():
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    model = _model()
    model.compile("crossentropy", xpnn.SGD(xpnn.schedules.StepDecay(0.1, step_size=2)))
    history = model.fit(X, y, epochs=5, batch_size=8, verbose=0)
    assert history.history["lr"] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    model.compile("crossentropy", xpnn.Adam(0.01))
    plateau = xpnn.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10.0)
    history = model.fit(X, y, epochs=3, batch_size=8, verbose=0, callbacks=[plateau])
    assert history.history["lr"] == pytest.approx([0.01, 0.01, 0.005])   # the first epoch improves


def test_progress_bar_in_a_terminal_without_a_size():
    """A 0x0 pseudo-terminal (what some CI runners and `docker exec` give): the bars still
    show the epochs (tqdm alone draws empty lines there). Run in a child under a timeout."""
    import fcntl
    import pty
    import select
    import struct
    import subprocess
    import sys
    import termios
    import time

    code = ("import numpy as np, xpnn\n"
            "X = np.random.default_rng(0).normal(size=(64, 4)); y = (X[:, 0] > 0) * 1\n"
            "m = xpnn.Sequential(xpnn.Dense(4, 2), xpnn.Softmax(), seed=0)\n"
            "m.compile('crossentropy', 'adam')\n"
            "m.fit(X, y, epochs=2, batch_size=8, verbose=1)\n")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(xpnn.__file__)))
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave,
                             stderr=slave, env=env)
    os.close(slave)
    out, deadline = b"", time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:          # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert child.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, out
    finally:
        child.kill()
        os.close(master)
    text = out.decode(errors="replace")
    assert "Epoch 1/2: 8/8" in text and "Epoch 2/2: 8/8" in text, text


# ---------------------------------------------------------------- pandas frames
def _frame(n=40, seed=0):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "a": rng.normal(size=n), "flag": rng.random(n) > 0.5,
        "count": pd.array(rng.integers(0, 5, n), dtype="Int64"),
        "score": pd.array(rng.normal(size=n), dtype="Float64"),
        "ok": pd.array(rng.random(n) > 0.5, dtype="boolean")})
    return frame, (frame["a"] > 0).astype(int).to_numpy()


def _frame_model():
    model = xpnn.Sequential(xpnn.Dense(5, 4), xpnn.ReLU(), xpnn.Dense(4, 2), xpnn.Softmax(),
                            seed=0)
    model.compile("crossentropy", "adam")
    return model


@pytest.mark.parametrize("streamed", [False, True])
def test_frames_with_bool_and_nullable_numeric_columns_train(streamed):
    frame, y = _frame()
    plain = frame.astype({"count": "int64", "score": "float64", "ok": "bool"}).to_numpy(
        dtype=np.float64)
    reference = _frame_model()
    reference.fit(plain, y, epochs=2, batch_size=8, verbose=0)
    model = _frame_model()
    if streamed:
        model.resident_budget = 0
    model.fit(frame, y, epochs=2, batch_size=8, verbose=0)
    for a, b in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(xpnn.to_numpy(model.predict(frame)),
                                  xpnn.to_numpy(reference.predict(plain)))


def test_frame_with_missing_values_names_the_column():
    import pandas as pd

    frame, y = _frame()
    frame.loc[7, "count"] = pd.NA
    frame.loc[9, "a"] = np.nan
    model = _frame_model()
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"X contains 2 missing values \(NaN or NA; the first "
                                         r"at row 7 \(index 7\), column 'count'\)"):
        model.fit(frame, y, verbose=0)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    model.resident_budget = 0                     # streamed: the row is named when read
    with pytest.raises(ValueError, match=r"X row 7 contains NaN"):
        model.fit(frame, y, verbose=0, shuffle=False)


@pytest.mark.parametrize("streamed", [False, True])
def test_frame_with_category_and_string_columns_is_refused_naming_them(streamed):
    import pandas as pd

    frame, y = _frame()
    frame["colour"] = pd.Categorical(["red", "blue"] * 20)
    frame["name"] = ["x"] * 40
    model = _frame_model()
    if streamed:
        model.resident_budget = 0
    with pytest.raises(TypeError, match=r"X has columns that are not numeric: 'colour' "
                                        r"\(category\), 'name' \(.*\)\. Encode .*OneHotEncoder"):
        model.fit(frame, y, verbose=0)
    with pytest.raises(TypeError, match=r"X_val has a column that is not numeric: 'colour'"):
        _frame_model().fit(frame.drop(columns=["colour", "name"]), y, verbose=0,
                           validation_data=(frame.drop(columns=["name", "a"]), y))

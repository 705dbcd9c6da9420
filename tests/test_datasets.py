"""Tests for xpnn.datasets. They never use the network: downloads are faked or refused."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

from xpnn.datasets import (
    ChecksumError,
    ChecksumWarning,
    DatasetNotFoundError,
    IDXFormatError,
    _home,
    get_data_home,
    load_diabetes,
    load_idx_images,
    load_idx_labels,
    load_mnist,
    load_student_performance,
    load_titanic,
    load_xor,
    read_idx,
    titanic_preprocessor,
    write_idx,
)
from xpnn.datasets.idx import parse_idx

# Captured before the autouse fixture below clears it, for the optional real-data test.
_USER_XPNN_DATA = os.environ.get("XPNN_DATA")
_REPO_ROOT = Path(__file__).resolve().parents[1]

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No network, no user data home: every test starts from a clean environment."""

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.delenv("XPNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _fake_download(payload: bytes, calls: list | None = None):
    def download(url, dest):
        if calls is not None:
            calls.append(url)
        Path(dest).write_bytes(payload)

    return download


# --------------------------------------------------------------------------- IDX


def _idx_images_bytes(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes()


def _idx_labels_bytes(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def _write_gz(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data))
    return path


def _tiny_mnist(folder: Path, n_train=5, n_test=3, side=28, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_gz(folder / f"{prefix}-images-idx3-ubyte.gz", _idx_images_bytes(images))
        _write_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", _idx_labels_bytes(labels))
        arrays[prefix] = (images, labels)
    return arrays


def test_idx_round_trip_hand_written(tmp_path):
    images = np.arange(3 * 2 * 4, dtype=np.uint8).reshape(3, 2, 4) * 7
    labels = np.array([9, 0, 4], dtype=np.uint8)
    img_path = _write_gz(tmp_path / "img.gz", _idx_images_bytes(images))
    lab_path = _write_gz(tmp_path / "lab.gz", _idx_labels_bytes(labels))

    got_images = load_idx_images(img_path)
    got_labels = load_idx_labels(lab_path)
    assert got_images.dtype == np.uint8 and got_images.shape == (3, 2, 4)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    got_images[0, 0, 0] = 1  # result is writable

    # Uncompressed files are read too (gzip is detected from content, not the name).
    raw = tmp_path / "img-raw.gz"
    raw.write_bytes(_idx_images_bytes(images))
    np.testing.assert_array_equal(load_idx_images(raw), images)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_write_idx_round_trip(tmp_path, dtype):
    data = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = write_idx(tmp_path / "x.idx.gz", data)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, data)


def test_write_idx_matches_mnist_header(tmp_path):
    write_idx(tmp_path / "i", np.zeros((2, 28, 28), np.uint8))
    assert (tmp_path / "i").read_bytes()[:16] == struct.pack(">IIII", 2051, 2, 28, 28)


def test_idx_bad_magic(tmp_path):
    labels_path = _write_gz(tmp_path / "labels.gz", _idx_labels_bytes(np.arange(4)))
    with pytest.raises(IDXFormatError, match=r"bad magic number 2049.*expected 2051"):
        load_idx_images(labels_path)
    junk = _write_gz(tmp_path / "junk.gz", b"<html>not found</html>")
    with pytest.raises(IDXFormatError, match="magic"):
        read_idx(junk)


def test_idx_truncated_data(tmp_path):
    data = _idx_images_bytes(np.zeros((3, 28, 28), np.uint8))
    path = _write_gz(tmp_path / "short.gz", data[:-100])
    with pytest.raises(IDXFormatError, match="truncated") as info:
        load_idx_images(path)
    assert str(path) in str(info.value)
    with pytest.raises(IDXFormatError, match="truncated"):
        parse_idx(data[:10])
    with pytest.raises(IDXFormatError, match="too short"):
        parse_idx(b"\x00\x00")


def test_idx_trailing_bytes():
    data = _idx_labels_bytes(np.arange(5)) + b"\x00"
    with pytest.raises(IDXFormatError, match="unexpected bytes"):
        parse_idx(data, expected_magic=2049)


def test_idx_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(_idx_labels_bytes(np.arange(1000) % 10))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(IDXFormatError, match="gzip"):
        load_idx_labels(path)


# --------------------------------------------------------------------- data home


def test_data_home_order(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert get_data_home() == tmp_path / "xdg" / "xpnn"

    monkeypatch.setenv("XPNN_DATA", str(tmp_path / "env"))
    assert get_data_home() == tmp_path / "env"

    assert get_data_home(tmp_path / "arg") == tmp_path / "arg"
    assert get_data_home(str(tmp_path / "arg")) == tmp_path / "arg"

    monkeypatch.setenv("XPNN_DATA", "")  # empty means unset
    assert get_data_home() == tmp_path / "xdg" / "xpnn"


def test_data_home_relative_and_user(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XPNN_DATA", "data/../mine")
    assert get_data_home() == tmp_path / "mine"
    assert get_data_home().is_absolute()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert get_data_home("~/d") == tmp_path / "home" / "d"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="Linux cache layout")
def test_data_home_default_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert get_data_home() == tmp_path / "home" / ".cache" / "xpnn"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, per the XDG spec
    assert get_data_home() == tmp_path / "home" / ".cache" / "xpnn"


def test_get_data_home_does_not_create(tmp_path):
    assert not get_data_home(tmp_path / "nope").exists()


# ------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize(("kind", "folder"), [("mnist", "mnist"), ("fashion", "fashion-mnist")])
def test_load_mnist_from_local_files(tmp_path, monkeypatch, kind, folder):
    monkeypatch.setattr(_home, "_download", lambda url, dest: pytest.fail("must not download"))
    arrays = _tiny_mnist(tmp_path / folder)
    (X_train, y_train), (X_test, y_test) = load_mnist(kind, data_home=tmp_path)
    assert X_train.shape == (5, 784) and X_train.dtype == np.uint8
    assert y_train.shape == (5,) and y_train.dtype == np.int64
    assert X_test.shape == (3, 784) and y_test.shape == (3,)
    np.testing.assert_array_equal(X_train, arrays["train"][0].reshape(5, -1))
    np.testing.assert_array_equal(y_test, arrays["t10k"][1])


def test_load_mnist_env_and_unflattened(tmp_path, monkeypatch):
    _tiny_mnist(tmp_path / "fashion-mnist", n_train=2, n_test=1)
    monkeypatch.setenv("XPNN_DATA", str(tmp_path))
    (X_train, _), (X_test, _) = load_mnist("fashion-mnist", flatten=False)
    assert X_train.shape == (2, 28, 28) and X_test.shape == (1, 28, 28)


def test_load_mnist_bad_kind(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        load_mnist("cifar", data_home=tmp_path)


def test_load_mnist_count_mismatch(tmp_path):
    folder = tmp_path / "mnist"
    _tiny_mnist(folder)
    _write_gz(folder / "t10k-labels-idx1-ubyte.gz", _idx_labels_bytes(np.arange(7)))
    with pytest.raises(IDXFormatError, match="3 images but .* 7 labels"):
        load_mnist(data_home=tmp_path)


def test_load_mnist_offline_names_path(tmp_path):
    # urllib.request.urlopen raises (autouse fixture): the real download code runs.
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(data_home=tmp_path)
    message = str(info.value)
    expected = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    assert str(expected) in message
    assert str(expected.parent) in message
    assert "XPNN_DATA" in message and "data_home" in message
    assert "ossci-datasets.s3.amazonaws.com" in message
    assert isinstance(info.value, FileNotFoundError)
    assert list((tmp_path / "mnist").iterdir()) == []  # no partial files left


def test_load_mnist_download_false(tmp_path, monkeypatch):
    monkeypatch.setattr(_home, "_download", lambda url, dest: pytest.fail("must not download"))
    with pytest.raises(DatasetNotFoundError, match="download=False") as info:
        load_mnist("fashion", data_home=tmp_path, download=False)
    assert str(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz") in str(info.value)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    wrong = gzip.compress(_idx_images_bytes(np.zeros((1, 28, 28), np.uint8)))
    monkeypatch.setattr(_home, "_download", _fake_download(wrong))
    with pytest.raises(ChecksumError, match="SHA-256 mismatch") as info:
        load_mnist(data_home=tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_download_not_gzip_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(_home, "_download", _fake_download(b"\x1f\x8b garbage, not gzip"))
    with pytest.raises(ChecksumError, match="gzip"):
        load_mnist(data_home=tmp_path)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_fetch_file_downloads_once_and_verifies_decompressed(tmp_path, monkeypatch):
    payload = b"some dataset bytes"
    calls: list = []
    monkeypatch.setattr(_home, "_download", _fake_download(gzip.compress(payload), calls))
    target = tmp_path / "sub" / "f.gz"
    digest = hashlib.sha256(payload).hexdigest()  # of the decompressed content

    assert _home.fetch_file("https://example.invalid/f.gz", target, digest) == target
    assert gzip.decompress(target.read_bytes()) == payload
    assert _home.fetch_file("https://example.invalid/f.gz", target, digest) == target
    assert calls == ["https://example.invalid/f.gz"]  # second call used the stored file
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.gz"]


def test_fetch_file_failed_download_cleans_partial_file(tmp_path, monkeypatch):
    def half_then_fail(url, dest):
        Path(dest).write_bytes(b"partial")
        raise TimeoutError("timed out")

    monkeypatch.setattr(_home, "_download", half_then_fail)
    with pytest.raises(DatasetNotFoundError, match="timed out"):
        _home.fetch_file("https://example.invalid/x", tmp_path / "x", "0" * 64)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- tabular


def test_load_xor():
    X, y = load_xor()
    assert X.shape == (4, 2) and np.issubdtype(X.dtype, np.floating)
    assert y.shape == (4,) and np.issubdtype(y.dtype, np.integer)
    np.testing.assert_array_equal(y, np.logical_xor(X[:, 0], X[:, 1]).astype(int))


def test_load_diabetes():
    X, y = load_diabetes()
    assert X.shape == (442, 10) and X.dtype == np.float64
    assert y.shape == (442,) and y.dtype == np.float64
    X_raw, _ = load_diabetes(scaled=False)
    assert X_raw[:, 0].max() > 1  # raw ages in years


TITANIC_HEADER = "PassengerId,Survived,Pclass,Name,Sex,Age,SibSp,Parch,Ticket,Fare,Cabin,Embarked"
TITANIC_ROWS = [
    '1,0,3,"Braund, Mr. Owen Harris",male,22,1,0,A/5 21171,7.25,,S',
    '2,1,1,"Cumings, Mrs. John Bradley (Florence Briggs Thayer)",female,38,1,0,PC 17599,'
    "71.2833,C85,C",
    '3,1,3,"Heikkinen, Miss. Laina",female,26,0,0,STON/O2. 3101282,7.925,,S',
    '4,0,3,"Moran, Mr. James",male,,0,0,330877,8.4583,,Q',
    '5,0,3,"Palsson, Master. Gosta Leonard",male,2,3,1,349909,21.075,,S',
    '6,1,1,"Icard, Miss. Amelie",female,38,0,0,113572,80,B28,',
    '7,1,3,"Johnson, Mrs. Oscar W (Elisabeth Vilhelmina Berg)",female,27,0,2,347742,11.1333,,S',
    '8,0,3,"Andersson, Mr. August Edvard (""Wennerstrom"")",male,40,0,0,350043,7.8542,,S',
    '9,1,3,"Nicola-Yarred, Miss. Jamila",female,,1,0,2651,11.2417,,C',
    '10,0,1,"Rothes, the Countess. of (Lucy Noel Martha Dyer-Edwards)",female,33,0,0,110152,'
    "86.5,B77,S",
]


def _write_titanic(home: Path, rows=TITANIC_ROWS) -> Path:
    path = home / "titanic" / "train.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(("\r\n".join([TITANIC_HEADER, *rows]) + "\r\n").encode("ascii"))
    return path


def test_titanic_missing_file_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_titanic(data_home=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "titanic" / "train.csv") in message
    assert "kaggle.com/competitions/titanic" in message
    assert "XPNN_DATA" in message


def test_titanic_arrays(tmp_path):
    _write_titanic(tmp_path)
    with pytest.warns(ChecksumWarning, match="train.csv"):
        X, y = load_titanic(data_home=tmp_path)
    assert X.shape == (10, 16) and X.dtype == np.float64
    assert not np.isnan(X).any()
    assert y.dtype == np.int64 and set(y) == {0, 1}
    np.testing.assert_array_equal(y, [0, 1, 1, 0, 0, 1, 1, 0, 1, 0])
    np.testing.assert_allclose(X[:, :6].mean(axis=0), 0, atol=1e-12)  # scaled numerics
    np.testing.assert_array_equal(X[:, 6:].sum(axis=1), 3)  # one-hot Sex, Embarked, Title


@pytest.mark.filterwarnings("ignore::xpnn.datasets.ChecksumWarning")
def test_titanic_frame_and_features(tmp_path):
    _write_titanic(tmp_path)
    X_raw, y = load_titanic(data_home=tmp_path, as_frame=True)
    assert X_raw.shape == (10, 11) and "Survived" not in X_raw.columns
    assert len(y) == 10 and y.name == "Survived"
    assert X_raw["Name"].iloc[0] == "Braund, Mr. Owen Harris"  # quoted comma kept
    assert X_raw["Name"].iloc[7] == 'Andersson, Mr. August Edvard ("Wennerstrom")'
    assert X_raw["Embarked"].isna().sum() == 1 and X_raw["Age"].isna().sum() == 2

    pre = titanic_preprocessor(scale=False)
    out = pre.fit_transform(X_raw)
    names = list(pre.get_feature_names_out())
    assert names == [
        "Pclass", "Age", "SibSp", "Parch", "Fare", "FamilySize", "Sex_female", "Sex_male",
        "Embarked_C", "Embarked_Q", "Embarked_S", "Title_Master", "Title_Miss", "Title_Mr",
        "Title_Mrs", "Title_Rare",
    ]  # fmt: skip
    col = {name: out[:, i] for i, name in enumerate(names)}
    # Age imputed by the median of the title: Mr -> median(22, 40) = 31, Miss -> median(26, 38).
    assert col["Age"][3] == 31.0 and col["Age"][8] == 32.0
    np.testing.assert_array_equal(col["FamilySize"], [2, 2, 1, 1, 5, 1, 3, 1, 2, 1])
    assert col["Embarked_S"][5] == 1.0  # missing port -> most common (S)
    assert col["Title_Rare"][9] == 1.0 and col["Title_Master"][4] == 1.0
    assert col["Sex_male"][0] == 1.0 and col["Sex_female"][0] == 0.0


@pytest.mark.filterwarnings("ignore::xpnn.datasets.ChecksumWarning")
def test_titanic_preprocessor_fits_on_train_only(tmp_path):
    _write_titanic(tmp_path)
    X_raw, _ = load_titanic(data_home=tmp_path, as_frame=True)
    train, test = X_raw.iloc[:5], X_raw.iloc[5:]
    pre = titanic_preprocessor(scale=False).fit(train)
    features = pre.named_steps["features"]
    assert features.age_medians_["Mr"] == 22.0  # only the train Mr (row 4 has no age)
    out = pre.transform(test)
    assert out.shape == (5, 16)
    # Row 9 (test, Miss, no age) gets the TRAIN median for Miss (26), not the test's 38.
    assert out[3, 1] == 26.0
    # Scaling statistics also come from the training rows only.
    scaled = titanic_preprocessor().fit(train)
    scaler = scaled.named_steps["encode"].named_transformers_["numeric"]
    np.testing.assert_allclose(scaler.mean_[0], train["Pclass"].mean())
    # A fresh call returns an unfitted pipeline.
    assert not hasattr(titanic_preprocessor().named_steps["features"], "age_medians_")


def test_titanic_missing_survived(tmp_path):
    path = tmp_path / "titanic" / "train.csv"
    path.parent.mkdir()
    path.write_text("PassengerId,Pclass\n1,3\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        with pytest.raises(ValueError, match="Survived"):
            load_titanic(data_home=tmp_path)


STUDENT_HEADER = (
    "Hours Studied,Previous Scores,Extracurricular Activities,Sleep Hours,"
    "Sample Question Papers Practiced,Performance Index"
)


def _write_student(home: Path, rows) -> Path:
    path = home / "student-performance" / "Student_Performance.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([STUDENT_HEADER, *rows]) + "\n")
    return path


def test_student_yes_no_mapping(tmp_path):
    _write_student(tmp_path, ["7,99,Yes,9,1,91.0", "4,82,No,4,2,65.0", "8,51,yes,7,2,45.0"])
    with pytest.warns(ChecksumWarning):
        X, y = load_student_performance(data_home=tmp_path)
    assert X.shape == (3, 5) and X.dtype == np.float64
    assert y.shape == (3,) and y.dtype == np.float64
    np.testing.assert_array_equal(X[:, 2], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(X[0], [7, 99, 1, 9, 1])
    np.testing.assert_array_equal(y, [91.0, 65.0, 45.0])


@pytest.mark.filterwarnings("ignore::xpnn.datasets.ChecksumWarning")
def test_student_frame(tmp_path):
    _write_student(tmp_path, ["7,99,Yes,9,1,91.0"])
    X, y = load_student_performance(data_home=tmp_path, as_frame=True)
    assert list(X.columns)[2] == "Extracurricular Activities"
    assert X.iloc[0, 2] == 1.0 and y.name == "Performance Index"


@pytest.mark.filterwarnings("ignore::xpnn.datasets.ChecksumWarning")
@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (["7,99,Maybe,9,1,91.0"], "line 2: Extracurricular Activities must be Yes or No"),
        (["7,99,Yes,9,1,91.0", "a"], "line 3: expected 6 fields"),
        (["7,x,Yes,9,1,91.0"], "line 2: non-numeric"),
    ],
)
def test_student_bad_rows(tmp_path, rows, match):
    _write_student(tmp_path, rows)
    with pytest.raises(ValueError, match=match):
        load_student_performance(data_home=tmp_path)


@pytest.mark.filterwarnings("ignore::xpnn.datasets.ChecksumWarning")
def test_student_bad_header(tmp_path):
    path = tmp_path / "student-performance" / "Student_Performance.csv"
    path.parent.mkdir()
    path.write_text("a,b,c,d,e,f\n1,2,Yes,4,5,6\n")
    with pytest.raises(ValueError, match="header"):
        load_student_performance(data_home=tmp_path)


def test_student_missing_file_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_student_performance(data_home=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "student-performance" / "Student_Performance.csv") in message
    assert "kaggle.com/datasets/nikhil7280" in message


# --------------------------------------------------------------- real shared data


def _real_data_home() -> Path | None:
    candidates = [_USER_XPNN_DATA] if _USER_XPNN_DATA else []
    candidates.append(str(_REPO_ROOT.parent / "shared" / "data"))
    for candidate in candidates:
        if (Path(candidate) / "mnist").is_dir():
            return Path(candidate)
    return None


def test_real_shared_data(monkeypatch):
    home = _real_data_home()
    if home is None:
        pytest.skip("real data not found (set XPNN_DATA or provide ../shared/data)")
    monkeypatch.setattr(_home, "_download", lambda url, dest: pytest.fail("must not download"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChecksumWarning)  # real Kaggle files match
        for kind in ("mnist", "fashion"):
            (X_train, y_train), (X_test, y_test) = load_mnist(kind, data_home=home)
            assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
            assert np.bincount(y_test).sum() == 10000 and y_train.max() == 9
        (_, y_train), (_, y_test) = load_mnist(data_home=home)
        np.testing.assert_array_equal(y_train[:5], [5, 0, 4, 1, 9])
        np.testing.assert_array_equal(y_test[:5], [7, 2, 1, 0, 4])

        X, y = load_titanic(data_home=home)
        assert X.shape == (891, 16) and int(y.sum()) == 342 and not np.isnan(X).any()

        X, y = load_student_performance(data_home=home)
        assert X.shape == (10000, 5) and y.shape == (10000,)
        assert X[:, 2].sum() == 4948
        np.testing.assert_allclose(y.mean(), 55.2248)

    # Our checksum table matches the decompressed real files.
    from xpnn.datasets.mnist import _FILES, _SOURCES

    for subfolder, _, sums in _SOURCES.values():
        for key, name in _FILES:
            got = _home.sha256_of_file(home / subfolder / name, decompress=True)
            assert got == sums[key], f"{subfolder}/{name}"

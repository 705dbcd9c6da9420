"""Data that is not converted up front: memmaps, uint8, float64, pandas, sparse, h5py, zarr,
iterables of batches; sample weights; the per-step guard; exact resume; Ctrl-C between steps."""

from __future__ import annotations

import pickle
import signal

import numpy as np
import pytest
from _models import mlp

import xpnn
from xpnn import data
from xpnn.sources import make_source, streams
from xpnn.training import TrainingRun


def _images(n=300, d=20, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, d), dtype=np.uint8)
    y = (X[:, :k].argmax(axis=1)).astype(np.int64)
    return X, y


def _model(d=20, k=4, dropout=True, seed=0, optimizer=None, fast=True):
    model = mlp(seed=seed, n_in=d, hidden=16, k=k, dropout=0.2 if dropout else None)
    model.compile("crossentropy", optimizer or xpnn.Adam(1e-2), metrics=["accuracy"])
    model.fastpath = fast
    return model


def _fit(model, X, y, **kw):
    kw.setdefault("epochs", 3)
    kw.setdefault("batch_size", 32)
    kw.setdefault("verbose", 0)
    return model.fit(X, y, **kw)


@pytest.mark.parametrize("fast", [True, False])
def test_memmap_uint8_streamed_equals_resident(tmp_path, fast):
    X, y = _images()
    path = tmp_path / "x.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=X.shape)
    mm[...] = X
    mm.flush()
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=X.shape)
    resident = _model(fast=fast)
    h1 = _fit(resident, X.astype(np.float32) / 1.0, y, validation_split=0.2)
    streamed = _model(fast=fast)
    streamed.resident_budget = 1000          # bytes: far below the data
    assert streams(streamed, mm)
    h2 = _fit(streamed, mm, y, validation_split=0.2)
    for a, b in zip(resident.get_weights(), streamed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert h1.history == h2.history


@pytest.mark.parametrize("kind", ["float64", "pandas", "sparse", "h5py", "zarr"])
def test_other_host_data_streamed_equals_resident(tmp_path, kind):
    X, y = _images(n=200)
    Xf = X.astype(np.float64) / 255.0
    if kind == "float64":
        source = Xf
    elif kind == "pandas":
        pd = pytest.importorskip("pandas")
        source = pd.DataFrame(Xf)
    elif kind == "sparse":
        sparse = pytest.importorskip("scipy.sparse")
        Xf[Xf < 0.5] = 0.0
        source = sparse.csr_matrix(Xf)
    elif kind == "h5py":
        h5py = pytest.importorskip("h5py")
        f = h5py.File(tmp_path / "x.h5", "w")
        source = f.create_dataset("x", data=Xf)
    else:
        zarr = pytest.importorskip("zarr")
        source = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=Xf.shape,
                                   chunks=(64, 20), dtype="float64")
        source[...] = Xf
    resident = _model()
    _fit(resident, Xf.astype(np.float32), y)
    streamed = _model()
    streamed.resident_budget = 0
    assert streams(streamed, source)
    _fit(streamed, source, y)
    for a, b in zip(resident.get_weights(), streamed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        xpnn.to_numpy(streamed.predict(source, batch_size=64)),
        xpnn.to_numpy(resident.predict(Xf.astype(np.float32), batch_size=64)))
    assert streamed.evaluate(source, y) == resident.evaluate(Xf.astype(np.float32), y)


@pytest.mark.parametrize("kind", ["memmap", "memmap32", "h5py", "zarr"])
def test_file_data_is_streamed_whatever_the_budget(tmp_path, kind):
    """A memmap, h5py dataset or zarr array says the data live in a file: read per batch even
    far below the budget (a float32 memmap too); in-memory arrays keep the budget."""
    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    if kind.startswith("memmap"):
        np.save(tmp_path / "x.npy", X if kind == "memmap32" else X.astype(np.uint8))
        source = np.load(tmp_path / "x.npy", mmap_mode="r")
    elif kind == "h5py":
        h5py = pytest.importorskip("h5py")
        source = h5py.File(tmp_path / "x.h5", "w").create_dataset("x", data=X)
    else:
        zarr = pytest.importorskip("zarr")
        source = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=X.shape,
                                   dtype="float32")
        source[...] = X
    model = _model()
    assert model.resident_budget > 10 ** 6
    assert streams(model, source)
    assert not streams(model, X.astype(np.uint8))        # in memory, below the budget
    assert not streams(model, X.astype(np.float64))


def test_sparse_input_is_streamed_by_default():
    sparse = pytest.importorskip("scipy.sparse")
    assert streams(_model(), sparse.csr_matrix(np.eye(20, dtype=np.float32)))


def test_iterable_of_batches_equals_unshuffled_array_fit():
    X, y = _images(n=128)
    Xf = X.astype(np.float32)
    batches = [(Xf[i:i + 32], y[i:i + 32]) for i in range(0, 128, 32)]
    a, b = _model(), _model()
    h1 = _fit(a, Xf, y, shuffle=False, validation_data=(Xf[:40], y[:40]))
    h2 = b.fit(batches, epochs=3, verbose=0, validation_data=batches[:1] + [(Xf[32:40],
                                                                              y[32:40])])
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert h1.history["loss"] == h2.history["loss"]
    np.testing.assert_allclose(h1.history["val_loss"], h2.history["val_loss"], rtol=1e-6)


def test_generator_with_steps_per_epoch_and_lazy_build():
    X, y = _images(n=128)
    Xf = X.astype(np.float32)

    def forever():
        while True:
            for i in range(0, 128, 32):
                yield Xf[i:i + 32], y[i:i + 32]

    lazy = xpnn.Sequential(xpnn.Dense(None, 16), xpnn.ReLU(), xpnn.Dense(16, 4), xpnn.Softmax(),
                           seed=0)
    lazy.compile("crossentropy", xpnn.Adam(1e-2))
    lazy.fit(forever(), epochs=2, steps_per_epoch=4, verbose=0)
    ref = _model(dropout=False)
    ref.compile("crossentropy", xpnn.Adam(1e-2))
    _fit(ref, Xf, y, epochs=2, shuffle=False)
    for wa, wb in zip(ref.get_weights(), lazy.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("shuffle", [False, True, "batch"])
@pytest.mark.parametrize("kind", ["numpy", "pandas", "h5py"])
def test_bad_row_in_a_streamed_source_names_it_and_keeps_the_weights(tmp_path, kind, shuffle):
    X, y = _images(n=200)
    Xf = X.astype(np.float64)
    Xf[150, 3] = 1e300                     # finite in float64, inf in float32
    source = Xf
    if kind == "pandas":
        source = pytest.importorskip("pandas").DataFrame(Xf)
    elif kind == "h5py":
        source = pytest.importorskip("h5py").File(tmp_path / "x.h5", "w").create_dataset(
            "x", data=Xf)
    model = _model()
    model.resident_budget = 0
    model.fit(Xf[:100], y[:100], epochs=1, verbose=0, shuffle=False)
    before = model.get_weights()
    it = model.optimizer.iterations
    with pytest.raises(ValueError, match="row 150"):
        model.fit(source, y, epochs=1, batch_size=50, shuffle=shuffle, verbose=0)
    if shuffle is False:
        assert model.optimizer.iterations == it + 3      # the three good batches were applied
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    assert model.optimizer.iterations == it or not np.array_equal(
        before[0], model.get_weights()[0])
    with pytest.raises(ValueError, match="row 150"):
        model.predict(source, batch_size=64)


def test_streamed_memory_stays_near_a_batch(tmp_path):
    """Fitting a memmap 16x the budget grows the process by far less than the converted data."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import resource, numpy as np, xpnn
        n, d = 120_000, 256
        mm = np.lib.format.open_memmap({str(tmp_path / 'x.npy')!r}, mode='w+', dtype=np.uint8,
                                       shape=(n, d))
        mm[:] = 7
        mm.flush(); del mm
        X = np.load({str(tmp_path / 'x.npy')!r}, mmap_mode='r')
        y = np.zeros(n, dtype=np.int64)
        m = xpnn.Sequential(xpnn.Dense(d, 8), xpnn.ReLU(), xpnn.Dense(8, 2), xpnn.Softmax(),
                            seed=0)
        m.compile('crossentropy', 'adam')
        m.resident_budget = 8 * 1024 * 1024
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        m.fit(X, y, epochs=1, batch_size=256, verbose=0)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(grown)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    grown_kib = int(out.stdout.strip().splitlines()[-1])
    converted_kib = 120_000 * 256 * 4 // 1024           # 120 MiB as float32
    assert grown_kib < converted_kib // 3, (grown_kib, converted_kib)


# ---------------------------------------------------------------------- sample weights
@pytest.mark.parametrize("fast", [True, False])
def test_integer_weights_equal_repeated_rows_in_one_batch(fast):
    X, y = _images(n=40)
    Xf = X.astype(np.float64) / 255
    w = np.tile([1.0, 2.0, 0.0, 3.0], 10)
    rep = np.repeat(np.arange(40), w.astype(int))
    a = xpnn.Sequential(xpnn.Dense(20, 8), xpnn.Tanh(), xpnn.Dense(8, 4), xpnn.Softmax(),
                        seed=1, dtype="float64")
    b = xpnn.Sequential(xpnn.Dense(20, 8), xpnn.Tanh(), xpnn.Dense(8, 4), xpnn.Softmax(),
                        seed=1, dtype="float64")
    for m in (a, b):
        m.compile("crossentropy", xpnn.SGD(0.5))
        m.fastpath = fast
    a.fit(Xf, y, epochs=5, batch_size=40, shuffle=False, verbose=0, sample_weight=w)
    b.fit(Xf[rep], y[rep], epochs=5, batch_size=len(rep), shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss,last", [("mse", None), ("binary_crossentropy", "Sigmoid"),
                                       ("categorical_crossentropy", "Softmax")])
def test_weighted_fast_path_equals_generic(loss, last):
    X, y = _images(n=96)
    Xf = X.astype(np.float64) / 255
    k = 1 if last == "Sigmoid" else 4
    yy = (y == 0).astype(float) if k == 1 else y
    if loss == "mse":
        yy = np.eye(4)[y]
    w = np.random.default_rng(3).uniform(0, 2, size=96)
    models = []
    for fast in (True, False):
        layers = [xpnn.Dense(20, 8), xpnn.ReLU(), xpnn.Dense(8, k)]
        if last:
            layers.append(getattr(xpnn, last)())
        m = xpnn.Sequential(*layers, seed=2, dtype="float64")
        m.compile(loss, xpnn.Adam(1e-2))
        m.fastpath = fast
        m.fit(Xf, yy, epochs=2, batch_size=16, verbose=0, sample_weight=w)
        models.append(m)
    assert xpnn.fastpath.select(models[0]) is not None
    for wa, wb in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss_cls,fused", [
    (xpnn.MSE, False), (xpnn.BinaryCrossEntropy, False), (xpnn.BinaryCrossEntropy, True),
    (xpnn.CategoricalCrossEntropy, False), (xpnn.CategoricalCrossEntropy, True)])
def test_weighted_loss_gradient_matches_finite_differences(loss_cls, fused):
    rng = np.random.default_rng(0)
    loss = loss_cls().bind(xpnn.get_backend("numpy").xp)
    z = rng.normal(size=(6, 3))
    if loss_cls is xpnn.CategoricalCrossEntropy:
        t = rng.integers(0, 3, size=6)
    else:
        t = rng.uniform(size=(6, 3))
    if not fused and loss_cls is not xpnn.MSE:
        z = 1 / (1 + np.exp(-z)) if loss_cls is xpnn.BinaryCrossEntropy else (
            np.exp(z) / np.exp(z).sum(1, keepdims=True))
    w = rng.uniform(0.1, 2.0, size=6)
    f = (loss.forward_logits if fused else loss.forward)
    f(z, t, w)
    grad = loss.backward_logits() if fused else loss.backward()
    num = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[idx] = 1e-6
        num[idx] = (float(f(z + e, t, w)) - float(f(z - e, t, w))) / 2e-6
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-8)


def test_bad_sample_weights_are_refused():
    X, y = _images(n=20)
    model = _model()
    for w, msg in ((np.ones(19), "shape"), (-np.ones(20), ">= 0"), (np.zeros(20), "zero"),
                   (np.full(20, np.nan), "finite")):
        with pytest.raises(ValueError, match=msg):
            model.fit(X, y, sample_weight=w, verbose=0)


# ---------------------------------------------------------------------- the guard
@pytest.mark.parametrize("fast", [True, False])
def test_divergence_on_the_last_step_raises_and_restores(fast, monkeypatch):
    X, y = _images(n=64)
    Xf = X.astype(np.float32)
    model = _model(dropout=False, optimizer=xpnn.SGD(1e30), fast=fast)
    ref = _model(dropout=False, optimizer=xpnn.SGD(1e30), fast=fast)
    with pytest.raises(xpnn.TrainingDivergedError) as info:
        model.fit(Xf, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    bad = int(str(info.value).split("batch ")[1].split(":")[0]) - 1
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    if bad:      # (the steps before the bad one, without the check of the final outputs)
        monkeypatch.setattr(TrainingRun, "_outputs_finite", lambda self, source: True)
        ref.fit(Xf[:32 * bad], y[:32 * bad], epochs=1, batch_size=32, shuffle=False, verbose=0)
    for a, b in zip(ref.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == bad


def test_train_on_batch_divergence_leaves_the_model_unchanged():
    X, y = _images(n=32)
    model = _model(dropout=False, optimizer=xpnn.SGD(1e38))
    w0 = model.get_weights()
    with pytest.raises(xpnn.TrainingDivergedError):
        for _ in range(5):
            w0 = model.get_weights()
            model.train_on_batch(X.astype(np.float32) * 1e3, y)
    for a, b in zip(w0, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- resume and Ctrl-C
class _StopAt(xpnn.Callback):
    def __init__(self, epoch, batch):
        self.at = (epoch, batch)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.position = self.run.capture_position()
            self.state = pickle.dumps(self.model)
            raise RuntimeError("killed")


class _ResumeFrom(xpnn.Callback):
    def __init__(self, position):
        self.position = position

    def on_train_begin(self, logs=None):
        self.run.resume_from(self.position)


@pytest.mark.parametrize("shuffle", [True, "batch"])
@pytest.mark.parametrize("fast", [True, False])
def test_resume_mid_epoch_gives_the_same_weights(fast, shuffle):
    X, y = _images(n=200)
    full = _model(fast=fast)
    hist = _fit(full, X, y, epochs=3, validation_split=0.1, shuffle=shuffle)
    stop = _StopAt(1, 2)
    with pytest.raises(RuntimeError, match="killed"):
        _fit(_model(fast=fast), X, y, epochs=3, validation_split=0.1, callbacks=[stop],
             shuffle=shuffle)
    resumed = pickle.loads(stop.state)
    resumed.fastpath = fast
    h2 = _fit(resumed, X, y, epochs=3, validation_split=0.1, shuffle=shuffle,
              callbacks=[_ResumeFrom(stop.position)])
    for a, b in zip(full.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert h2.history["loss"] == hist.history["loss"][1:]
    assert h2.history["accuracy"] == hist.history["accuracy"][1:]


def test_ctrl_c_takes_effect_after_the_step_in_progress():
    X, y = _images(n=128)

    class Interrupt(xpnn.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                signal.raise_signal(signal.SIGINT)

    model = _model(dropout=False)
    ref = _model(dropout=False)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=1, batch_size=32, shuffle=False, verbose=0,
                  callbacks=[Interrupt()])
    assert model.optimizer.iterations == 3
    ref.fit(X[:96], y[:96], epochs=1, batch_size=32, shuffle=False, verbose=0)
    for a, b in zip(ref.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_data_module_reads_rows_in_any_order():
    X = np.arange(30.0).reshape(10, 3)
    rows = np.array([7, 2, 9, 2 + 1])
    np.testing.assert_array_equal(data.read_batch(X, rows), X[rows])


@pytest.mark.parametrize("kind", ["uint8", "float64", "float32", "memmap", "memmap32",
                                  "fortran"])
def test_row_reader_equals_a_conversion_and_reuses_its_buffer(tmp_path, kind):
    rng = np.random.default_rng(1)
    if kind == "uint8":
        X = rng.integers(0, 256, (50, 7), dtype=np.uint8)
    elif kind.startswith("memmap"):
        dtype = np.float32 if kind == "memmap32" else np.uint8
        X = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", dtype, (50, 7))
        X[...] = rng.integers(0, 256, (50, 7))
    else:
        X = rng.normal(size=(50, 7)) * 1e30           # float64 beyond float32's range too
        X = X.astype(np.float32) if kind == "float32" else X
        X = np.asfortranarray(X) if kind == "fortran" else X
    reader = data.RowReader(X, np.float32)
    first = None
    for rows in (rng.permutation(50)[:16], np.array([49, 0, 49]), slice(3, 19), slice(40, 50)):
        with np.errstate(over="ignore"):
            want = np.asarray(X[rows], dtype=np.float32)
        got = reader.read(rows)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        if isinstance(rows, slice):
            continue
        if first is None:
            first = got
        elif X.dtype != np.float32:            # the same memory, batch after batch
            assert np.shares_memory(got, first)
        out = np.empty(want.shape, np.float32)
        assert reader.read(rows, out) is out
        np.testing.assert_array_equal(out, want)


def test_streamed_batches_do_not_alias_across_passes(tmp_path):
    """Each pass over a streamed source has its own buffer: a replay (the guard's undo) that
    runs while another pass is suspended cannot overwrite that pass's batch."""
    X, y = _images(n=64)
    model = _model()
    model.resident_budget = 100
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    source = make_source(model, X, y)
    perm = np.random.default_rng(0).permutation(64)
    outer = source.batches(model, perm, 16)
    _, xb, _, _ = next(outer)
    kept = np.array(xb, copy=True)
    for _ in source.batches(model, perm, 16):
        pass
    np.testing.assert_array_equal(xb, kept)
    np.testing.assert_array_equal(kept, X[perm[:16]].astype(np.float32))


@pytest.mark.parametrize("weighted", [False, True])
def test_torch_dataloader_is_an_iterable_of_batches(weighted):
    """A ``torch.utils.data.DataLoader`` (CPU tensors, shuffle=False) trains a NumPy model as
    the same batches given as arrays; as validation data and in ``evaluate`` too; a third
    tensor in each batch is its sample weights."""
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    X, y = _images(n=100)
    Xf = X.astype(np.float32)
    w = np.random.default_rng(4).uniform(0.5, 2.0, len(X)).astype(np.float32)
    tensors = [torch.from_numpy(Xf), torch.from_numpy(y)] + (
        [torch.from_numpy(w)] if weighted else [])
    loader = DataLoader(TensorDataset(*tensors), batch_size=32, shuffle=False)
    val_loader = DataLoader(TensorDataset(torch.from_numpy(Xf[:40]), torch.from_numpy(y[:40])),
                            batch_size=16)
    a, b = _model(), _model()
    h1 = _fit(a, Xf, y, shuffle=False, validation_data=(Xf[:40], y[:40]),
              sample_weight=w if weighted else None)
    h2 = b.fit(loader, epochs=3, verbose=0, validation_data=val_loader)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert h1.history["loss"] == h2.history["loss"]
    np.testing.assert_allclose(h1.history["val_loss"], h2.history["val_loss"], rtol=1e-6)
    scores = b.evaluate(val_loader)
    assert scores["loss"] == pytest.approx(a.evaluate(Xf[:40], y[:40])["loss"], rel=1e-6)


def test_batch_permutation_shuffles_whole_blocks():
    perm = data.batch_permutation(np.random.default_rng(0), 23, 5)
    assert sorted(perm) == list(range(23))
    blocks = perm[:20].reshape(4, 5)
    assert all(np.array_equal(b, np.arange(b[0], b[0] + 5)) and b[0] % 5 == 0 for b in blocks)
    np.testing.assert_array_equal(perm[20:], [20, 21, 22])           # the partial block last
    orders = {tuple(data.batch_permutation(np.random.default_rng(s), 40, 5)[::5])
              for s in range(6)}
    assert len(orders) > 1                                          # drawn from the generator
    assert data.as_slice(np.array([4, 5, 6])) == slice(4, 7)
    assert isinstance(data.as_slice(np.array([4, 6, 7])), np.ndarray)
    assert isinstance(data.as_slice(np.array([6, 5, 4])), np.ndarray)


@pytest.mark.parametrize("kind", ["memmap", "h5py", "zarr"])
def test_shuffle_batch_reads_one_slice_per_batch(tmp_path, monkeypatch, kind):
    """``shuffle="batch"`` (Keras 2's option for HDF5): a streamed file is read one contiguous
    slice per batch, and training equals the resident fit with the same option, bitwise."""
    X, y = _images(n=203)
    if kind == "memmap":
        source = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.uint8, X.shape)
        source[...] = X
    elif kind == "h5py":
        h5py = pytest.importorskip("h5py")
        source = h5py.File(tmp_path / "x.h5", "w").create_dataset("x", data=X, chunks=(32, 20))
    else:
        zarr = pytest.importorskip("zarr")
        source = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=X.shape,
                                   chunks=(32, 20), dtype="uint8")
        source[...] = X
    reads = []
    real = data.read_rows
    monkeypatch.setattr(data, "read_rows", lambda X, rows: (reads.append(rows), real(X, rows))[1])
    resident = _model()
    h1 = _fit(resident, X.astype(np.float32), y, shuffle="batch", validation_split=0.2)
    streamed = _model()
    streamed.resident_budget = 100
    h2 = _fit(streamed, source, y, shuffle="batch", validation_split=0.2)
    for a, b in zip(resident.get_weights(), streamed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert h1.history == h2.history
    if kind != "memmap":                    # a memmap is sliced directly, not via read_rows
        assert reads and all(isinstance(r, slice) for r in reads)
    plain = _model()
    _fit(plain, X.astype(np.float32), y, validation_split=0.2)
    assert not np.array_equal(plain.get_weights()[0], resident.get_weights()[0])


def test_shuffle_must_be_a_bool_or_batch():
    X, y = _images(n=40)
    with pytest.raises(ValueError, match="shuffle must be True, False or 'batch'"):
        _fit(_model(), X, y, shuffle="rows")


def test_predict_takes_an_iterable_of_batches():
    """``predict`` on what ``fit`` takes as batches: a DataLoader (of (x, y) or of x alone), a
    list of (x, y) pairs, a generator with ``steps``; outputs in order, targets ignored."""
    X, y = _images(n=70)
    Xf = X.astype(np.float32) / 255
    close = {"rtol": 1e-5, "atol": 1e-7}      # float32, other batch sizes
    model = _model()
    _fit(model, Xf, y, epochs=1)
    want = model.predict(Xf)
    pairs = [(Xf[i:i + 32], y[i:i + 32]) for i in range(0, 70, 32)]
    np.testing.assert_allclose(model.predict(pairs), want, **close)

    def endless():
        while True:
            yield from pairs

    np.testing.assert_allclose(model.predict(endless(), steps=2), want[:64], **close)
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    for dataset in (TensorDataset(torch.from_numpy(Xf), torch.from_numpy(y)),
                    TensorDataset(torch.from_numpy(Xf))):
        got = model.predict(DataLoader(dataset, batch_size=16), verbose=0)
        np.testing.assert_allclose(got, want, **close)
    with pytest.raises(ValueError, match="steps applies only"):
        model.predict(Xf, steps=2)
    with pytest.raises(ValueError, match="steps must be an int"):
        model.predict(pairs, steps=0)
    with pytest.raises(ValueError, match="yielded no batches"):
        model.predict(iter([]))


def test_generators_that_run_out_are_refused_with_the_fix():
    """A generator is one pass: with more epochs than one, ``fit`` refuses it (as data without
    ``steps_per_epoch``, as validation data without ``validation_steps``) before anything
    changes; an iterable that comes back empty raises a ValueError that says why."""
    X, y = _images(n=64)
    Xf = X.astype(np.float32) / 255

    def once():
        for i in range(0, 64, 16):
            yield Xf[i:i + 16], y[i:i + 16]

    drawn = []

    def endless():
        while True:
            for i in range(0, 64, 16):
                drawn.append(i)
                yield Xf[i:i + 16], y[i:i + 16]

    model = _model()
    before = model.get_weights()
    with pytest.raises(ValueError, match="data is a generator .* give steps_per_epoch"):
        model.fit(once(), epochs=2, verbose=0)
    with pytest.raises(ValueError, match="validation_data is a generator .* validation_steps"):
        model.fit(endless(), steps_per_epoch=4, epochs=2, validation_data=once(), verbose=0)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 0 and not drawn

    val = endless()
    history = model.fit(once(), epochs=1, validation_data=val, validation_steps=3, verbose=0)
    assert len(drawn) == 3 and len(history.history["val_loss"]) == 1
    with pytest.raises(ValueError, match="validation_steps applies only"):
        model.fit(Xf, y, epochs=1, validation_data=(Xf, y), validation_steps=2, verbose=0)

    class ComesBackEmpty:           # a re-iterable that has nothing the second time
        passes = 0

        def __iter__(self):
            self.passes += 1
            return once() if self.passes == 1 else iter(())

    with pytest.raises(ValueError, match="in epoch 1: data yielded no batches"):
        model.fit(ComesBackEmpty(), epochs=2, verbose=0)
    assert model.epochs_trained == 2                       # the one before and epoch 0 here

    assert model.evaluate(endless(), steps=2)["loss"] > 0
    with pytest.raises(ValueError, match="steps applies only"):
        model.evaluate(Xf, y, steps=2)
    with pytest.raises(ValueError, match="yielded no batches"):
        model.evaluate(iter(()))


@pytest.mark.parametrize("fast", [True, False])
def test_uint8_memmap_rescaled_in_the_model(tmp_path, fast):
    """``Rescaling(1/255)`` as the first layer: a uint8 memmap streams as raw bytes and the model
    scales each batch, bitwise as the same model on the bytes converted up front; the layer is
    saved and loaded with the model."""
    X, y = _images(n=160)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.uint8, X.shape)
    mm[...] = X

    def model():
        m = xpnn.Sequential(xpnn.Rescaling(1 / 255), xpnn.Dense(20, 16), xpnn.ReLU(),
                            xpnn.Dense(16, 4), xpnn.Softmax(), seed=0)
        m.compile("crossentropy", xpnn.Adam(1e-2), metrics=["accuracy"])
        m.fastpath = fast
        return m

    resident, streamed = model(), model()
    streamed.resident_budget = 100
    h1 = _fit(resident, X.astype(np.float32), y)
    h2 = _fit(streamed, mm, y)
    assert (xpnn.fastpath.select(streamed) is not None) == fast
    for a, b in zip(resident.get_weights(), streamed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert h1.history == h2.history
    streamed.save(tmp_path / "m.npz")
    loaded = xpnn.load(tmp_path / "m.npz")
    assert isinstance(loaded.layers[0], xpnn.Rescaling) and loaded.layers[0].scale == 1 / 255
    np.testing.assert_array_equal(loaded.predict(mm), streamed.predict(mm))
    with pytest.raises(ValueError, match="scale"):
        xpnn.Rescaling(float("nan"))


def test_rows_of_numpy_scalars_are_data_not_batches():
    """A list of rows of two NumPy scalars is an array-like X, not a list of (x, y) batches."""
    model = xpnn.Sequential(xpnn.Dense(2, 3), seed=0)
    rows = [[np.float64(1.0), np.float64(2.0)], [np.float64(3.0), np.float64(4.0)]]
    assert not data.is_batch_iterable(rows)
    np.testing.assert_allclose(model.predict(rows), model.predict(np.array(rows)))

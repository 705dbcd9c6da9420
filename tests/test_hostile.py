"""A hostile user's second round: special files where model files are expected, backups of
other runs or shared between processes, checkpoint names that cannot be written, learning
rates of 0, hyperparameters beyond the model's dtype, fits that diverge or overflow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from _models import Crash, CrashAt

import xpnn
from xpnn import locks


def blobs(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    X = rng.normal(size=(n, 4)) + 1.5 * np.eye(3, 4)[y]
    return X, y


X, Y = blobs()


def model_for(seed=0, lr=0.01):
    model = xpnn.Sequential(xpnn.Dense(4, 16), xpnn.ReLU(), xpnn.Dense(16, 3), xpnn.Softmax(),
                            seed=seed)
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(lr), metrics=["accuracy"])
    return model


def crashed_backup(folder, X=X, Y=Y, batch_size=16, at=9, save_freq=2):
    with pytest.raises(Crash):
        model_for().fit(X, Y, epochs=3, batch_size=batch_size, verbose=0, callbacks=[
            xpnn.BackupAndRestore(folder, save_freq=save_freq), CrashAt(at)])
    return sorted(n for n in os.listdir(folder) if n.startswith("backup-"))


# ---------------------------------------------------------------- special files
def test_load_refuses_fifos_and_devices_at_once(tmp_path):
    """A FIFO without a writer and /dev/zero are refused before a byte is read (run in a child
    process under a timeout and a memory limit: a regression cannot hang or exhaust CI)."""
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    script = textwrap.dedent(f"""
        import resource, xpnn
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        for path in [{str(fifo)!r}, "/dev/zero"]:
            try:
                xpnn.load(path)
            except ValueError as exc:
                print("refused:", exc)
    """)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(xpnn.__file__)))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    assert "pipe.npz is not an xpnn model file (not a regular file: a FIFO)" in lines[0]
    assert "/dev/zero is not an xpnn model file (not a regular file: a device)" in lines[1]


def test_load_of_a_folder_or_a_dangling_link(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(IsADirectoryError):
        xpnn.load(tmp_path / "dir.npz")
    os.symlink(tmp_path / "gone.npz", tmp_path / "link.npz")
    with pytest.raises(FileNotFoundError):
        xpnn.load(tmp_path / "link.npz")


@pytest.mark.parametrize("kind", ["fifo", "folder", "dangling link"])
def test_backup_falls_back_when_the_newest_is_not_a_regular_file(tmp_path, kind):
    folder = tmp_path / "b"
    names = crashed_backup(folder)
    assert len(names) == 2
    newest = folder / names[-1]
    newest.unlink()
    if kind == "fifo":
        os.mkfifo(newest)
    elif kind == "folder":
        newest.mkdir()
    else:
        os.symlink(tmp_path / "missing.npz", newest)
    model = model_for()
    backup = xpnn.BackupAndRestore(folder)
    watchdog = threading.Timer(20.0, _unblock_fifo, [newest]) if kind == "fifo" else None
    if watchdog is not None:     # a reader blocked on the FIFO is released: the test ends
        watchdog.start()
    t0 = time.monotonic()
    try:
        with pytest.warns(RuntimeWarning, match="using the previous backup"):
            model.fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[backup])
    finally:
        if watchdog is not None:
            watchdog.cancel()
    assert time.monotonic() - t0 < 15
    assert backup.restored_from.endswith(names[0])


def _unblock_fifo(path):
    """Open the FIFO ``path`` for writing and close it: a reader blocked in ``open`` returns
    (and reads end of file)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:              # no reader waiting
        pass


# ---------------------------------------------------------------- backups of other runs
@pytest.mark.parametrize("change", ["rows", "batch_size"])
def test_backup_of_other_data_is_refused_naming_the_folder(tmp_path, change):
    folder = tmp_path / "b"
    crashed_backup(folder)
    model = model_for()
    before = model.get_weights()
    Xo, Yo, bs = (X[:60], Y[:60], 16) if change == "rows" else (X, Y, 32)
    what = "90 training rows, this fit has 60" if change == "rows" else \
        "16 batch_size, this fit has 32"
    with pytest.raises(ValueError, match=rf"BackupAndRestore: .*made with {what}.*"
                                         rf"{folder}.*delete it.*another backup_dir"):
        model.fit(Xo, Yo, epochs=3, batch_size=bs, verbose=0,
                  callbacks=[xpnn.BackupAndRestore(folder)])
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_backup_of_another_architecture_says_what_to_do(tmp_path):
    folder = tmp_path / "b"
    crashed_backup(folder)
    wider = xpnn.Sequential(xpnn.Dense(4, 32), xpnn.ReLU(), xpnn.Dense(32, 3), xpnn.Softmax())
    wider.compile(loss="crossentropy", optimizer="adam")
    with pytest.raises(ValueError, match=r"different model.*delete it to start afresh, or "
                                         r"pass another backup_dir"):
        wider.fit(X, Y, epochs=2, batch_size=16, callbacks=[xpnn.BackupAndRestore(folder)],
                  verbose=0)


def test_resumed_run_says_where_it_restored(tmp_path, capsys):
    folder = tmp_path / "b"
    crashed_backup(folder, at=9, save_freq=2)     # 6 batches an epoch: backup after batch 8
    backup = xpnn.BackupAndRestore(folder)
    model_for().fit(X, Y, epochs=3, batch_size=16, verbose=2, callbacks=[backup])
    assert backup.restored_at == (1, 2)
    assert "BackupAndRestore: restored from epoch 2, batch 2" in capsys.readouterr().out
    crashed_backup(folder)
    model_for().fit(X, Y, epochs=3, batch_size=16, verbose=0,
                    callbacks=[xpnn.BackupAndRestore(folder)])
    assert "restored" not in capsys.readouterr().out


# ---------------------------------------------------------------- one process per folder
def _process(code):
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_folder_in_use_by_a_running_process_is_refused_naming_it(tmp_path):
    folder = tmp_path / "b"
    crashed_backup(folder)
    other = _process("import time; time.sleep(60)")
    try:
        import socket
        (folder / ".lock").write_text(f"{other.pid} {socket.gethostname()}")
        model = model_for()
        before = model.get_weights()
        with pytest.raises(locks.FolderInUseError, match=rf"in use by process {other.pid}"):
            model.fit(X, Y, epochs=3, batch_size=16, verbose=0,
                      callbacks=[xpnn.BackupAndRestore(folder)])
        for a, b in zip(model.get_weights(), before, strict=True):
            np.testing.assert_array_equal(a, b)
        assert (folder / ".lock").read_text().startswith(str(other.pid))
    finally:
        other.kill()
        other.wait(timeout=30)
    # that process is gone: its lock is stale and taken over
    backup = xpnn.BackupAndRestore(folder)
    model_for().fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[backup])
    assert backup.restored_from is not None
    assert not folder.exists()            # finished: backups and lock removed


def test_two_processes_on_one_folder(tmp_path):
    """A second process started on the folder while the first trains stops at once with the
    first one's pid; the first finishes undisturbed (children under timeouts)."""
    folder, release = tmp_path / "b", tmp_path / "release"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(xpnn.__file__)))
    code = textwrap.dedent(f"""
        import os, sys, time, numpy as np, xpnn
        class Hold(xpnn.Callback):          # the first process trains until released
            def on_train_batch_end(self, batch, logs=None):
                if sys.argv[1] == "first" and batch == 0 and not os.path.exists({str(release)!r}):
                    print("training", flush=True)
                    deadline = time.time() + 100
                    while not os.path.exists({str(release)!r}) and time.time() < deadline:
                        time.sleep(0.05)
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
        model = xpnn.Sequential(xpnn.Dense(4, 3), xpnn.Softmax(), seed=0)
        model.compile("crossentropy", "adam")
        try:
            model.fit(X, y, epochs=3, batch_size=8, verbose=0,
                      callbacks=[xpnn.BackupAndRestore({str(folder)!r}), Hold()])
        except xpnn.locks.FolderInUseError as exc:
            print("refused:", exc)
        else:
            print("done")
    """)
    first = subprocess.Popen([sys.executable, "-c", code, "first"], stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert first.stdout.readline().strip() == "training"
        second = subprocess.run([sys.executable, "-c", code, "second"], capture_output=True,
                                text=True, timeout=120, env=env)
        assert f"in use by process {first.pid}" in second.stdout, second.stderr
        release.write_text("")
        out, _ = first.communicate(timeout=120)
        assert out.split() == ["done"]
        assert not folder.exists()
    finally:
        first.kill()
        first.wait(timeout=30)


# ---------------------------------------------------------------- learning rate of 0
def test_a_learning_rate_of_0_saves_loads_and_resumes(tmp_path):
    """One rule for lr everywhere (>= 0, as torch.optim): a rate a schedule set to 0 loads
    again, from a file and from a backup."""
    model = model_for()
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0)
    model.optimizer.lr = 0.0
    again = xpnn.load(model.save(tmp_path / "m.npz"))
    assert again.optimizer.lr == 0.0
    assert xpnn.Adam(0).lr == 0.0 and xpnn.SGD(0.0).lr == 0.0
    folder = tmp_path / "b"
    zero = xpnn.LearningRateScheduler(lambda epoch: 0.0)
    with pytest.raises(Crash):
        model_for().fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[
            zero, xpnn.BackupAndRestore(folder, save_freq=2), CrashAt(9)])
    backup = xpnn.BackupAndRestore(folder)
    resumed = model_for()
    resumed.fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[zero, backup])
    assert backup.restored_from is not None and resumed.optimizer.lr == 0.0
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -1"):
        xpnn.Adam(-1)


# ---------------------------------------------------------------- diverging fits
@pytest.mark.parametrize("fast", [True, False])
def test_a_diverging_fit_raises_without_numpy_warnings(fast):
    import warnings

    model = model_for(lr=0.01)
    model.compile("crossentropy", xpnn.SGD(1e30))
    model.fastpath = fast
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # a RuntimeWarning would fail the test
        with pytest.raises(xpnn.TrainingDivergedError):
            model.fit(X * 100, Y, epochs=3, batch_size=16, verbose=0)
        with pytest.raises(xpnn.TrainingDivergedError):
            model.train_on_batch(X * 100, Y)


def test_after_an_infinite_step_on_the_fast_path_a_sane_rate_trains_again():
    """A rate beyond float32 (set by a schedule during fit) makes the fast update write NaN
    into the flat buffers' padding too; the next fit must not inherit it."""
    from xpnn import fastpath

    for opt in (xpnn.SGD(0.1), xpnn.SGD(0.1, momentum=0.9), xpnn.Adam(0.01)):
        model = model_for()
        model.compile("crossentropy", opt)
        assert fastpath.select(model) is not None
        huge = xpnn.LearningRateScheduler(lambda epoch: 1e39)   # inf in float32
        with pytest.raises(xpnn.TrainingDivergedError):
            model.fit(X, Y, epochs=2, batch_size=16, verbose=0, callbacks=[huge])
        model.optimizer.lr = 0.01
        model.fit(X, Y, epochs=2, batch_size=16, verbose=0)
        assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize("make, message", [
    (lambda: xpnn.Sequential(xpnn.Dense(4, 3), xpnn.LeakyReLU(3.5e38)),
     r"layer 1 \(LeakyReLU\): negative_slope=3.5e\+38 is beyond the float32 range"),
    (lambda: xpnn.Sequential(xpnn.Rescaling(1e39), xpnn.Dense(4, 3)),
     r"layer 0 \(Rescaling\): scale=1e\+39 is beyond the float32 range"),
    (lambda: xpnn.Sequential(xpnn.Dense(4, 3, weight_decay=1e39)),
     r"weight_decay=1e\+39 is beyond the float32 range"),
    (lambda: xpnn.Sequential(xpnn.Dense(4, 3)).compile("mse", xpnn.SGD(1e39)),
     r"compile: optimizer: lr=1e\+39 is beyond the float32 range"),
    (lambda: xpnn.Sequential(xpnn.Dense(4, 3)).compile(
        "mse", xpnn.Adam(xpnn.schedules.CosineDecay(1e39, 10))), r"initial=1e\+39 is beyond"),
])
def test_hyperparameters_beyond_the_model_dtype_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_rate_set_beyond_float32_is_refused_when_fit_starts():
    model = model_for()
    model.optimizer.lr = 1e39
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"fit: optimizer: lr=1e\+39 is beyond the float32"):
        model.fit(X, Y, verbose=0)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    wide = xpnn.Sequential(xpnn.Dense(4, 3), xpnn.LeakyReLU(3.5e38), dtype="float64")
    assert np.isfinite(xpnn.to_numpy(wide.predict(X))).all()


# ---------------------------------------------------------------- checkpoint names
@pytest.mark.parametrize("template, message", [
    ("c-{val_loss}.npz", r"refers to 'val_loss', which fit does not log: there is no "
                         r"validation data"),
    ("c-{epoch.real.foo}.npz", r"has no attribute 'foo'"),
    ("c-{epoch[0]}.npz", r"c-\{epoch\[0\]\}.npz': .*not subscriptable"),
    ("c-{epoch:1000000000}.npz", r"asks for more than 1000 characters"),
    ("c-{loss:d}.npz", r"Unknown format code 'd'"),
    ("c-{nope}.npz", r"refers to 'nope', which fit does not log"),
    ("c-{epoch\0}.npz", r"contains a NUL byte"),
    ("c-" + "x" * 250 + "-{epoch}.npz", r"too long for the file system"),
    ("file/c-{epoch}.npz", r"cannot create the folder .*file is not a folder"),
])
def test_checkpoint_template_and_folder_are_checked_before_training(tmp_path, template,
                                                                     message):
    (tmp_path / "file").write_text("not a folder")
    model = model_for()
    before = model.get_weights()
    with pytest.raises(ValueError, match=message):
        model.fit(X, Y, epochs=2, batch_size=16, verbose=0,
                  callbacks=[xpnn.ModelCheckpoint(str(tmp_path / template))])
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert model.epochs_trained == 0


def test_checkpoint_template_with_validation_and_a_new_folder_works(tmp_path):
    model = model_for()
    cb = xpnn.ModelCheckpoint(tmp_path / "new" / "deeper" / "c-{epoch:02d}-{val_loss:.3f}")
    model.fit(X, Y, epochs=2, batch_size=16, verbose=0, validation_split=0.2, callbacks=[cb])
    assert os.path.basename(cb.last_saved).startswith("c-02-")
    assert xpnn.load(cb.last_saved).epochs_trained == 2


# ---------------------------------------------------------------- minor
def test_a_bad_schedule_leaves_the_previous_history():
    model = model_for()
    first = model.fit(X, Y, epochs=2, batch_size=16, verbose=0)
    assert model.history is first and len(first.epoch) == 2
    bad = xpnn.LearningRateScheduler(lambda epoch: float("nan"))
    with pytest.raises(ValueError, match="schedule"):
        model.fit(X, Y, epochs=2, batch_size=16, verbose=0, callbacks=[bad])
    assert model.history is first and first.history["loss"]
    late = xpnn.LearningRateScheduler(lambda epoch: 0.01 if epoch == 0 else -1.0)
    with pytest.raises(ValueError, match="schedule"):
        model.fit(X, Y, epochs=2, batch_size=16, verbose=0, callbacks=[late])
    assert model.history is not first and len(model.history.epoch) == 1   # the epoch it ran
    nothing = model.fit(X, Y, epochs=0, verbose=0)
    assert model.history is nothing


def test_ragged_data_and_malformed_batch_lists_are_named():
    model = model_for()
    with pytest.raises(ValueError, match=r"^X is ragged: .*not an array\.$"):
        model.fit([[1, 2, 3, 4], [1, 2]], [0, 1], verbose=0)
    listed = [([[1.0, 2, 3, 4], [1, 2, 3, 4]], [0, 1]), ([[1.0, 2, 3, 4]], [0])]
    with pytest.raises(ValueError, match=r"X is ragged.*give each batch's x as an array"):
        model.fit(listed, verbose=0)
    bad_y = [(np.ones((4, 4)), np.zeros(4)), (np.ones((4, 4)), [0, [1, 2], 0, 0])]
    with pytest.raises(ValueError, match=r"^data batch 1: y is ragged"):
        model.fit(bad_y, verbose=0)


# ---------------------------------------------------------------- outputs, not only weights
@pytest.mark.parametrize("source", ["array", "memmap", "generic"])
def test_a_fit_never_returns_a_model_whose_outputs_overflow(tmp_path, source):
    """One SGD step of lr 1e25 leaves finite weights (~1e24) whose logits overflow float32:
    predict would give NaN on the training data. fit raises instead, with the weights from
    before that step."""
    model = model_for()
    model.compile("crossentropy", xpnn.SGD(1e25))
    data = X
    if source == "generic":
        model.fastpath = False
    if source == "memmap":
        np.save(tmp_path / "x.npy", X)
        data = np.load(tmp_path / "x.npy", mmap_mode="r")
    before = model.get_weights()
    with pytest.raises(xpnn.TrainingDivergedError, match="the outputs on the training data "
                                                         "became non-finite at epoch 1, batch 1"):
        model.fit(data, Y, epochs=1, batch_size=len(X), verbose=0)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(xpnn.to_numpy(model.predict(X))).all()
    with pytest.raises(xpnn.TrainingDivergedError, match="the outputs on the batch"):
        model.train_on_batch(X, Y)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_large_weights_with_finite_outputs_still_train():
    """The weight bound is only a shortcut: where it is inconclusive (here 1e39 > float32's
    range) the outputs are checked on the data, and finite ones pass."""
    d = 10_000
    Xw = np.full((4, d), 1e15, np.float32)
    W = np.tile(np.array([[1e20], [-1e20]], np.float32), (d // 2, 1))   # products cancel
    model = xpnn.Sequential(xpnn.Dense(d, 1), xpnn.Sigmoid(), seed=0)
    model.compile("binary_crossentropy", xpnn.SGD(0.0))
    model.set_weights([W, np.zeros(1, np.float32)])
    assert not xpnn.guard.outputs_bounded(model, 1e15)
    model.fit(Xw, np.ones(4), epochs=1, verbose=0)
    assert np.isfinite(xpnn.to_numpy(model.predict(Xw))).all()


def test_layer_bounds_come_from_the_layers():
    """Every built-in layer states its own bound; a subclass that changes ``forward`` gets
    none (inf), one that keeps it keeps its parent's bound."""
    from xpnn.guard import layer_bound

    model = xpnn.Sequential(xpnn.Dense(3, 2), xpnn.ReLU(), xpnn.LeakyReLU(-2.0),
                            xpnn.Rescaling(3.0, offset=-1.0), xpnn.Tanh(), seed=0)
    model.predict(np.zeros((1, 3), np.float32))
    W, b = (xpnn.to_numpy(p.data) for p in model.layers[0].params)
    dense, relu, leaky, rescale, tanh = model.layers
    assert layer_bound(dense, 2.0) == pytest.approx(2.0 * np.abs(W).sum(0).max()
                                                    + np.abs(b).max())
    assert layer_bound(relu, 2.0) == 2.0
    assert layer_bound(leaky, 2.0) == 4.0
    assert layer_bound(rescale, 2.0) == 7.0
    assert layer_bound(tanh, 1e30) == 1.0

    class Louder(xpnn.ReLU):
        def forward(self, x, training=False):
            return 1e30 * x

    class Same(xpnn.ReLU):
        pass

    assert layer_bound(Louder(), 2.0) == np.inf
    assert layer_bound(Same(), 2.0) == 2.0

"""ModelCheckpoint and BackupAndRestore: files written during training, and runs that stop
at any batch (an exception standing in for a crash) and start again ending exactly like an
uninterrupted run. Real SIGKILLs are in test_checkpoint_kill.py."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
from _models import Crash, CrashAt, blobs, mlp

import xpnn
from xpnn import serialization

X, Y = blobs(90, spread=1.5)
XV, YV = blobs(30, seed=1, spread=1.5)


def model_for(opt="adam", fast=True, seed=0, lr=None):
    model = mlp(seed=seed, hidden=16, dropout=0.2)
    model.fastpath = fast
    optimizer = {"adam": lambda: xpnn.Adam(0.01 if lr is None else lr),
                 "sgd": lambda: xpnn.SGD(0.05, momentum=0.9, nesterov=True),
                 "rmsprop": lambda: xpnn.RMSprop(0.005), "adamw": lambda: xpnn.AdamW(0.01)}[opt]
    model.compile(loss="crossentropy", optimizer=optimizer(), metrics=["accuracy"])
    return model


def other_callbacks(tmp_path):
    return [xpnn.EarlyStopping("val_loss", patience=3),
            xpnn.LearningRateScheduler(lambda epoch, lr: lr * 0.9),
            xpnn.ModelCheckpoint(tmp_path / "best.npz", save_best_only=True),
            xpnn.ReduceLROnPlateau("val_loss", factor=0.5, patience=1, min_delta=0.0)]


def run(tmp_path, backup, save_freq, crash_at=None, opt="adam", fast=True, before=False,
        epochs=8):
    """One ``fit`` (a fresh process's worth of objects) with BackupAndRestore placed first or
    last; raises Crash when ``crash_at`` is given and reached."""
    model = model_for(opt, fast)
    bar = xpnn.BackupAndRestore(backup, save_freq=save_freq)
    others = other_callbacks(tmp_path)
    callbacks = ([bar, *others] if before else [*others, bar])
    if crash_at is not None:
        callbacks.append(CrashAt(crash_at))
    history = model.fit(X, Y, epochs=epochs, batch_size=16, validation_data=(XV, YV),
                        callbacks=callbacks, verbose=0)
    return model, history, bar, others


def assert_same_run(a, b):
    (ma, ha, _, oa), (mb, hb, _, ob) = a, b
    for wa, wb in zip(ma.get_weights(), mb.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert ha.history == hb.history and ha.epoch == hb.epoch
    assert ma.optimizer.lr == mb.optimizer.lr
    assert ma.optimizer.iterations == mb.optimizer.iterations
    assert ma.epochs_trained == mb.epochs_trained
    assert oa[0].best == ob[0].best and oa[0].best_epoch == ob[0].best_epoch
    assert oa[0].stopped_epoch == ob[0].stopped_epoch and oa[2].best == ob[2].best
    assert oa[3].get_state() == ob[3].get_state()


@pytest.mark.parametrize("save_freq", ["epoch", 4])
@pytest.mark.parametrize("opt, fast, before", [
    ("adam", True, False), ("adam", False, True), ("sgd", True, True), ("rmsprop", False, False),
    ("adamw", True, True)])
def test_stopped_anywhere_and_restarted_ends_like_an_uninterrupted_run(
        tmp_path, save_freq, opt, fast, before):
    reference = run(tmp_path / "ref", tmp_path / "ref-backup", save_freq, opt=opt, fast=fast,
                    before=before)
    assert not os.path.exists(tmp_path / "ref-backup")            # removed after success
    rng = np.random.default_rng(7)
    backup = tmp_path / "backup"
    crashes = 0
    while True:
        try:
            result = run(tmp_path / "resumed", backup, save_freq, int(rng.integers(1, 14)),
                         opt=opt, fast=fast, before=before)
        except Crash:
            crashes += 1
            continue
        break
    assert crashes >= 2
    assert_same_run(result, reference)
    assert result[2].restored_from is not None
    assert not os.path.exists(backup)


def test_two_generations_and_a_damaged_newest_falls_back(tmp_path):
    backup = tmp_path / "b"
    with pytest.raises(Crash):
        run(tmp_path, backup, 2, crash_at=11)
    files = sorted(set(os.listdir(backup)) - {".lock"})      # the crashed run's lock stays
    assert len(files) == 2 and all(f.startswith("backup-") for f in files)
    newest = backup / files[-1]
    newest.write_bytes(newest.read_bytes()[:-100])                # torn by a failing disk
    with pytest.warns(RuntimeWarning, match=rf"{files[-1]}.*using the previous backup"):
        result = run(tmp_path, backup, 2)
    assert result[2].restored_from.endswith(files[0])
    assert_same_run(result, run(tmp_path / "ref", tmp_path / "ref-b", 2))


def test_no_intact_backup_raises_naming_the_file(tmp_path):
    backup = tmp_path / "b"
    backup.mkdir()
    (backup / "backup-000001.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match=r"no intact backup.*backup-000001\.npz"):
        run(tmp_path, backup, "epoch")


def test_backup_of_another_architecture_is_refused(tmp_path):
    backup = tmp_path / "b"
    with pytest.raises(Crash):
        run(tmp_path, backup, "epoch", crash_at=12)
    wider = xpnn.Sequential(xpnn.Dense(4, 32), xpnn.ReLU(), xpnn.Dense(32, 3), xpnn.Softmax())
    wider.compile(loss="crossentropy", optimizer="adam")
    before = wider.get_weights()
    with pytest.raises(ValueError, match=r"backup-\d+\.npz was written by a different model"):
        wider.fit(X, Y, epochs=2, callbacks=[xpnn.BackupAndRestore(backup)], verbose=0)
    for a, b in zip(wider.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_killed_write_leaves_previous_backup(tmp_path, monkeypatch):
    """An exception between writing a backup and renaming it (what a kill at that moment
    leaves) keeps the previous backup loadable and no stray file under a backup name."""
    backup = tmp_path / "b"
    calls = {"n": 0}

    def die_on_third(tmp, final):
        calls["n"] += "backup-" in final
        if calls["n"] == 3:
            raise Crash

    monkeypatch.setattr(serialization, "_before_replace", die_on_third)
    with pytest.raises(Crash):
        run(tmp_path, backup, "epoch")
    names = sorted(set(os.listdir(backup)) - {".lock"})      # the crashed run's lock stays
    assert len(names) == 2 and all(n.startswith("backup-") for n in names)   # tmp removed
    monkeypatch.setattr(serialization, "_before_replace", None)
    for name in names:
        serialization.read(backup / name)                                      # intact
    assert_same_run(run(tmp_path, backup, "epoch"), run(tmp_path / "r", tmp_path / "rb", "epoch"))


def test_delete_checkpoint_false_keeps_the_final_state(tmp_path):
    backup = tmp_path / "b"
    model = model_for()
    model.fit(X, Y, epochs=3, verbose=0,
              callbacks=[xpnn.BackupAndRestore(backup, delete_checkpoint=False)])
    newest = sorted(os.listdir(backup))[-1]
    saved = xpnn.load(backup / newest)
    for a, b in zip(saved.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert saved.epochs_trained == 3
    again = model_for()                 # a finished run restarted: nothing left to train
    again.fit(X, Y, epochs=3, verbose=0, callbacks=[xpnn.BackupAndRestore(backup)])
    for a, b in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [dict(save_freq=0), dict(save_freq="batch"),
                                 dict(save_freq=True), dict(delete_checkpoint=1)])
def test_backup_arguments_are_checked(tmp_path, bad):
    with pytest.raises(ValueError, match="BackupAndRestore"):
        xpnn.BackupAndRestore(tmp_path, **bad)
    assert xpnn.BackupAndRestore(tmp_path, save_freq=np.int64(3)).save_freq == 3


# ------------------------------------------------------------------ ModelCheckpoint
class Scripted(xpnn.Callback):
    def __init__(self, key, values):
        self.key, self.values = key, values

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


class WeightRecorder(xpnn.Callback):
    def on_train_begin(self, logs=None):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def test_model_checkpoint_formats_names_from_epoch_and_logs(tmp_path):
    model = model_for()
    rec = WeightRecorder()
    model.fit(X, Y, epochs=3, validation_data=(XV, YV), verbose=0, callbacks=[
        rec, xpnn.ModelCheckpoint(tmp_path / "ckpt-{epoch:02d}-{val_loss:.3f}.npz")])
    names = sorted(os.listdir(tmp_path))
    assert [n[:8] for n in names] == ["ckpt-01-", "ckpt-02-", "ckpt-03-"]
    for name, val_loss, weights in zip(names, model.history["val_loss"], rec.weights,
                                       strict=True):
        assert name == f"ckpt-{name[5:7]}-{val_loss:.3f}.npz"
        for a, b in zip(xpnn.load(tmp_path / name).get_weights(), weights, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode, values, saved_epochs", [
    ("min", [3.0, 2.0, 2.5, 1.0, 1.0], [0, 1, 3]),
    ("max", [0.1, 0.5, 0.4, 0.9, 0.2], [0, 1, 3]),
])
def test_model_checkpoint_save_best_only(tmp_path, mode, values, saved_epochs):
    model = model_for()
    rec = WeightRecorder()
    ckpt = xpnn.ModelCheckpoint(tmp_path / "best-{epoch}.npz", monitor="score",
                                save_best_only=True, mode=mode)
    model.fit(X, Y, epochs=5, verbose=0, callbacks=[Scripted("score", values), rec, ckpt])
    assert sorted(os.listdir(tmp_path)) == [f"best-{e + 1}.npz" for e in saved_epochs]
    assert ckpt.best == values[saved_epochs[-1]]
    best = xpnn.load(ckpt.last_saved)
    for a, b in zip(best.get_weights(), rec.weights[saved_epochs[-1]], strict=True):
        np.testing.assert_array_equal(a, b)


def test_model_checkpoint_unknown_key_is_refused_before_training(tmp_path):
    model = model_for()
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"refers to 'val_acc'"):
        model.fit(X, Y, epochs=2, validation_data=(XV, YV), verbose=0,
                  callbacks=[xpnn.ModelCheckpoint(tmp_path / "m-{val_acc:.2f}.npz")])
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="mode"):
        xpnn.ModelCheckpoint(tmp_path / "m.npz", mode="best")


# ------------------------------------------------------------------ callback states
def test_callback_states_round_trip_through_a_file(tmp_path):
    model = model_for()
    es = xpnn.EarlyStopping("val_loss", patience=10)
    model.fit(X, Y, epochs=3, validation_data=(XV, YV), verbose=0, callbacks=[es])
    serialization.save(model, tmp_path / "s.npz", callbacks=[model.history, es])
    payload = serialization.read(tmp_path / "s.npz")
    (h_name, h_state), (e_name, e_state) = payload.training["callbacks"]
    assert (h_name, e_name) == ("History", "EarlyStopping")
    assert h_state == model.history.get_state()
    assert e_state["best"] == es.best and e_state["wait"] == es.wait
    for a, b in zip(e_state["best_weights"], es.best_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    fresh = xpnn.EarlyStopping("val_loss", patience=10)
    fresh.set_model(model)
    fresh.set_state(e_state)
    assert fresh.best == es.best and fresh.best_epoch == es.best_epoch
    unseen = xpnn.EarlyStopping()
    unseen.on_train_begin()
    serialization.save(model, tmp_path / "inf.npz", callbacks=[unseen])   # best = inf
    state = serialization.read(tmp_path / "inf.npz").training["callbacks"][0][1]
    assert state["best"] == float("inf")


# ------------------------------------------------------------------ interruption, sklearn
class InterruptAt(xpnn.Callback):
    def __init__(self, at):
        self.at, self.seen = at, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), __import__("signal").SIGINT)


@pytest.mark.parametrize("fast", [True, False])
def test_ctrl_c_during_fit_leaves_the_state_after_the_last_step(fast):
    """SIGINT inside a step: fit raises KeyboardInterrupt once that step is complete; the model
    equals one trained for exactly that many steps, and continues training normally."""
    model = model_for(fast=fast)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[InterruptAt(9)])
    assert model.optimizer.iterations == 9
    steps = model_for(fast=fast)                     # stopped cleanly before step 10
    with pytest.raises(Crash):
        steps.fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[CrashAt(9)])
    for a, b in zip(model.get_weights(), steps.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    model.fit(X, Y, epochs=1, verbose=0)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_pickled_sklearn_estimator_with_warm_start_continues_like_one_run():
    from xpnn.sklearn import MLPClassifier

    def est():
        return MLPClassifier(hidden_layer_sizes=(8,), max_iter=4, warm_start=True,
                             random_state=0, tol=0.0, n_iter_no_change=1000)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # ConvergenceWarning after max_iter
        whole = est().fit(X, Y)
        whole.fit(X, Y)
        half = est().fit(X, Y)
        restored = pickle.loads(pickle.dumps(half))
        restored.fit(X, Y)
    np.testing.assert_array_equal(restored.predict_proba(X), whole.predict_proba(X))
    for a, b in zip(restored.coefs_, whole.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)


class _OneProcessMPI:
    """The calls of an mpi4py communicator that fit makes, answered by this process alone as
    rank ``rank`` of 2 (the numbers trained are not those of 2 ranks; only who writes
    matters here)."""

    IN_PLACE = None

    def __init__(self, rank):
        self.rank = rank

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return 2

    def Allreduce(self, _, buf):
        pass

    def Bcast(self, buf, root=0):
        pass

    def bcast(self, obj, root=0):
        return obj

    def allgather(self, obj):
        return [obj, obj]

    def Barrier(self):
        pass


def FakeComm(rank):
    """A one-process stand-in for rank ``rank`` of a 2-rank data-parallel communicator."""
    return xpnn.distributed.Communicator(_OneProcessMPI(rank))


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_0_writes_backups_and_checkpoints(tmp_path, rank):
    model = model_for()
    model.fit(X, Y, epochs=3, verbose=0, comm=FakeComm(rank), callbacks=[
        xpnn.BackupAndRestore(tmp_path / "b", delete_checkpoint=False),
        xpnn.ModelCheckpoint(tmp_path / "c" / "m-{epoch}.npz")])
    backups = sorted(os.listdir(tmp_path / "b"))
    assert backups == ([] if rank else ["backup-000002.npz", "backup-000003.npz"])
    assert os.path.exists(tmp_path / "c") == (rank == 0)


def test_backup_written_on_numpy_resumes_on_torch(tmp_path):
    """A run stopped mid-epoch on NumPy and restarted on torch (float64) ends where the
    uninterrupted NumPy run does, within float tolerance."""
    pytest.importorskip("torch")

    def run64(backend, backup, crash_at=None):
        model = xpnn.Sequential(xpnn.Dense(4, 16), xpnn.Tanh(), xpnn.Dropout(0.2),
                                xpnn.Dense(16, 3), xpnn.Softmax(), seed=0, dtype="float64",
                                backend=backend)
        model.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01), metrics=["accuracy"])
        callbacks = [xpnn.BackupAndRestore(backup, save_freq=5)]
        if crash_at is not None:
            callbacks.append(CrashAt(crash_at))
        model.fit(X, Y, epochs=4, batch_size=16, callbacks=callbacks, verbose=0)
        return model

    reference = run64("numpy", tmp_path / "ref")
    with pytest.raises(Crash):
        run64("numpy", tmp_path / "b", crash_at=13)
    resumed = run64("torch", tmp_path / "b")
    assert resumed.backend.name == "torch"
    for a, b in zip(resumed.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_resume_with_a_scheduled_learning_rate(tmp_path):
    """An optimizer whose lr is a schedule: the backup keeps the schedule and the current rate."""
    from xpnn.schedules import CosineDecay

    def go(backup, crash_at=None):
        model = model_for(lr=CosineDecay(0.02, 6))
        callbacks = [xpnn.BackupAndRestore(backup, save_freq=4)]
        if crash_at is not None:
            callbacks.append(CrashAt(crash_at))
        model.fit(X, Y, epochs=6, batch_size=16, callbacks=callbacks, verbose=0)
        return model

    reference = go(tmp_path / "ref")
    for at in (9, 8, 11):
        with pytest.raises(Crash):
            go(tmp_path / "b", crash_at=at)
    resumed = go(tmp_path / "b")
    for a, b in zip(resumed.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed.optimizer.lr == reference.optimizer.lr
    model = model_for(lr=CosineDecay(0.02, 6))
    model.fit(X, Y, epochs=2, verbose=0)
    model.save(tmp_path / "s.npz")
    loaded = xpnn.load(tmp_path / "s.npz")
    assert loaded.optimizer.schedule == model.optimizer.schedule
    assert loaded.optimizer.lr == model.optimizer.lr

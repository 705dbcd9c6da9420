"""BackupAndRestore against real crashes: a training process is SIGKILLed at seeded random
moments after its first backup (between epochs, inside one, in the middle of writing a backup)
and started again with the same command until it finishes; its final weights equal, bit for
bit, those of a run never interrupted. Every process runs under a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from xpnn import serialization

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60            # seconds, for any single training process

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    import xpnn
    import xpnn.fastpath.numpy_mlp  # imported before the clock starts (it imports numba)
    from xpnn import serialization

    backup, out, save_freq = sys.argv[1], sys.argv[2], sys.argv[3]
    save_freq = save_freq if save_freq == "epoch" else int(save_freq)
    kill_on_write = int(os.environ.get("KILL_ON_WRITE", "0"))
    writes = []

    def kill_between_write_and_rename(tmp, final):
        writes.append(final)
        if len(writes) == kill_on_write:
            os.kill(os.getpid(), signal.SIGKILL)

    if kill_on_write:
        serialization._before_replace = kill_between_write_and_rename

    class Slow(xpnn.Callback):          # training takes time: kills land inside it
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(0.002)

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=400)
    X = rng.normal(size=(400, 6)) + np.eye(3, 6)[y]
    Xv = rng.normal(size=(60, 6))
    yv = rng.integers(0, 3, size=60)
    model = xpnn.Sequential(xpnn.Dense(6, 24), xpnn.ReLU(), xpnn.Dropout(0.2),
                            xpnn.Dense(24, 3), xpnn.Softmax(), seed=3)
    model.compile(loss="crossentropy", optimizer=xpnn.Adam(0.01), metrics=["accuracy"])
    callbacks = [xpnn.EarlyStopping("val_loss", patience=5),
                 xpnn.LearningRateScheduler(lambda epoch, lr: lr * 0.95),
                 xpnn.BackupAndRestore(backup, save_freq=save_freq), Slow()]
    print("training", flush=True)
    t0 = time.perf_counter()
    history = model.fit(X, y, epochs=12, batch_size=20, validation_data=(Xv, yv),
                        callbacks=callbacks, verbose=0)
    np.savez(out, *model.get_weights(), lr=model.optimizer.lr,
             loss=np.array(history.history["loss"]))
    print("restored from", callbacks[2].restored_from, flush=True)
    print("seconds", time.perf_counter() - t0, flush=True)
""")


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("kill") / "train.py"
    path.write_text(SCRIPT)
    return path


def start(script, backup, out, save_freq, **env):
    environ = {**os.environ, "XPNN_NUMBA": "0", "PYTHONPATH": str(ROOT),
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, str(script), str(backup), str(out), save_freq],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environ, cwd=ROOT)


def finish(proc):
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"training process exceeded {TIMEOUT} s")
    return proc.returncode, stdout, stderr


def run_to_end(script, backup, out, save_freq, **env):
    """Run to completion; returns (seconds spent in fit, stdout)."""
    code, stdout, stderr = finish(start(script, backup, out, save_freq, **env))
    assert code == 0, stderr
    return float(stdout.split("seconds")[-1]), stdout


def start_training(script, backup, out, save_freq):
    """A process that has reached ``fit`` (its 'training' line read)."""
    proc = start(script, backup, out, save_freq)
    line = proc.stdout.readline()
    if line.strip() != "training":
        proc.kill()
        pytest.fail(f"training process did not start: {line!r} {proc.communicate()}")
    return proc


def final_weights(out):
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def reference(script, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    seconds, _ = run_to_end(script, folder / "backup", folder / "out.npz", "epoch")
    return final_weights(folder / "out.npz"), seconds


@pytest.mark.parametrize("save_freq, seed", [("epoch", 11), ("7", 12)])
def test_sigkill_at_random_moments_then_restart(script, reference, tmp_path, save_freq,
                                                seed):
    weights, seconds = reference
    rng = np.random.default_rng(seed)
    backup, out = tmp_path / "backup", tmp_path / "out.npz"
    kills = resumed_kills = 0
    while True:                # killed up to 4 times, then left to finish
        proc = start_training(script, backup, out, save_freq)
        if kills < 4:
            # a random moment once a first backup exists: at most 0.35 of a whole run later,
            # so that the first kills land before the run ends even after a resume
            deadline = time.monotonic() + TIMEOUT
            while not any(backup.glob("backup-*.npz")) and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(float(rng.uniform(0.0, 0.35)) * seconds)
            proc.send_signal(signal.SIGKILL)
        code, stdout, stderr = finish(proc)
        if code == 0:          # (it may finish before the signal arrives)
            break
        had_backup = backup.exists() and any(backup.glob("backup-*.npz"))
        assert code == -signal.SIGKILL, stderr
        kills += 1
        resumed_kills += had_backup
    assert kills >= 2 and resumed_kills == kills
    assert "restored from None" not in stdout
    assert_same(final_weights(out), weights)
    assert not backup.exists()                     # removed after the successful run


def test_sigkill_between_writing_and_renaming_a_backup(script, reference, tmp_path):
    weights, _ = reference
    backup, out = tmp_path / "backup", tmp_path / "out.npz"
    code, _, _ = finish(start(script, backup, out, "epoch", KILL_ON_WRITE="4"))
    assert code == -signal.SIGKILL
    names = sorted(p.name for p in backup.iterdir())
    temporary = [n for n in names if n.endswith(".tmp")]
    kept = [n for n in names if n.startswith("backup-")]
    assert len(temporary) == 1 and kept == ["backup-000002.npz", "backup-000003.npz"]
    for name in kept:                              # the previous backups are intact
        assert serialization.read(backup / name).training["epochs_trained"] >= 1
    _, stdout = run_to_end(script, backup, out, "epoch")
    assert "backup-000003.npz" in stdout
    assert_same(final_weights(out), weights)

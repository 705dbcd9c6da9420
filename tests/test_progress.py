"""fit/evaluate/predict progress: a tqdm bar on a terminal, plain lines elsewhere, no per-batch
device synchronisation on GPUs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from _models import classifier

from xpnn.progress import ProgressBar

pytest.importorskip("tqdm")

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import numpy as np, xpnn
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4)); y = (X.sum(1) > 0).astype(int)
    model = xpnn.Sequential(xpnn.Dense(4, 8), xpnn.ReLU(), xpnn.Dense(8, 2), xpnn.Softmax(),
                            seed=0)
    model.compile("crossentropy", "adam", ["accuracy"])
    model.fit(X, y, epochs=3, batch_size=32, validation_split=0.25, verbose=1)
    print("DONE")
""")


def data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


model = partial(classifier, hidden=6, k=2, activation="tanh")


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "XPNN_NUMBA": "0"}


def test_bar_under_a_pseudo_terminal():
    """stdin/stdout/stderr on a pty of 160 columns: tqdm bars, one finished line per epoch."""
    pty = pytest.importorskip("pty")
    import fcntl
    import select
    import struct
    import termios

    main, sub = pty.openpty()
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdin=sub, stdout=sub, stderr=sub,
                            cwd=REPO, env=_env())
    os.close(sub)
    out, deadline = b"", time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:     # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "DONE" in text
    assert "\r" in text and "batch/s" in text           # a live bar, redrawn in place
    for epoch in (1, 2, 3):                               # each epoch's finished line
        assert f"Epoch {epoch}/3: 10/10 [" in text, text
    assert "val_accuracy=" in text and "loss=" in text
    assert "Epoch 1/3 - " not in text                     # not the plain line


def test_no_bar_when_piped_one_line_per_epoch():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          cwd=REPO, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "batch/s" not in proc.stderr and "\r" not in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "DONE"
    assert [line.split(" - ")[0] for line in lines[:-1]] == ["Epoch 1/3", "Epoch 2/3",
                                                              "Epoch 3/3"]
    assert all("val_accuracy: " in line for line in lines[:-1])


@pytest.mark.parametrize("verbose", [1, 2, "auto", True])
def test_lines_without_a_terminal(capsys, verbose):
    model().fit(*data(), epochs=2, batch_size=16, verbose=verbose)
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("Epoch 2/2 - ")
    assert "loss: " in lines[0] and "accuracy: " in lines[0]
    assert err == ""


@pytest.mark.parametrize("verbose", [0, False])
def test_verbose_0_is_silent(capsys, verbose):
    m = model()
    m.fit(*data(), epochs=2, verbose=verbose)
    m.evaluate(*data(), verbose=verbose)
    m.predict(data()[0], verbose=verbose)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("bad", [3, -1, "loud", 1.5])
def test_bad_verbose_is_rejected(bad):
    m = model()
    for call in (lambda: m.fit(*data(), verbose=bad), lambda: m.evaluate(*data(), verbose=bad),
                 lambda: m.predict(data()[0], verbose=bad)):
        with pytest.raises(ValueError, match="verbose must be 0, 1, 2"):
            call()


def test_evaluate_and_predict_lines(capsys):
    m = model()
    m.fit(*data(), epochs=1, verbose=0)
    result = m.evaluate(*data(), batch_size=50, verbose=2)
    m.predict(data()[0], batch_size=50, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("evaluate: 3/3 - ")
    assert f"loss: {result['loss']:.4f}" in lines[0] and "accuracy: " in lines[0]
    assert lines[1].startswith("predict: 3/3 - ")


def test_forced_bar_counts_batches_and_shows_metrics(capsys):
    stream = io.StringIO()
    bar = ProgressBar(bar=True, file=stream)
    history = model().fit(*data(), epochs=2, batch_size=16, validation_split=0.25,
                          callbacks=[bar])
    text = stream.getvalue()
    loss = history.history["loss"][-1]
    assert "Epoch 2/2: 6/6 [" in text                    # 90 rows / 16 = 6 batches
    assert f"loss={loss:.4f}" in text and "val_accuracy=" in text
    assert capsys.readouterr().out == ""                 # the user's bar replaces verbose's


def test_running_loss_is_the_size_weighted_mean():
    """After the last batch the bar's running loss is the epoch's logged loss."""
    stream = io.StringIO()
    seen = []

    class Spy(ProgressBar):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(self._loss_sum) / self._rows)
            super().on_epoch_end(epoch, logs)

    history = model().fit(*data(), epochs=2, batch_size=25, shuffle=False,
                          callbacks=[Spy(bar=True, file=stream)])
    np.testing.assert_allclose(seen, history.history["loss"], rtol=1e-6)


def test_one_bar_per_fit_and_log_every(capsys):
    stream = io.StringIO()
    model().fit(*data(), epochs=4, callbacks=[ProgressBar(per="epoch", bar=True, file=stream,
                                                          desc="xor")])
    assert "xor: 100%" in stream.getvalue() and "4/4" in stream.getvalue()
    model().fit(*data(), epochs=4, callbacks=[ProgressBar(per="epoch", bar=False, log_every=2,
                                                          desc="run")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["run: epoch 2/4", "run: epoch 4/4"]


class _DeviceLoss:
    """A stand-in for a 0-d GPU array that counts host reads (float())."""

    reads = 0

    def __init__(self, value):
        self.value = value

    def __float__(self):
        _DeviceLoss.reads += 1
        return float(self.value)

    def __mul__(self, other):
        return _DeviceLoss(self.value * other)

    def __add__(self, other):
        return _DeviceLoss(self.value + getattr(other, "value", other))

    __radd__ = __add__


class _FakeGPUModel:
    class backend:   # noqa: N801
        is_gpu = True


def test_no_per_batch_sync_on_gpu():
    bar = ProgressBar(bar=True, sync_every=10, file=io.StringIO())
    bar.set_model(_FakeGPUModel())
    bar.params = {"epochs": 1, "steps": 35}
    bar.on_train_begin()
    bar.on_epoch_begin(0)
    bar._bar.mininterval = 0.0                           # redraw whenever allowed
    _DeviceLoss.reads = 0
    for b in range(35):
        bar.on_train_batch_end(b, {"size": 4, "loss": _DeviceLoss(1.0 + b)})
    assert _DeviceLoss.reads == 3                        # batches 10, 20 and 30
    np.testing.assert_allclose(float(bar._loss_sum) / bar._rows, np.mean(1.0 + np.arange(35)))
    bar.on_epoch_end(0, {"loss": 18.0})
    bar.on_train_end()


def test_progress_bar_arguments_are_checked():
    with pytest.raises(ValueError, match="per must be"):
        ProgressBar(per="step")
    with pytest.raises(ValueError, match="sync_every must be an int >= 1"):
        ProgressBar(sync_every=0)


def test_iterables_of_batches(capsys):
    X, y = data(90)
    batches = [(X[i:i + 30], y[i:i + 30]) for i in range(0, 90, 30)]
    stream = io.StringIO()
    m = model()
    m.fit(batches, epochs=2, callbacks=[ProgressBar(bar=True, file=stream)])
    assert "Epoch 2/2: 3/3 [" in stream.getvalue()
    gen = ((X[i % 3 * 30:i % 3 * 30 + 30], y[i % 3 * 30:i % 3 * 30 + 30]) for i in range(100))
    m.fit(gen, steps_per_epoch=3, epochs=1, callbacks=[ProgressBar(bar=True, file=stream)])
    assert "Epoch 1/1: 3/3 [" in stream.getvalue()
    m.evaluate(batches, verbose=2)
    assert capsys.readouterr().out.startswith("evaluate: 3/3 - ")


def test_streamed_predict_and_evaluate_lines(capsys):
    m = model()
    m.fit(*data(), epochs=1, verbose=0)
    m.resident_budget = 0                        # every host array is streamed
    X, y = data()
    out = m.predict(X, batch_size=50, verbose=2)
    m.evaluate(X, y, batch_size=50, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert out.shape == (120, 2)
    assert lines[0].startswith("predict: 3/3 - ") and lines[1].startswith("evaluate: 3/3 - ")

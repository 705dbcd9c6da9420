"""xpnn.threads: the BLAS thread count around fit/predict/evaluate (the policy and its
restoring)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from _models import blobs, classifier
from threadpoolctl import threadpool_info, threadpool_limits

import xpnn
from xpnn import threads
from xpnn.callbacks import Callback


def blas_threads():
    return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]


@pytest.fixture
def free_machine(monkeypatch):
    """A 4-core machine nobody else uses, whatever this one is doing, with BLAS at 4 threads
    inside the test and no thread variables in the environment."""
    for name in (*threads.BLAS_ENV, threads.XPNN_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)
    monkeypatch.setattr(threads, "_blas_threads", lambda: 4)
    yield


def real_blas(monkeypatch):
    """The BLAS of this process, at its default count (as many threads as cores)."""
    n = max(blas_threads())
    monkeypatch.setattr(threads, "_blas_threads", lambda: max(blas_threads()))
    monkeypatch.setattr(threads, "usable_cores", lambda: n)


def medium():
    """A network of 2.6 MFLOP per training step of 16 rows: one thread."""
    model = xpnn.Sequential(xpnn.Dense(4, 256), xpnn.ReLU(), xpnn.Dense(256, 100),
                            xpnn.ReLU(), xpnn.Dense(100, 3), xpnn.Softmax())
    return model.compile("crossentropy", "adam", ["accuracy"])


class Record(Callback):
    """Records BLAS's thread count and xpnn's budget during the first batch."""

    def __init__(self, fail=False):
        super().__init__()
        self.seen, self.fail = None, fail

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen is None:
            self.seen = (blas_threads(), threads.budget())
        if self.fail:
            raise RuntimeError("callback failed")


def test_choose_small_and_large_steps():
    F = threads.FLOPS_PER_THREAD
    assert threads.choose(0.5 * F, cores=8) == 1           # too small to gain: one thread
    assert threads.choose(1.9 * F, cores=8) == 1
    assert threads.choose(2 * F, cores=8) == 2
    assert threads.choose(1000 * F, cores=8) == 8          # large: every core
    assert threads.choose(1000 * F, cores=1) == 1


def test_choose_leaves_busy_cores_to_others():
    F = threads.FLOPS_PER_THREAD
    assert threads.choose(1000 * F, cores=2, busy=1.0) == 1     # one busy process beside
    assert threads.choose(1000 * F, cores=8, busy=2.6) == 5
    assert threads.choose(1000 * F, cores=2, busy=7.0) == 1     # never below one
    assert threads.choose(1000 * F, cores=2, busy=0.4) == 2     # a flicker is not a process


def test_step_flops_counts_forward_and_backward():
    model = classifier()                                  # 4-8-3: 67 parameters
    assert model.count_params() == 67
    assert threads.step_flops(model, 10) == 6 * 10 * 67
    assert threads.step_flops(model, 10, training=False) == 2 * 10 * 67


def test_decide_small_and_large_networks(free_machine):
    small = classifier()                                  # 67 parameters: BLAS left alone
    assert threads.decide(small, 32) is None
    medium = xpnn.Sequential(xpnn.Dense(50, 256), xpnn.ReLU(), xpnn.Dense(256, 2),
                             xpnn.Softmax())
    assert threads.decide(medium, 32) == 1                # 2.5 MFLOP a step: one thread
    large = xpnn.Sequential(xpnn.Dense(784, 1024), xpnn.ReLU(), xpnn.Dense(1024, 10),
                            xpnn.Softmax())
    assert threads.decide(large, 512) == 4
    assert threads.decide(large, 1, training=False) == 1


def test_user_settings_win(free_machine, monkeypatch):
    model = medium()
    model.n_threads = 3                                    # the model's own count, exactly
    assert threads.decide(model, 32) == 3
    model.n_threads = None
    monkeypatch.setenv(threads.XPNN_ENV, "2")
    assert threads.decide(model, 32) == 2
    monkeypatch.delenv(threads.XPNN_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")             # BLAS set by the user: left alone
    assert threads.decide(model, 32) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "_blas_threads", lambda: 2)   # an outer threadpool_limits
    assert threads.decide(model, 32) is None
    for bad in (0, -1, 1.5, "two", True):
        model.n_threads = bad
        with pytest.raises(ValueError, match="n_threads"):
            threads.decide(model, 32)


def test_distributed_share_is_kept(free_machine, monkeypatch):
    monkeypatch.setattr(xpnn.distributed, "_THREAD_COUNT", 1)
    assert threads.decide(medium(), 32) is None


def test_fit_sets_threads_and_restores_them(free_machine, monkeypatch):
    real_blas(monkeypatch)
    X, y = blobs(64)
    model = medium()
    before = blas_threads()
    rec = Record()
    model.fit(X, y, epochs=1, batch_size=16, verbose=0, callbacks=[rec])
    assert set(rec.seen[0]) == {1} and rec.seen[1] == 1   # a small network: one thread
    assert set(blas_threads()) == set(before) and threads.budget() is None


def test_threads_restored_when_fit_raises(free_machine, monkeypatch):
    real_blas(monkeypatch)
    X, y = blobs(64)
    model = medium()
    before = blas_threads()
    rec = Record(fail=True)
    with pytest.raises(RuntimeError, match="callback failed"):
        model.fit(X, y, epochs=1, batch_size=16, verbose=0, callbacks=[rec])
    assert set(rec.seen[0]) == {1}
    assert set(blas_threads()) == set(before) and threads.budget() is None


def test_outer_threadpool_limits_wins(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    for name in (*threads.BLAS_ENV, threads.XPNN_ENV):
        monkeypatch.delenv(name, raising=False)
    X, y = blobs(64)
    model = xpnn.Sequential(xpnn.Dense(4, 256), xpnn.ReLU(), xpnn.Dense(256, 3), xpnn.Softmax())
    model.compile("crossentropy", "adam")
    model.n_threads = None
    with threadpool_limits(limits=1, user_api="blas"):
        rec = Record()
        model.fit(X, y, epochs=1, batch_size=16, verbose=0, callbacks=[rec])
        assert set(rec.seen[0]) == {1} and rec.seen[1] is None     # left alone
        assert set(blas_threads()) == {1}


def test_blas_count_is_read_live_and_an_outer_limit_skips_the_rest(monkeypatch):
    """The BLAS libraries are looked up once, their count read at every decision: an outer
    threadpool_limits is seen at once and after it ends, and under it neither the model's
    size nor the environment is asked."""
    for name in (*threads.BLAS_ENV, threads.XPNN_ENV):
        monkeypatch.delenv(name, raising=False)
    n = max(blas_threads())
    monkeypatch.setattr(threads, "usable_cores", lambda: n)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)
    model = medium()
    model.n_threads = None
    model.build(4)
    assert threads._blas_threads() == n
    asked = []
    monkeypatch.setattr(threads, "step_flops", lambda *a, **k: asked.append(1) or 1e12)
    with threadpool_limits(limits=1, user_api="blas"):
        assert threads._blas_threads() == 1
        assert threads.decide(model, 256) is None
        assert asked == []
    assert threads._blas_threads() == n
    assert threads.decide(model, 256) == n and asked == [1]


def test_predict_and_evaluate_use_and_restore(free_machine, monkeypatch):
    real_blas(monkeypatch)
    X, y = blobs(64)
    model = medium()
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    seen = []
    forward = model._forward

    def spy(*args, **kwargs):
        seen.append((blas_threads(), threads.budget()))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "_forward", spy)
    before = blas_threads()
    model.n_threads = 1
    p = model.predict(X, batch_size=32)
    model.evaluate(X, y)
    assert seen and all(set(b) == {1} and n == 1 for b, n in seen)
    assert set(blas_threads()) == set(before) and threads.budget() is None
    np.testing.assert_allclose(xpnn.to_numpy(p).sum(axis=1), 1.0, rtol=1e-5)


def test_results_do_not_depend_on_threads(monkeypatch):
    """The same weights with one thread and with the machine's cores (BLAS splits a matmul's
    output, not its sums)."""
    X, y = blobs(256)
    weights = []
    for n in (1, threads.usable_cores()):
        model = xpnn.Sequential(xpnn.Dense(4, 256), xpnn.ReLU(), xpnn.Dense(256, 3),
                                xpnn.Softmax(), seed=0)
        model.compile("crossentropy", "adam")
        model.n_threads = n
        model.fit(X, y, epochs=2, batch_size=128, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_busy_cores_is_a_count():
    busy = threads.busy_cores()
    assert 0.0 <= busy < 10_000
    assert threads.usable_cores() >= 1


def test_busy_cores_ignores_a_burst_and_is_reused(monkeypatch):
    readings = iter([0, 5, 0, 2, 2, 1])
    monkeypatch.setattr(threads, "_others_running", lambda: next(readings))
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(threads, "_BUSY", (-1e9, 0.0))
    assert threads.busy_cores() == 0.0                   # median of 0, 5, 0
    assert threads.busy_cores() == 0.0                   # reused within BUSY_TTL
    monkeypatch.setattr(threads, "_BUSY", (-1e9, 0.0))
    assert threads.busy_cores() == 2 * 4 / 8             # median 2, this process's share


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat (Linux)")
def test_busy_cores_sees_a_spinning_process(monkeypatch):
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        monkeypatch.setattr(threads, "_BUSY", (-1e9, 0.0))
        share = threads.usable_cores() / os.cpu_count()
        assert threads.busy_cores() >= share             # it is always runnable
    finally:
        spinner.kill()
        spinner.wait()


def test_set_threads_is_reported_and_kept(free_machine, monkeypatch):
    from xpnn import distributed
    for name in ("XPNN_FASTPATH_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)      # restored afterwards
    numba = sys.modules.get("numba")
    numba_threads = numba.get_num_threads() if numba else None
    monkeypatch.setattr(distributed, "_THREAD_COUNT", None)
    monkeypatch.setattr(distributed, "_THREAD_LIMITS", None)
    assert distributed.thread_count() is None
    distributed.set_threads(1)
    try:
        assert distributed.thread_count() == 1
        assert threads.decide(medium(), 32) is None      # the per-rank share wins
    finally:
        distributed._THREAD_LIMITS.restore_original_limits()
        if numba:
            numba.set_num_threads(numba_threads)

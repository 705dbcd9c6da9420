"""The CuPy host-to-device stager's ordering, against a recording stand-in for CuPy (no GPU)."""

from __future__ import annotations

import sys
import types

import numpy as np

from xpnn import staging


class _Event:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def synchronize(self):
        self.log.append(("host waits", self.name))


class _Stream:
    def __init__(self, log, name):
        self.log, self.name, self.n = log, name, 0

    def record(self):
        self.n += 1
        return _Event(self.log, f"{self.name}:{self.n}")

    def wait_event(self, event):
        self.log.append((f"{self.name} waits", event.name))


class _DeviceArray:
    def __init__(self, shape, dtype, log):
        self.data, self.log = np.zeros(shape, dtype), log

    def __getitem__(self, key):
        view = _DeviceArray.__new__(_DeviceArray)
        view.data, view.log = self.data[key], self.log
        return view

    def set(self, host, stream=None):
        assert stream is not None and stream.name == "copy"
        self.log.append(("copy", int(host[0, 0])))
        self.data[...] = host


def _fake_cupy(log):
    compute = _Stream(log, "compute")
    cuda = types.SimpleNamespace(
        Stream=lambda non_blocking: _Stream(log, "copy"),
        get_current_stream=lambda: compute,
        alloc_pinned_memory=lambda nbytes: bytearray(nbytes))
    return types.SimpleNamespace(cuda=cuda, empty=lambda shape, dtype: _DeviceArray(
        shape, dtype, log))


class _Device:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_stager_orders_copies_and_steps(monkeypatch):
    log = []
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(log))
    backend = types.SimpleNamespace(family="cupy", device=_Device())
    stager = staging.stager_for(backend)
    got = []
    for b in range(4):
        block = np.full((3, 2), b, np.float32)
        dev = stager.put(block)
        got.append(dev.data.copy())
        stager.release()
    for b, arr in enumerate(got):
        np.testing.assert_array_equal(arr, np.full((3, 2), b))
    # every step waits for its copy; a slot is refilled only after the step that used it
    assert ("compute waits", "copy:1") in log and ("compute waits", "copy:4") in log
    third = log.index(("copy", 2))
    assert ("copy waits", "compute:1") in log[:third]     # slot 0 released by batch 0's step
    assert ("host waits", "copy:1") in log[:third]        # its pinned buffer's copy finished


def test_no_stager_on_the_cpu():
    assert staging.stager_for(types.SimpleNamespace(family="numpy")) is None


def test_batches_read_into_the_pinned_buffer_are_not_copied_again(monkeypatch):
    log = []
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(log))
    stager = staging.stager_for(types.SimpleNamespace(family="cupy", device=_Device()))
    copies = []
    real_copyto = np.copyto
    monkeypatch.setattr(staging.np, "copyto", lambda *a, **k: (copies.append(1),
                                                                real_copyto(*a, **k)))
    for b in range(4):
        pinned = stager.host_buffer((3, 2), np.float32)
        if b >= 2:      # a slot is handed out again only after its last copy finished
            assert log[-1] == ("host waits", f"copy:{b - 1}")
        pinned[...] = b
        dev = stager.put(pinned)
        np.testing.assert_array_equal(dev.data, np.full((3, 2), b))
        stager.release()
    assert copies == []                         # read in place: no host-side copy
    stager.put(np.full((3, 2), 9, np.float32))  # any other array is copied into the slot
    assert copies == [1]


def test_streamed_batches_go_through_the_pinned_buffers(monkeypatch, tmp_path):
    """``HostBatches`` on a CuPy backend reads each shuffled batch of a memmap into the pinned
    buffer and copies it to the device; a rank's empty slice of a batch skips the stager."""
    from xpnn import data

    log = []
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(log))
    backend = types.SimpleNamespace(family="cupy", device=_Device(), xp=np,
                                    asarray=lambda a, dtype=None: np.asarray(a, dtype=dtype))
    empty_batch = 1

    def local_rows(lo, hi):
        return (lo, lo) if lo // 4 == empty_batch else (lo, hi)

    model = types.SimpleNamespace(backend=backend, dtype="float32")
    X = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.uint8, (10, 3))
    X[...] = np.arange(1, 31).reshape(10, 3)
    perm = np.random.default_rng(0).permutation(10)
    got = [(b, np.array(getattr(xb, "data", xb)), tb)
           for b, xb, tb, _ in data.HostBatches(X, np.arange(10)).batches(model, perm, 4,
                                                                          shard=local_rows)]
    assert [b for b, *_ in got] == [0, 1, 2]
    for b, xb, tb in got:
        rows = perm[b * 4:(b + 1) * 4] if b != empty_batch else perm[:0]
        np.testing.assert_array_equal(xb, X[rows].astype(np.float32))
        np.testing.assert_array_equal(tb, rows)
    assert [entry for entry in log if entry[0] == "copy"] == [
        ("copy", int(X[perm[0], 0])), ("copy", int(X[perm[8], 0]))]


def test_batches_of_an_iterable_go_through_the_stager(monkeypatch):
    """``fit``/``predict`` on an iterable of host batches hand each checked, cast ``x`` to the
    stager (CuPy's pinned double buffer) and release it after its step; the numbers are those
    of the unstaged run. A recording stager stands in on the NumPy backend."""
    import xpnn
    from xpnn import data

    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 5))
    y = rng.integers(0, 3, 48)
    batches = [(X[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]

    def model():
        m = xpnn.Sequential(xpnn.Dense(5, 8), xpnn.ReLU(), xpnn.Dense(8, 3), xpnn.Softmax(),
                            seed=0)
        m.compile("crossentropy", xpnn.Adam(1e-2))
        return m

    plain = model()
    plain.fit(batches, epochs=2, verbose=0)
    events = []

    class Recording:
        def put(self, block):
            assert block.dtype == np.float32 and block.flags.c_contiguous
            events.append("put")
            return np.array(block, copy=True)

        def release(self):
            events.append("release")

    monkeypatch.setattr(data.staging, "stager_for", lambda backend: Recording())
    staged = model()
    staged.fit(batches, epochs=2, verbose=0)
    assert events == ["put", "release"] * 6                 # 3 batches x 2 epochs, in turn
    for a, b in zip(plain.get_weights(), staged.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    events.clear()
    np.testing.assert_array_equal(staged.predict(batches), staged.predict(X))
    assert events == ["put", "release"] * 3

"""Data-parallel training (xpnn.distributed): N ranks under mpiexec against one process.

The MPI tests launch ``mpiexec -n 2`` and ``-n 3`` on tests/mpi_cases.py in a subprocess with a
timeout (they skip, saying why, without mpi4py or mpiexec) and compare what every rank ended
with to the same cases run here without a communicator. The communicator's own logic (thread
counts, launcher detection, NCCL set-up) is tested in-process with fakes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import xpnn
from xpnn import distributed

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import mpi_cases  # noqa: E402

TIMEOUT = 120


def _mpiexec():
    """The mpiexec beside this Python (the mpich wheel puts it there), else one on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _skip_reason():
    if importlib.util.find_spec("mpi4py") is None:
        return 'mpi4py is not installed (pip install "xpnn[mpi]")'
    if _mpiexec() is None:
        return 'no mpiexec found (pip install "xpnn[mpi]" brings the mpich wheel\'s)'
    return None


needs_mpi = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def launch(n, out, *args, timeout=TIMEOUT):
    """Run tests/mpi_cases.py on ``n`` ranks; returns (CompletedProcess, seconds)."""
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "ignore"
    t0 = time.perf_counter()
    proc = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, str(HERE / "mpi_cases.py"),
                           str(out), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(HERE.parent))
    return proc, time.perf_counter() - t0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Every case in one process, without a communicator."""
    out = tmp_path_factory.mktemp("reference")
    with np.errstate(over="ignore", invalid="ignore"):
        paths = {"save_and_load": str(out / "m.npz"), "resume_mid_epoch": str(out)}
        return {name: case(None, paths[name]) if name in paths else case(None)
                for name, case in mpi_cases.CASES.items()}


@pytest.fixture(scope="module", params=[2, 3], ids=["2-ranks", "3-ranks"])
def ranks(request, tmp_path_factory):
    """What every rank of an ``mpiexec -n N`` run of all cases ended with, by rank."""
    if _skip_reason():
        pytest.skip(_skip_reason())
    n = request.param
    out = tmp_path_factory.mktemp(f"mpi{n}")
    proc, _ = launch(n, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [pickle.loads((out / f"rank{r}.pkl").read_bytes()) for r in range(n)]
    assert [r["size"] for r in results] == [n] * n
    return results


def _rel(a_list, b_list):
    return max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
               for a, b in zip(a_list, b_list, strict=True))


TRAINING = ["fast64", "generic64", "fast32", "generic32", "fast64_dropout",
            "generic64_dropout", "weighted", "streamed", "streamed_batch_shuffle", "batches",
            "split", "tabular"]
STEPS = {"split": 12}       # 76 training rows: 4 batches x 3 epochs; the others 6 x 3


@needs_mpi
@pytest.mark.parametrize("case", TRAINING)
def test_ranks_match_one_process(ranks, reference, case):
    """Same weights and logs as one process (float64: 1e-10 relative, float32: 1e-5), with a
    last batch of one row (some ranks have none of it), validation sharded; with Dropout,
    sample weights, host data read batch by batch, a list of batches, a validation split."""
    tol = 1e-10 if "64" in case else 1e-5
    ref, got = reference[case], ranks[0][case]
    assert _rel(got["weights"], ref["weights"]) < tol
    assert got["iterations"] == ref["iterations"] == STEPS.get(case, 18)
    for key, values in ref["history"].items():
        np.testing.assert_allclose(got["history"][key], values, rtol=tol, atol=tol)
    assert got["rng"] == ref["rng"]          # the generator drew what one process draws


@needs_mpi
@pytest.mark.parametrize("case", [*TRAINING, "early_stopping", "unseeded", "diverges"])
def test_replicas_bitwise_identical(ranks, case):
    first = ranks[0][case]
    for other in ranks[1:]:
        for a, b in zip(first["weights"], other[case]["weights"], strict=True):
            assert np.array_equal(a, b)
        assert other[case].get("history") == first.get("history")


@needs_mpi
def test_unseeded_model_starts_from_rank_0_weights(ranks):
    """seed=None draws other weights on every rank; fit broadcasts rank 0's (checked above:
    identical after training), and the run is not one of the one-process runs."""
    assert all(np.all(np.isfinite(w)) for w in ranks[0]["unseeded"]["weights"])


@needs_mpi
def test_early_stopping_stops_every_rank_at_the_same_epoch(ranks, reference):
    ref = reference["early_stopping"]
    assert ref["stopped_epoch"] is not None and ref["epochs"] < 40
    for r in ranks:
        assert r["early_stopping"]["stopped_epoch"] == ref["stopped_epoch"]
        assert r["early_stopping"]["epochs"] == ref["epochs"]


@needs_mpi
def test_divergence_is_raised_by_every_rank_at_the_same_step(ranks, reference):
    ref = reference["diverges"]
    assert ref["error"] is not None and "batch 3" in ref["error"]
    for r in ranks:
        assert r["diverges"]["error"] == ref["error"]
        assert r["diverges"]["finite"]
        assert _rel(r["diverges"]["weights"], ref["weights"]) < 1e-10


@needs_mpi
def test_mid_epoch_resume_restores_every_ranks_metric_sums(ranks, reference):
    """Resumed from a backup written inside an epoch, N ranks end with the weights of the
    uninterrupted run, bitwise, and log its loss and training accuracy: the backup holds the
    sums of all ranks' rows (rank 0 continues from them, the others from zero)."""
    ref = reference["resume_mid_epoch"]
    assert ref["restored"] and ref["history_resumed"] == ref["history_full"]
    for rank in ranks:
        got = rank["resume_mid_epoch"]
        assert got["restored"]
        for a, b in zip(got["resumed"], got["full"], strict=True):
            np.testing.assert_array_equal(a, b)
        assert got["history_resumed"] == got["history_full"]
        assert got["history_full"]["accuracy"] == pytest.approx(
            ref["history_full"]["accuracy"], abs=1e-12)


@needs_mpi
def test_save_writes_once_and_every_rank_loads(ranks):
    # two checkpoints and the final save, all on rank 0
    assert [r["save_and_load"]["writes"] for r in ranks] == [3] + [0] * (len(ranks) - 1)
    assert all(r["save_and_load"]["same"] for r in ranks)
    if importlib.util.find_spec("onnx") is not None:    # export: rank 0 writes, all get the path
        assert [r["save_and_load"]["exports"] for r in ranks] == [1] + [0] * (len(ranks) - 1)
        paths = {r["save_and_load"]["exported"] for r in ranks}
        assert len(paths) == 1 and os.path.exists(paths.pop())


@needs_mpi
def test_init_gives_each_rank_its_share_of_the_cores(ranks):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert [r["threads"] for r in ranks] == [max(1, cores // len(ranks))] * len(ranks)


@needs_mpi
@pytest.mark.parametrize("where, message", [
    ("input", "X contains 1 NaN"), ("callback", "callback failed on rank 1"),
    ("rows", "every rank must train with the same training rows; got rank 0: 101, rank 1: 100"),
    ("script", "script failed on rank 1"),
    ("exit", "rank 1 of 2 exited before fit")])
def test_failure_on_one_rank_aborts_every_rank(tmp_path, where, message):
    """Rank 1 fails (bad input before training, or a callback in epoch 2), exits before fit
    (sys.exit()), or the ranks pass data of different lengths, where a rank would otherwise
    wait in a collective forever: the whole job ends quickly with a non-zero status and the
    reason."""
    proc, seconds = launch(2, tmp_path, f"--fail={where}", timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "aborting all ranks" in proc.stderr or where in ("script", "exit")
    assert "training ended" not in proc.stdout
    assert seconds < 30


def _data_home() -> Path:
    env = os.environ.get("XPNN_DATA")
    return Path(env) if env else HERE.parents[1] / "shared" / "data"


@needs_mpi
def test_distributed_mnist_example_matches_one_process(tmp_path):
    """examples/distributed_mnist.py on 2 ranks reaches what it reaches in one process (a
    2,000-image subset, 2 epochs)."""
    data = _data_home()
    if not (data / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found in {data} (set XPNN_DATA)")
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARIABLES}
    env["PYTHONPATH"] = str(HERE.parent)
    script = [sys.executable, str(HERE.parent / "examples" / "distributed_mnist.py"),
              "--data-home", str(data), "--epochs", "2", "--limit", "2000", "--batch-size", "128"]
    results = []
    for prefix, out in (([], tmp_path / "one"), ([_mpiexec(), "-n", "2"], tmp_path / "two")):
        proc = subprocess.run([*prefix, *script, "--out", str(out)], env=env, text=True,
                              capture_output=True, timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("test accuracy") == 1          # printed by rank 0 only
        results.append(json.loads((out / "metrics.json").read_text()))
        assert (out / "model.npz").is_file()
    one, two = results
    assert two["ranks"] == 2 and one["ranks"] == 1
    assert abs(one["test_accuracy"] - two["test_accuracy"]) <= 2 / 400
    assert one["test_accuracy"] > 0.8
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-3)


# ---------------------------------------------------------------------- in-process logic
def test_init_without_launcher_is_one_process_without_mpi():
    code = ("import sys, xpnn; c = xpnn.distributed.init(); print(c.size, c.rank, c.is_root, "
            "'mpi4py' in sys.modules, c is xpnn.distributed.init())")
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARIABLES}
    env["PYTHONPATH"] = str(HERE.parent)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["1", "0", "True", "False", "True"]


def test_size_one_communicator_trains_like_no_communicator():
    one = distributed.Communicator()
    a, b = mpi_cases._train(one, "float64", True), mpi_cases._train(None, "float64", True)
    for x, y in zip(a["weights"], b["weights"], strict=True):
        assert np.array_equal(x, y)


def test_fit_rejects_a_foreign_comm():
    model = mpi_cases.classifier("float64")
    X, y = mpi_cases.data()
    with pytest.raises(TypeError, match="xpnn.distributed.Communicator"):
        model.fit(X, y, comm=types.SimpleNamespace(size=2))


@pytest.mark.parametrize("environ, expected", [
    ({}, False), ({"PMI_SIZE": "2", "PMI_RANK": "0"}, True), ({"OMPI_COMM_WORLD_SIZE": "4"}, True),
    ({"PMIX_RANK": "1"}, True), ({"HOME": "/root"}, False)])
def test_under_launcher(environ, expected):
    assert distributed.under_launcher(environ) is expected


@pytest.mark.parametrize("affinities, expected", [
    ([{0, 1}, {0, 1}], 1),                       # two ranks sharing two cores
    ([{0, 1}] * 3, 1),                           # oversubscribed: at least one
    ([set(range(8))] * 2, 4),
    ([{0, 1, 2, 3}, {4, 5, 6, 7}], 4),           # bound by the launcher: keep their own
    ([{0}, {1}], 1),
    ([set(range(16))], 16)])
def test_cores_per_rank(affinities, expected):
    assert distributed.cores_per_rank(affinities) == expected


def test_shard_covers_every_row_once():
    for n in (0, 1, 2, 5, 101):
        for size in (1, 2, 3, 7):
            parts = [distributed.Communicator(_FakeMPI(r, size)).shard(n) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
            assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1


class _FakeMPI:
    """The few calls of an mpi4py communicator the tests need; rank 0's broadcast value is
    ``root_value``."""

    def __init__(self, rank, size, root_value=None):
        self.rank, self.size, self.root_value = rank, size, root_value

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def bcast(self, obj, root=0):
        return obj if self.rank == root else self.root_value


def _fake_cupy():
    calls = []

    class Device:
        def __init__(self, i):
            self.i = i

        def use(self):
            calls.append(("device", self.i))

    class NcclCommunicator:
        def __init__(self, size, uid, rank):
            calls.append(("comm", size, uid, rank))

        def allReduce(self, send, recv, count, dtype, op, stream):
            calls.append(("allReduce", send, recv, count, dtype, op, stream))

    nccl = types.SimpleNamespace(
        get_unique_id=lambda: calls.append(("uid",)) or b"uid-of-rank-0",
        NcclCommunicator=NcclCommunicator, NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_SUM=0)
    cuda = types.SimpleNamespace(
        nccl=nccl, Device=Device, runtime=types.SimpleNamespace(getDeviceCount=lambda: 2),
        get_current_stream=lambda: types.SimpleNamespace(ptr=1234))
    return types.SimpleNamespace(cuda=cuda), calls


def test_each_rank_uses_the_gpu_of_its_local_rank():
    fake, calls = _fake_cupy()
    for local_rank, device in ((0, 0), (1, 1), (3, 1)):      # 2 GPUs on the machine
        comm = distributed.Communicator(_FakeMPI(local_rank, 4), local_rank=local_rank)
        assert distributed.use_local_gpu(comm, cupy=fake) == device
        assert calls[-1] == ("device", device)
    fake.cuda.runtime.getDeviceCount = lambda: 0
    assert distributed.use_local_gpu(comm, cupy=fake) is None


def test_cupy_backend_reduces_through_nccl(monkeypatch):
    """On cupy: rank 0 draws the NCCL id, MPI broadcasts it, each rank joins, and the
    allreduce is in place on the current stream, in the buffer's dtype."""
    fake, calls = _fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cupy_backend = types.SimpleNamespace(family="cupy")
    comm = distributed.Communicator(_FakeMPI(3, 4, root_value=b"uid-of-rank-0"), local_rank=3,
                                    local_size=4)
    reduce = comm.reducer(cupy_backend)
    assert isinstance(reduce, distributed.NcclReducer)
    assert ("uid",) not in calls                        # only rank 0 draws the id
    assert ("comm", 4, b"uid-of-rank-0", 3) in calls
    assert comm.reducer(cupy_backend) is reduce         # one NCCL communicator per job
    buf = types.SimpleNamespace(data=types.SimpleNamespace(ptr=99), size=10, dtype="float64")
    assert reduce(buf) is buf
    assert calls[-1] == ("allReduce", 99, 99, 10, 8, 0, 1234)

    root = distributed.Communicator(_FakeMPI(0, 4), local_rank=0, local_size=4)
    root.reducer(cupy_backend)
    assert ("uid",) in calls


def test_host_backends_and_one_rank_reduce_through_mpi(monkeypatch):
    fake, calls = _fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    two = distributed.Communicator(_FakeMPI(0, 2))
    assert isinstance(two.reducer(xpnn.get_backend("numpy")), distributed.HostReducer)
    one = distributed.Communicator()
    assert isinstance(one.reducer(types.SimpleNamespace(family="cupy")),
                      distributed.HostReducer)
    assert calls == []                                   # NCCL never touched


def test_sync_gradients_arithmetic_on_every_backend(backend):
    """The step's combination on one rank, on each backend (on a GPU through a one-rank NCCL
    communicator): gradients and loss scaled by n_r / m, or divided by the summed sample
    weights; a list of gradients is updated in place, a flat buffer uses its two last slots."""
    be = xpnn.get_backend(backend)
    xp = be.xp
    model = mpi_cases.classifier("float64")
    model.to(backend)
    comm = distributed.Communicator()
    dp = distributed.DataParallel(comm, model)
    if be.family == "cupy":
        dp.reduce = distributed.NcclReducer(comm)
    assert dp.batch(10, 20) == (10, 20)                  # one rank: all rows of the batch
    host = [np.arange(6.0).reshape(2, 3), np.array([1.0, -2.0])]

    def grads():
        return [be.asarray(np.array(g), dtype="float64") for g in host]

    loss = be.asarray(np.array(0.75), dtype="float64")
    for n_rows, factor in ((10, 1.0), (4, 0.4), (xp.sum(be.asarray(np.ones(3), "float64")), 1.0)):
        gs = grads()
        out = dp.sync_gradients(model, gs, loss, n_rows)
        assert float(out) == pytest.approx(0.75 * factor)
        for g, h in zip(gs, host, strict=True):
            np.testing.assert_allclose(xpnn.to_numpy(g), h * factor)
    flat = be.asarray(np.array([1.0, 2.0, 3.0, 0.0, 0.0]), dtype="float64")
    out = dp.sync_gradients(model, flat, loss, 5)
    assert float(out) == pytest.approx(0.375)
    np.testing.assert_allclose(xpnn.to_numpy(flat)[:3], [0.5, 1.0, 1.5])
    assert dp.step_weight == 10

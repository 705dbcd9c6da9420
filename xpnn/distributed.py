"""Synchronous data-parallel training over MPI (mpi4py) on CPUs and NCCL on GPUs.

>>> import numpy as np
>>> import xpnn
>>> X = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
>>> y = X.sum(axis=1)
>>> model = xpnn.Sequential(xpnn.Dense(3, 8), xpnn.ReLU(), xpnn.Dense(8, 1), seed=0)
>>> model = model.compile(loss="mse", optimizer="adam")
>>> comm = xpnn.distributed.init()   # MPI's COMM_WORLD; a size-1 communicator without mpiexec
>>> comm.size
1
>>> history = model.fit(X, y, epochs=2, batch_size=16, comm=comm, verbose=0)
>>> path = model.save("model.npz")   # rank 0 writes, the others wait for it

Launch with ``mpiexec -n 4 python train.py`` (``pip install "xpnn[mpi]"`` brings mpi4py and the
MPICH wheel). Every rank runs the same script on the same data. ``fit`` with a communicator of
size N > 1 then trains *one* model:

* ``batch_size`` is the global batch. Every rank walks the same batch schedule (the same
  shuffle, from the same generator state) and computes forward and backward on its contiguous
  slice of each batch: with ``m`` rows in the batch, rank ``r`` takes rows
  ``[⌊m r / N⌋, ⌊m (r+1) / N⌋)``; a rank whose slice is empty takes part with zeros.
* The gradient of the batch mean loss is ``g = Σ_r (n_r / m) g_r``, where ``g_r`` is the mean
  gradient of rank r's ``n_r`` rows. Each rank scales its flat gradient buffer by ``n_r / m``,
  writes ``n_r / m · loss_r`` into a free slot at its end, and a single in-place allreduce
  (SUM) gives every rank ``g`` and the batch loss (with sample weights, the rows' weight sums
  take the place of ``n_r`` and ``m``, summed in one more slot). Every rank then applies the
  same update to the same weights: replicas stay bitwise identical, and a non-finite loss is
  seen, and raised as :class:`~xpnn.errors.TrainingDivergedError`, by every rank at the same
  step.
* Batch sources ask for their rows through the run (:meth:`xpnn.training.TrainingRun.local_rows`,
  their ``shard``): host data streamed
  batch by batch (a large memmap, h5py, zarr) is read only for this rank's rows; each rank
  reads the whole of each batch of an iterable of batches and keeps its rows, so the iterable
  must yield the same batches on every rank.
* Weights, optimizer state and the random generator are broadcast from rank 0 when ``fit``
  starts; Dropout draws its mask for the whole global batch and keeps its rows.
* Validation is sharded like the batches and combined as sums, so every rank logs the same
  numbers and every callback (EarlyStopping...) decides the same thing on every rank.
* Only rank 0 prints and writes files; any other exception on any rank aborts the whole job
  (``MPI_Abort``) instead of leaving the other ranks waiting in an allreduce forever.

On the ``cupy`` backend the gradient allreduce runs through NCCL (``cupy.cuda.nccl``) on the
current CUDA stream, without a host synchronisation; each rank uses the GPU of its local rank.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import importlib.util
import os
import sys
import time
import traceback
import warnings

import numpy as np

#: Environment variables one of which a process launcher (MPICH/Intel MPI's Hydra, Open MPI,
#: PMIx, MVAPICH) sets in every rank. Without any of them there is no job to join, and
#: :func:`init` does not import MPI at all.
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE",
                      "MV2_COMM_WORLD_SIZE")

_COMM = None


class Communicator:
    """The processes (ranks) training one model together.

    Attributes
    ----------
    rank, size : int
        This process's index in the job and the number of processes.
    is_root : bool
        ``rank == 0``: the rank that prints and writes files.
    local_rank, local_size : int
        Index among, and number of, the ranks on this machine (GPU ``local_rank`` on ``cupy``).
    threads : int or None
        BLAS/Numba threads :func:`init` gave each rank (None when it left them alone).

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Comm or None
        The MPI communicator (None: this process alone, size 1).
    local_rank, local_size : int
        Index among, and number of, the ranks on this machine.
    threads : int or None
        Threads per rank set by :func:`init`, or None.
    """

    def __init__(self, mpi_comm=None, local_rank=0, local_size=1, threads=None):
        self.mpi = mpi_comm
        self.rank = 0 if mpi_comm is None else mpi_comm.Get_rank()
        self.size = 1 if mpi_comm is None else mpi_comm.Get_size()
        self.local_rank, self.local_size = local_rank, local_size
        self.threads = threads
        self._nccl = None
        self._exits = None        # a duplicate of the communicator for exit notices (init())

    @property
    def is_root(self) -> bool:
        """``rank == 0``: the rank that prints and writes files."""
        return self.rank == 0

    def __repr__(self):
        return (f"Communicator(rank={self.rank}, size={self.size}, "
                f"local_rank={self.local_rank}, threads={self.threads})")

    # ------------------------------------------------------------------ collectives
    def allreduce_(self, buf):
        """Sum ``buf`` over all ranks, in place.

        Parameters
        ----------
        buf : numpy.ndarray
            A contiguous 1-D array, the same size on every rank.

        Returns
        -------
        numpy.ndarray
            ``buf``, now holding ``Σ_r buf_r``.
        """
        if self.size > 1:
            self.mpi.Allreduce(_in_place(self.mpi), buf)
        return buf

    def broadcast_array_(self, a):
        """Overwrite ``a`` with rank 0's, in place.

        Parameters
        ----------
        a : numpy.ndarray
            A contiguous array of the same shape and dtype on every rank.

        Returns
        -------
        numpy.ndarray
            ``a``, now holding rank 0's values.
        """
        if self.size > 1:
            self.mpi.Bcast(a, root=0)
        return a

    def broadcast(self, obj):
        """Rank 0's ``obj``, on every rank.

        Parameters
        ----------
        obj : object
            Any picklable Python object (ignored on the other ranks).

        Returns
        -------
        object
            Rank 0's ``obj``.
        """
        return obj if self.size == 1 else self.mpi.bcast(obj, root=0)

    def allgather(self, obj):
        """Every rank's ``obj``, on every rank.

        Parameters
        ----------
        obj : object
            This rank's picklable object.

        Returns
        -------
        list
            The ``size`` objects, in rank order.
        """
        return [obj] if self.size == 1 else self.mpi.allgather(obj)

    def barrier(self, before="the next collective call"):
        """Wait until every rank is here.

        After :func:`init`, a rank that has exited instead (``sys.exit()``, the end of its
        script) is noticed, which aborts the job rather than waiting for it forever.

        Parameters
        ----------
        before : str
            What the ranks meet before (``"fit"``, ``"save"``), named in the error.

        Raises
        ------
        RuntimeError
            Naming the rank that exited.
        """
        if self.size == 1:
            return
        if self._exits is None:
            self.mpi.Barrier()
            return
        from mpi4py import MPI

        request, status = self.mpi.Ibarrier(), MPI.Status()
        while not request.Test():
            if self._exits.Iprobe(source=MPI.ANY_SOURCE, tag=_EXIT_TAG, status=status):
                raise RuntimeError(f"rank {status.Get_source()} of {self.size} exited before "
                                   f"{before}, which every rank must reach: the other ranks "
                                   "would wait for it forever")
            time.sleep(0.001)

    def abort(self, code: int = 1):
        """End every rank of the job now.

        Parameters
        ----------
        code : int
            Exit status of the processes.

        Raises
        ------
        SystemExit
            In a one-process job.
        """
        if self.size > 1:
            self.mpi.Abort(code)
        raise SystemExit(code)

    # ------------------------------------------------------------------ slicing
    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous part of ``n`` rows.

        Parameters
        ----------
        n : int
            Number of rows to share among the ``N`` ranks.

        Returns
        -------
        tuple of int
            ``(lo, hi) = (⌊n r / N⌋, ⌊n (r+1) / N⌋)`` for rank ``r`` (empty when ``n < N`` for
            some ranks).
        """
        return n * self.rank // self.size, n * (self.rank + 1) // self.size

    # ------------------------------------------------------------------ gradients
    def reducer(self, backend):
        """The in-place SUM allreduce for flat gradient buffers of ``backend``.

        Parameters
        ----------
        backend : Backend
            The model's backend.

        Returns
        -------
        NcclReducer or HostReducer
            NCCL on ``cupy`` with several ranks, MPI on host arrays (NumPy) otherwise.
        """
        if backend.family == "cupy" and self.size > 1:
            if self._nccl is None:
                self._nccl = NcclReducer(self)
            return self._nccl
        return HostReducer(self, backend)


class HostReducer:
    """Allreduce of a flat gradient buffer through MPI on the host.

    NumPy buffers are reduced in place; buffers of other host backends (torch on the CPU,
    array-api-strict) go through a NumPy copy and come back as a new array.

    Parameters
    ----------
    comm : Communicator
        The ranks to reduce over.
    backend : Backend
        The backend of the buffers.
    """

    def __init__(self, comm, backend):
        self.comm, self.backend = comm, backend

    def __call__(self, buf):
        if isinstance(buf, np.ndarray):
            return self.comm.allreduce_(buf)
        from .backend import to_numpy

        host = np.array(to_numpy(buf), copy=True)
        self.comm.allreduce_(host)
        return self.backend.asarray(host, dtype=str(host.dtype))


class NcclReducer:
    """Allreduce of a CuPy buffer through NCCL, in place, queued on the current stream (no host
    synchronisation).

    The NCCL communicator is set up over MPI: rank 0 draws ``nccl.get_unique_id()``, MPI
    broadcasts it, and every rank joins with ``NcclCommunicator(size, uid, rank)`` on its
    current GPU, the one the model's arrays live on (:func:`init` made it the GPU of the
    local rank).

    Parameters
    ----------
    comm : Communicator
        The ranks to reduce over (every rank constructs its reducer at the same time).
    cupy : module, optional
        The ``cupy`` module (default: imported).
    """

    def __init__(self, comm, cupy=None):
        cupy = cupy if cupy is not None else importlib.import_module("cupy")
        nccl = cupy.cuda.nccl
        self.cupy, self.nccl = cupy, nccl
        uid = nccl.get_unique_id() if comm.is_root else None
        uid = comm.broadcast(uid)
        self.nccl_comm = nccl.NcclCommunicator(comm.size, uid, comm.rank)
        self.dtypes = {np.dtype("float32"): nccl.NCCL_FLOAT32,
                       np.dtype("float64"): nccl.NCCL_FLOAT64}

    def __call__(self, buf):
        stream = self.cupy.cuda.get_current_stream()
        ptr = buf.data.ptr
        self.nccl_comm.allReduce(ptr, ptr, buf.size, self.dtypes[np.dtype(buf.dtype)],
                                 self.nccl.NCCL_SUM, stream.ptr)
        return buf


def _in_place(mpi_comm):
    """``MPI.IN_PLACE`` (a stand-in communicator may bring its own)."""
    if hasattr(mpi_comm, "IN_PLACE"):
        return mpi_comm.IN_PLACE
    from mpi4py import MPI

    return MPI.IN_PLACE


# ---------------------------------------------------------------------- start-up
def under_launcher(environ=None) -> bool:
    """Whether this process was started by an MPI launcher (``mpiexec``, ``srun``...).

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default: ``os.environ``); one of
        ``LAUNCHER_VARIABLES`` set marks a launcher.

    Returns
    -------
    bool
    """
    environ = os.environ if environ is None else environ
    return any(environ.get(name) for name in LAUNCHER_VARIABLES)


def init(threads: bool = True) -> Communicator:
    """Join the MPI job this process belongs to and return its :class:`Communicator`.

    Without an MPI launcher, or without mpi4py, this is a size-1 communicator (MPI is not even
    imported) and ``fit(..., comm=comm)`` trains exactly as without it. With N > 1 ranks it also

    * installs a ``sys.excepthook`` that calls ``MPI_Abort`` after printing the traceback, so
      an uncaught exception on one rank ends the whole job within moments; and an exit
      handler that tells the other ranks this one has ended (``sys.exit()``, the end of the
      script): a rank waiting for it when ``fit``, ``save`` or ``export`` starts raises
      RuntimeError, which aborts the job, instead of waiting forever;
    * where CuPy and GPUs are present, makes the GPU of the local rank the current device
      (:func:`use_local_gpu`): create models after ``init()``;
    * with ``threads=True``, sets the BLAS (threadpoolctl) and Numba thread counts to the cores
      per rank (:func:`set_threads`): this machine's cores (the union of the ranks' CPU
      affinities) divided by the number of ranks on it; ranks already bound to disjoint cores
      keep their own count. Two ranks on two cores then do not oversubscribe.

    Calling it again returns the same communicator.

    Parameters
    ----------
    threads : bool
        Share this machine's cores among its ranks (see above).

    Returns
    -------
    Communicator
    """
    global _COMM
    if _COMM is not None:
        return _COMM
    if not under_launcher():
        _COMM = Communicator()
        return _COMM
    try:
        from mpi4py import MPI
    except ImportError:
        size = os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE")
        if size and int(size) > 1:
            warnings.warn(f"xpnn.distributed.init: started by an MPI launcher with {size} "
                          "ranks but mpi4py is not installed (pip install \"xpnn[mpi]\"): "
                          "every rank trains on its own", RuntimeWarning, stacklevel=2)
        _COMM = Communicator()
        return _COMM
    world = MPI.COMM_WORLD
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    comm = Communicator(world, local.Get_rank(), local.Get_size())
    if comm.size > 1:
        install_excepthook(comm)
        comm._exits = world.Dup()
        atexit.register(_announce_exit, comm)
        use_local_gpu(comm)
        if threads:
            comm.threads = cores_per_rank(local.allgather(sorted(_affinity())))
            set_threads(comm.threads)
    local.Free()
    _COMM = comm
    return comm


def use_local_gpu(comm, cupy=None) -> int | None:
    """Make GPU ``local_rank mod (GPUs on this machine)`` CuPy's current device, so the models
    this rank creates afterwards live there. (CuPy is imported only where it is installed.)

    Parameters
    ----------
    comm : Communicator
        Gives the local rank.
    cupy : module, optional
        The ``cupy`` module (default: imported if installed).

    Returns
    -------
    int or None
        The GPU's index, or None without CuPy or GPUs.
    """
    if cupy is None:
        if importlib.util.find_spec("cupy") is None:
            return None
        cupy = importlib.import_module("cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:          # CuPy without a driver or a GPU
        return None
    if count < 1:
        return None
    device = comm.local_rank % count
    cupy.cuda.Device(device).use()
    return device


def _affinity():
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - macOS, Windows
        return set(range(os.cpu_count() or 1))


def cores_per_rank(affinities) -> int:
    """Cores for each of the ranks on one machine, from their CPU affinity sets: the size of a
    rank's own set when the sets are disjoint (the launcher bound them), else the cores of
    their union shared evenly (at least 1).

    Parameters
    ----------
    affinities : sequence of set of int
        Each rank's CPU affinity set (``os.sched_getaffinity``).

    Returns
    -------
    int
    """
    sets = [set(a) for a in affinities]
    union = set().union(*sets)
    if sum(len(s) for s in sets) == len(union):
        return max(1, min(len(s) for s in sets))
    return max(1, len(union) // len(sets))


_THREAD_LIMITS = None
_THREAD_COUNT = None


def thread_count() -> int | None:
    """The thread count :func:`set_threads` (or :func:`init`) chose for this process, or
    None when neither ran: ``xpnn.threads`` leaves such a share as it is.

    Returns
    -------
    int or None
        The ``n`` of the last :func:`set_threads` call.
    """
    return _THREAD_COUNT


def set_threads(n: int) -> None:
    """Use ``n`` threads for BLAS (through threadpoolctl) and Numba in this process, and with
    ``n = 1`` one thread for the fast path's optimizer update too (with more, the fast path
    picks its own count from the CPU affinity: bind the ranks to their cores, e.g.
    ``mpiexec -bind-to core``, for an exact share).

    Parameters
    ----------
    n : int
        Threads, >= 1.
    """
    global _THREAD_LIMITS, _THREAD_COUNT
    _THREAD_COUNT = int(n)
    if n == 1:
        os.environ["XPNN_FASTPATH_THREADS"] = "1"
    os.environ["NUMBA_NUM_THREADS"] = str(n)   # read when Numba is first imported
    if "numba" in sys.modules:
        try:
            sys.modules["numba"].set_num_threads(n)
        except (AttributeError, ValueError):
            pass
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(n)
        return
    _THREAD_LIMITS = threadpool_limits(limits=n)   # kept alive: the limit lasts


#: Message tag of the exit notices (on the communicator's duplicate, apart from all else).
_EXIT_TAG = 7301


def _announce_exit(comm) -> None:
    """At interpreter exit: tell every other rank this one is leaving, then wait until all
    have left (a rank still running may need to learn of it: :meth:`Communicator.barrier`),
    and collect their notices so that none is left pending when MPI finalizes."""
    exits = comm._exits
    others = [r for r in range(comm.size) if r != comm.rank]
    sends = [exits.isend(comm.rank, dest=r, tag=_EXIT_TAG) for r in others]
    everyone = exits.Ibarrier()
    while not everyone.Test():
        time.sleep(0.01)
    for r in others:
        exits.recv(source=r, tag=_EXIT_TAG)
    for request in sends:
        request.wait()


def install_excepthook(comm) -> None:
    """Make an uncaught exception on this rank print its traceback and abort every rank.

    Parameters
    ----------
    comm : Communicator
        The job's communicator.
    """
    previous = sys.excepthook

    def hook(kind, value, tb):
        try:
            previous(kind, value, tb)
            sys.stderr.flush()
            time.sleep(ABORT_GRACE)
        finally:
            comm.abort(1)

    sys.excepthook = hook


# ---------------------------------------------------------------------- fit's side
def active(comm):
    """``comm`` when it has several ranks, else None (a plain one-process ``fit``).

    Parameters
    ----------
    comm : Communicator or None
        What ``fit`` was given.

    Returns
    -------
    Communicator or None

    Raises
    ------
    TypeError
        When ``comm`` is not a communicator.
    """
    if comm is None or comm.size == 1:
        return None
    if not hasattr(comm, "allreduce_"):
        raise TypeError(f"fit: comm must be an xpnn.distributed.Communicator (from "
                        f"xpnn.distributed.init()), got {type(comm).__name__}")
    return comm


class DataParallel:
    """What ``fit`` needs for one data-parallel run: the communicator, the gradient reducer of
    the model's backend and the batch being trained, owned by the training run
    (:class:`xpnn.training.TrainingRun`), which hands every step's gradients to
    :meth:`sync_gradients` and the batch sources' requests for this rank's rows to
    :meth:`batch`.

    Parameters
    ----------
    comm : Communicator
        The ranks, more than one.
    model : Sequential
        The model trained.
    """

    def __init__(self, comm, model):
        self.comm, self.model = comm, model
        self.rank, self.size = comm.rank, comm.size
        self.reduce = comm.reducer(model.backend)
        self.batch_rows = 0       # rows of the global batch being trained
        self.step_weight = 0      # its rows (or sample-weight sum) after the step's allreduce

    @property
    def is_root(self) -> bool:
        """``rank == 0``: the rank that prints and writes files."""
        return self.rank == 0

    # ------------------------------------------------------------------ start of fit
    def check_agreement(self, **facts):
        """Raise ValueError on every rank when the ranks' ``facts`` (the training rows, batch
        size, epochs...) differ: their batch schedules would differ, and a rank with more
        steps would wait for the others forever.

        Parameters
        ----------
        **facts
            Named picklable values that must be equal on every rank.

        Raises
        ------
        ValueError
            Naming the fact and every rank's value.
        """
        self.comm.barrier("fit")        # a rank that exited instead is named, not awaited
        every = self.comm.allgather(facts)
        for key in facts:
            values = [f[key] for f in every]
            if any(v != values[0] for v in values):
                shown = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
                raise ValueError(f"fit(comm=...): every rank must train with the same "
                                 f"{key.replace('_', ' ')}; got {shown}")

    def broadcast_state(self):
        """Give every rank rank 0's weights, optimizer state (moments, step counts) and
        random-generator state."""
        model, comm = self.model, self.comm
        from .backend import to_numpy

        weights = model.get_weights()
        for w in weights:
            comm.broadcast_array_(w)
        model.set_weights(weights)
        opt = model.optimizer
        host = [{k: np.array(to_numpy(v), copy=True) if hasattr(v, "shape") else v
                 for k, v in s.items()} for s in opt.state]
        host, iterations, rng = comm.broadcast((host, opt.iterations,
                                                model.rng.bit_generator.state))
        be = model.backend
        opt.state = [{k: be.asarray(v) if isinstance(v, np.ndarray) else v
                      for k, v in s.items()} for s in host]
        opt.iterations = iterations
        model.rng.bit_generator.state = rng

    # ------------------------------------------------------------------ batches
    def batch(self, lo, hi):
        """This rank's rows of the global batch of rows ``[lo, hi)``: its contiguous slice
        (:meth:`Communicator.shard`). Dropout layers are told to draw the whole batch's mask
        and keep these rows.

        Parameters
        ----------
        lo, hi : int
            The global batch's rows, ``[lo, hi)``.

        Returns
        -------
        tuple of int
            This rank's rows ``(lo + a, lo + b)``, ``(a, b)`` its :meth:`Communicator.shard`
            of ``hi - lo``.
        """
        m = hi - lo
        a, b = self.comm.shard(m)
        self.batch_rows = m
        for layer in self.model.layers:
            if hasattr(layer, "batch_slice"):
                layer.batch_slice = (m, a, b)
        return lo + a, lo + b

    def end(self):
        """Tell the Dropout layers that the run is over (they draw whole masks again)."""
        for layer in self.model.layers:
            if hasattr(layer, "batch_slice"):
                layer.batch_slice = None

    def sync_gradients(self, model, grads, loss, n_rows):
        """Combine the gradients of every rank, weighted by rows, and return the batch loss.

        ``grads`` is a list of gradient arrays (updated in place) or a flat buffer whose last
        two elements are free slots. Rank r's weight ``s_r`` is ``n_r / m`` (``n_r`` of the
        global batch's ``m`` rows) or, when the rows carry sample weights, ``n_rows`` is their
        sum ``W_r``; the buffer ``[s_r g_r, s_r loss_r, s_r]`` is summed over the ranks by
        one allreduce, and with sample weights divided by the summed ``W`` afterwards. Every
        rank gets ``g = Σ_r s_r g_r`` and the batch loss; an empty slice contributes zeros.

        Parameters
        ----------
        model : Sequential
            The model (its backend).
        grads : list of array or array
            The gradients of this rank's rows, or a flat buffer with two free slots at the end.
        loss : float or array
            This rank's mean loss over its rows.
        n_rows : int or array
            This rank's rows ``n_r`` (int), or their sample-weight sum ``W_r`` (0-d array).

        Returns
        -------
        array
            The batch loss, 0-d, the same on every rank.
        """
        be = model.backend
        xp = be.xp
        weighted = not isinstance(n_rows, (int, np.integer))
        scale = n_rows if weighted else n_rows / self.batch_rows
        if isinstance(grads, (list, tuple)):
            parts = [xp.reshape(g, (-1,)) for g in grads]
            dtype = parts[0].dtype
            slots = xp.stack([xp.astype(xp.asarray(loss, device=be.device), dtype),
                              xp.ones((), dtype=dtype, device=be.device)])
            buf = self.reduce(xp.concat([*parts, slots]) * scale)
        else:
            buf = grads
            buf[-2] = loss
            buf[-1] = 1.0
            buf *= scale
            buf = self.reduce(buf)
        if weighted:                          # Σ_r W_r g_r / W, Σ_r W_r loss_r / W
            total = xp.asarray(buf[-1], copy=True)
            buf = buf / total if isinstance(grads, (list, tuple)) else _divide_(buf, total)
            self.step_weight = total
        else:
            self.step_weight = self.batch_rows
        if isinstance(grads, (list, tuple)):
            offset = 0
            for g, part in zip(grads, parts, strict=True):
                n = part.shape[0]
                g[...] = xp.reshape(buf[offset:offset + n], g.shape)
                offset += n
        return xp.asarray(buf[-2], copy=True)

    # ------------------------------------------------------------------ epoch sums
    def reduce_metrics(self, metrics):
        """Replace every metric's running sums by their sum over the ranks (in rank order,
        so every rank gets the same numbers).

        Parameters
        ----------
        metrics : list of Metric
            The running metrics of this rank, updated in place.
        """
        from .backend import to_numpy

        mine = [(None if m.totals is None else [np.asarray(to_numpy(a)) for a in m.totals],
                 m.count) for m in metrics]
        every = self.comm.allgather(mine)
        for i, m in enumerate(metrics):
            m.totals, m.count = _sum_in_rank_order([rank_metrics[i] for rank_metrics in every])

    def sum_metric_states(self, states):
        """Metric states (``Metric.get_state()``, one per metric) summed over the ranks, in
        rank order: what a checkpoint stores, so that a resume on any number of ranks (rank 0
        continuing from them, the others from zero) ends the epoch with the same sums.

        Parameters
        ----------
        states : list of dict
            This rank's metric states.

        Returns
        -------
        list of dict
            The summed states, the same on every rank.
        """
        every = self.comm.allgather(states)
        out = []
        for i in range(len(states)):
            parts = [rank_states[i] for rank_states in every]
            totals, count = _sum_in_rank_order([(p["totals"], p["count"]) for p in parts])
            dtype = next((p["dtype"] for p in parts if p["totals"] is not None), None)
            out.append({"totals": totals, "dtype": dtype, "count": count})
        return out

    def sum_floats(self, *values):
        """Each of ``values`` summed over the ranks, in rank order.

        Parameters
        ----------
        *values : float
            This rank's numbers.

        Returns
        -------
        tuple of float
            The sums, the same floats on every rank.
        """
        every = self.comm.allgather([float(v) for v in values])
        return tuple(float(sum(r[i] for r in every)) for i in range(len(values)))


def _sum_in_rank_order(parts):
    """``(totals, count)`` of a metric summed over the ranks' ``(totals or None, count)``,
    element by element in rank order (the same floats on every rank)."""
    totals, count = None, 0
    for t, c in parts:
        count += c
        if t is not None:
            totals = list(t) if totals is None else [a + b for a, b in zip(totals, t,
                                                                             strict=True)]
    return totals, count


def _divide_(buf, by):
    buf /= by
    return buf


def or_abort(comm, fn, *args):
    """``fn(*args)``; if it raises, print the traceback and abort every rank (the others may
    be waiting for this rank in a collective).

    Parameters
    ----------
    comm : Communicator
        The job to abort.
    fn : callable
        The function to call.
    *args
        Its arguments.

    Returns
    -------
    object
        What ``fn`` returned.
    """
    try:
        return fn(*args)
    except BaseException:
        _report_and_abort(comm)


#: Seconds between printing a rank's error and aborting the job, so that the launcher forwards
#: the message before it tears the other ranks down.
ABORT_GRACE = 0.5


def _report_and_abort(comm):
    sys.stderr.write(f"xpnn: rank {comm.rank} of {comm.size} failed; aborting all ranks\n"
                     + traceback.format_exc())
    sys.stderr.flush()
    time.sleep(ABORT_GRACE)
    comm.abort(1)


def guarded(method):
    """Decorate a method taking ``comm=`` so that, with several ranks, any exception on this
    rank prints its traceback and aborts the whole job.

    :class:`~xpnn.errors.TrainingDivergedError` passes through: data-parallel training decides
    divergence on reduced values, so every rank raises it at the same step.

    Parameters
    ----------
    method : callable
        A method with a ``comm=`` keyword argument.

    Returns
    -------
    callable
        The wrapped method.
    """
    @functools.wraps(method)
    def wrapper(*args, comm=None, **kwargs):
        if active(comm) is None:
            return method(*args, comm=comm, **kwargs)
        from .errors import TrainingDivergedError

        try:
            return method(*args, comm=comm, **kwargs)
        except TrainingDivergedError:
            raise
        except BaseException:
            _report_and_abort(comm)
            raise   # pragma: no cover - abort does not return

    return wrapper


__all__ = ["Communicator", "DataParallel", "HostReducer", "NcclReducer", "active",
           "cores_per_rank", "guarded", "init", "install_excepthook", "or_abort", "set_threads",
           "thread_count", "under_launcher", "use_local_gpu"]

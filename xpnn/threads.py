"""How many BLAS threads ``fit``, ``predict`` and ``evaluate`` use.

NumPy's BLAS (OpenBLAS, MKL) starts one thread per core and uses all of them for every large
enough matmul. That pays for large matmuls on an idle machine, and costs dearly elsewhere:
the matmuls of a small network are done before a second thread has woken up, and when another
process keeps a core busy, every matmul waits for the BLAS thread that shares that core (a
small network beside one busy process trained 13-38 times slower on two threads than on one).
So around its loop, xpnn chooses the thread count for the work (:func:`choose`):

* as many threads as the step has work for: one per :data:`FLOPS_PER_THREAD` floating-point
  operations of a step (a training step of a batch of ``B`` rows costs about ``6 B P`` for
  ``P`` parameters: ``2 B P`` forward, ``4 B P`` backward; a forward pass ``2 B P``);
* no more than the cores this process may run on (its CPU affinity) that no other process is
  using now (:func:`busy_cores`: the runnable tasks of other processes, read from
  ``/proc/stat`` three times within a millisecond, scaled to this process's share of the
  machine's CPUs);
* never more than BLAS is set to use already;
* below :data:`LEAVE_BELOW_FLOPS` per step, nothing changed (BLAS keeps such matmuls on one
  thread itself).

and sets it with threadpoolctl for the loop only (``fit``: for each epoch, so that a process
that starts or ends during training is seen at the next epoch), restored afterwards, also when
the loop raises. The fast path's optimizer update splits across no more threads than that
(:func:`budget`). A count someone set wins:

* ``model.n_threads = k`` (or the environment variable ``XPNN_NUM_THREADS=k``): exactly ``k``
  threads for that model's loops (``None``, the default: choose);
* ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` or ``BLIS_NUM_THREADS`` in
  the environment, an enclosing ``threadpoolctl.threadpool_limits`` that lowered BLAS's count,
  or :func:`xpnn.distributed.init`'s per-rank share: xpnn leaves the threads alone.

GPU backends are left alone.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time

__all__ = ["FLOPS_PER_THREAD", "budget", "busy_cores", "choose", "decide", "step_flops",
           "usable_cores", "using_threads"]

#: Floating-point operations of one step that each BLAS thread needs to pay for itself.
#: Measured on a 2-vCPU Xeon (NumPy's OpenBLAS 0.3.31, SkylakeX kernels), all matmuls of a
#: step, best of 300, per step as :func:`step_flops` counts it: two threads 1.00x as fast as
#: one at 5 MFLOP (OpenBLAS keeps such matmuls on one thread itself), 1.15x at 10, 1.28x at 16,
#: 1.44x at 42, 1.5-1.9x from 84 (the S network) on.
FLOPS_PER_THREAD = 8e6
#: Below this many floating-point operations per step xpnn leaves the threads as they are: every
#: matmul of such a step is below OpenBLAS's own limit for threading (a product of
#: m·n·k ≤ 262,144, about 0.5 MFLOP), so it runs on one thread anyway, and a ``predict`` on a
#: few rows in a loop pays nothing for the choice.
LEAVE_BELOW_FLOPS = 5e5
#: Environment variables by which a user sets BLAS's thread count.
BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
#: The environment variable that sets xpnn's own count (as ``model.n_threads``).
XPNN_ENV = "XPNN_NUM_THREADS"

_BUDGET = None          # the count chosen by the innermost using_threads(), None outside
_CONTROLLER = None      # (modules, threadpoolctl.ThreadpoolController, its BLAS libraries)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all of the machine's elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _own_running_threads() -> int:
    running = 0
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/stat", "rb") as f:
                stat = f.read()
            running += stat[stat.rindex(b")") + 2:][:1] == b"R"
    except OSError:
        return 1
    return max(running, 1)


def _others_running() -> int | None:
    """Runnable tasks of other processes now: ``procs_running`` of ``/proc/stat`` less this
    process's own running threads (None without ``/proc``)."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"procs_running"):
                    return max(0, int(line.split()[1]) - _own_running_threads())
    except (OSError, ValueError, IndexError):
        pass
    return None


_BUSY = (-1e9, 0.0)     # (time.monotonic() of the last estimate, the estimate)
#: Seconds an estimate of :func:`busy_cores` is reused (a ``predict`` in a loop reads it once).
BUSY_TTL = 1.0


def busy_cores() -> float:
    """How many of this process's cores other processes keep busy now.

    The median of three readings, half a millisecond apart, of the other processes' runnable
    tasks (:func:`_others_running`; a burst of a moment does not count, a process that keeps
    running does), scaled by this process's share of the machine's CPUs; elsewhere the
    one-minute load average less one. Reused for :data:`BUSY_TTL` seconds.
    """
    global _BUSY
    now = time.monotonic()
    if now - _BUSY[0] < BUSY_TTL:
        return _BUSY[1]
    share = usable_cores() / (os.cpu_count() or 1)
    readings = []
    for i in range(3):
        if i:
            time.sleep(0.0005)
        readings.append(_others_running())
    if None not in readings:
        busy = sorted(readings)[1] * share
    else:
        try:
            busy = max(0.0, os.getloadavg()[0] - 1.0) * share
        except (AttributeError, OSError):  # pragma: no cover - no load average (Windows)
            busy = 0.0
    _BUSY = (now, busy)
    return busy


def choose(flops: float, cores: int, busy: float = 0.0) -> int:
    """Threads for steps of ``flops`` floating-point operations on ``cores`` cores of which
    ``busy`` are in use by other processes::

        n = min(⌊flops / FLOPS_PER_THREAD⌋, cores - round(busy)),   at least 1
    """
    free = cores - int(math.floor(busy + 0.5))
    return max(1, min(int(flops // FLOPS_PER_THREAD), free))


def step_flops(model, rows: int, training: bool = True) -> float:
    """Floating-point operations of one step on ``rows`` rows: ``6 rows P`` for training,
    ``2 rows P`` for a forward pass (``P`` the model's parameter count)."""
    return (6.0 if training else 2.0) * rows * model.count_params()


def _controllers():
    """A threadpoolctl controller of the libraries loaded now and the controllers of its
    BLAS libraries (made again when modules were imported since: a new module may have loaded
    another BLAS; making one takes about a millisecond)."""
    global _CONTROLLER
    if _CONTROLLER is None or _CONTROLLER[0] != len(sys.modules):
        from threadpoolctl import ThreadpoolController
        controller = ThreadpoolController()
        _CONTROLLER = (len(sys.modules), controller,
                       tuple(controller.select(user_api="blas").lib_controllers))
    return _CONTROLLER


def _controller():
    """The threadpoolctl controller of :func:`_controllers`."""
    return _controllers()[1]


def _blas_threads() -> int | None:
    """BLAS's current thread count (the largest over the BLAS libraries loaded, each asked
    now), or None."""
    counts = [lib.num_threads for lib in _controllers()[2]]
    return max(counts) if counts else None


def _explicit(model) -> int | None:
    n = getattr(model, "n_threads", None)
    if n is None and os.environ.get(XPNN_ENV, "").strip():
        n = os.environ[XPNN_ENV].strip()
    if n is None:
        return None
    try:
        k = int(n)
    except (TypeError, ValueError):
        raise ValueError(f"n_threads must be a positive integer or None, got {n!r} "
                         f"(model.n_threads or {XPNN_ENV})") from None
    if k < 1 or isinstance(n, bool) or str(k) != str(n).strip():
        raise ValueError(f"n_threads must be a positive integer or None, got {n!r} "
                         f"(model.n_threads or {XPNN_ENV})")
    return k


def _set_elsewhere() -> bool:
    """Whether someone other than xpnn chose the BLAS threads: an environment variable,
    :func:`xpnn.distributed.init`, or an xpnn loop already running."""
    if _BUDGET is not None or any(os.environ.get(v, "").strip() for v in BLAS_ENV):
        return True
    from . import distributed
    return distributed.thread_count() is not None


def decide(model, rows: int, training: bool = True) -> int | None:
    """The BLAS thread count for ``model``'s loop over batches of ``rows`` rows, or None to
    leave the threads as they are (a GPU backend, a count set elsewhere, no BLAS found)."""
    if model.backend.is_gpu:
        return None
    explicit = _explicit(model)
    if explicit is not None:
        return explicit
    # The cheapest questions first: inside an outer threadpool_limits (a tabular estimator's
    # fit), the answer is known after one look at BLAS's count.
    try:
        current = _blas_threads()
    except ImportError:       # threadpoolctl missing: leave BLAS as it is
        return None
    cores = usable_cores()
    if current is None or current < cores:  # lowered by an outer threadpool_limits
        return None
    if _set_elsewhere():
        return None
    try:
        flops = step_flops(model, max(1, rows), training)
    except Exception:         # not built yet: the method itself reports what is missing
        return None
    if flops < LEAVE_BELOW_FLOPS:
        return None
    return min(current, choose(flops, cores, busy_cores()))


def budget() -> int | None:
    """The thread count chosen for the loop now running (None outside one)."""
    return _BUDGET


def limit_blas(n: int):
    """A context manager holding BLAS at ``n`` threads while it is open (threadpoolctl's
    ``limit``, through the controller kept between calls: making one takes a millisecond)."""
    return _controller().limit(limits=n, user_api="blas")


@contextlib.contextmanager
def using_threads(model, rows: int, training: bool = True):
    """Run the block with :func:`decide`'s BLAS thread count, restored afterwards."""
    global _BUDGET
    n = decide(model, rows, training)
    if n is None:
        yield None
        return
    previous = _BUDGET
    with limit_blas(n):
        _BUDGET = n
        try:
            yield n
        finally:
            _BUDGET = previous


def rows_of(X, batch_size) -> int:
    """The rows one forward pass of ``predict``/``evaluate`` handles: ``batch_size``, or all of
    ``X`` when it is None (1024 when the length of ``X`` is unknown)."""
    shape = getattr(X, "shape", None)
    n = shape[0] if shape else None
    if n is None:
        try:
            n = len(X)
        except TypeError:
            n = 1024
    return int(n if batch_size is None else min(batch_size, n))


def inference(method):
    """Decorate ``predict(self, X, batch_size=None, ...)`` to run under :func:`using_threads`."""
    @functools.wraps(method)
    def wrapper(self, X, *args, **kwargs):
        batch_size = kwargs.get("batch_size", args[0] if args else None)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            batch_size = None                 # the method reports a bad value itself
        with using_threads(self, rows_of(X, batch_size), training=False):
            return method(self, X, *args, **kwargs)
    return wrapper

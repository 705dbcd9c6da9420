"""Where training batches come from.

``Sequential.fit`` turns its data into one of three batch sources, each yielding
``(batch index, x, t, w)`` with ``x`` and the prepared targets ``t`` (and the sample weights ``w``
or None) as arrays of the model's backend and dtype:

* :class:`ArrayBatches` — the whole dataset already on the device in the model's dtype
  (NumPy arrays that fit in :data:`RESIDENT_BUDGET` once converted, or arrays of the model's
  backend). Batches are slices of one per-epoch gather, or rows the fast trainer gathers itself.
* :class:`HostBatches` — host data that is *not* converted up front: always a NumPy memmap, an
  ``h5py`` dataset, a ``zarr`` array (data that live in a file, whatever their size) and a SciPy
  sparse matrix; any other host array (``uint8`` images, ``float64`` data for a ``float32``
  model, a pandas frame) whose converted size exceeds the budget. Each batch's
  rows are read (files and chunked stores in sorted order) and converted into buffers reused from
  batch to batch (:class:`RowReader`), checked and moved to the device on their own, so memory
  grows with the batch, not with the dataset. The rows and their order are those
  :class:`ArrayBatches` would use: same seed, same numbers.
* :class:`IterableBatches` — any re-iterable of ``(x, y)`` or ``(x, y, w)`` batches (a list, a
  class with ``__iter__``, a ``torch.utils.data.DataLoader``, whose CPU tensors are taken as host
  data by a model of any backend) or a generator read ``steps_per_epoch`` batches at a time.
  The batches come in the iterable's own order: ``shuffle`` does not apply, and the model's
  random generator is not used for them.

:data:`RESIDENT_BUDGET` (bytes; environment variable ``XPNN_RESIDENT_BUDGET``, or the attribute
``model.resident_budget``) decides between the first two for host arrays held in memory
(:func:`in_file` data is streamed at any size).
"""

from __future__ import annotations

import collections.abc
import itertools
import math
import os

import numpy as np

from . import inputs, staging
from .backend import backend_of, to_numpy
from .hostdata import (
    _is_pandas,
    as_array,
    check_frame,
    check_frame_missing,
    frame_to_numpy,
    host_dtype,
    host_shape,
    in_file,
    is_frame,
    is_sparse,
)

#: Largest converted training set (bytes) that ``fit`` copies to the device up front; larger
#: host data is streamed one batch at a time. Default 2 GiB.
RESIDENT_BUDGET = int(float(os.environ.get("XPNN_RESIDENT_BUDGET", 2 * 1024 ** 3)))


def all_rows(lo, hi):
    """The rows ``[lo, hi)`` of a batch that one process trains: all of them. The ``shard``
    argument of the sources' ``batches`` (default) — in data-parallel training the run's
    :meth:`~xpnn.training.TrainingRun.local_rows`, this rank's slice."""
    return lo, hi


def row_pieces(rows, *arrays):
    """The arrays (None passes through) cut into consecutive pieces of at most ``rows`` rows:
    a list of tuples, one per piece (one, the arrays themselves, when they fit)."""
    n = arrays[0].shape[0]
    if n <= rows:
        return [arrays]
    return [tuple(None if a is None else a[lo:lo + rows] for a in arrays)
            for lo in range(0, n, rows)]


#: Rows checked per block when scanning a whole host array for NaN/inf (bounds the temporary).
CHECK_ROWS = 1 << 16


def batch_permutation(rng, n, batch_size) -> np.ndarray:
    """The row order of ``fit(shuffle="batch")`` (Keras 2's ``batch_shuffle``): the ``n //
    batch_size`` blocks of ``batch_size`` consecutive rows in a random order drawn from ``rng``,
    then the last partial block. Each batch is then one run of consecutive rows, which a file
    or chunked store reads in one go."""
    blocks = n // batch_size
    order = rng.permutation(blocks)
    rows = (order[:, None] * batch_size + np.arange(batch_size)).reshape(-1)
    return np.concatenate([rows, np.arange(blocks * batch_size, n)])


def as_slice(rows):
    """``rows`` as the equivalent ``slice`` when they are one increasing run of consecutive
    rows (as with ``shuffle="batch"``), else unchanged."""
    if isinstance(rows, slice) or rows.shape[0] == 0:
        return rows
    first, last = int(rows[0]), int(rows[-1])
    if last - first + 1 == rows.shape[0] and (rows.shape[0] == 1 or bool(
            np.all(np.diff(rows) == 1))):
        return slice(first, last + 1)
    return rows


def read_rows(X, rows) -> np.ndarray:
    """``X[rows]`` as a dense NumPy array, for host data of any supported kind.

    ``rows`` is a slice or an increasing integer array (h5py needs increasing indices).
    """
    if is_sparse(X):
        return X[rows].toarray()
    if _is_pandas(X):
        return frame_to_numpy(X.iloc[rows])
    if hasattr(X, "get_orthogonal_selection") and not isinstance(rows, slice):   # zarr
        return np.asarray(X.get_orthogonal_selection((rows, slice(None))))
    return np.asarray(X[rows])


def read_batch(X, rows, dtype=None) -> np.ndarray:
    """Rows ``rows`` (any order; a slice for consecutive rows) of host data ``X``, in that order,
    as ``dtype`` (default: ``X``'s). They are read in increasing order and put back in the
    requested one in the same pass as the conversion."""
    if isinstance(rows, slice):
        block = read_rows(X, rows)
        with np.errstate(over="ignore", invalid="ignore"):  # the caller checks the values
            return block if dtype is None else np.asarray(block, dtype=dtype)
    order = np.argsort(rows, kind="stable")
    block = read_rows(X, rows[order])
    out = np.empty(block.shape, block.dtype if dtype is None else dtype)
    with np.errstate(over="ignore", invalid="ignore"):     # the caller checks the values
        out[order] = block
    return out


def data_is_integer(X) -> bool:
    """Whether host data ``X`` holds integers (so it is finite in any float dtype)."""
    dtype = host_dtype(X)
    return dtype is not None and dtype.kind in "biu"


def check_finite_rows(block: np.ndarray, first_row, what: str, rows=None):
    """Raise ``ValueError`` naming the first row of ``block`` (already in the model's dtype)
    that holds NaN or inf. ``rows`` maps block rows to dataset rows (default: consecutive from
    ``first_row``). Returns the largest ``|x|`` of the block (found in the same pass)."""
    if block.dtype.kind != "f":
        return float(np.max(np.abs(block))) if block.size else 0.0
    peak = float(np.max(np.abs(block))) if block.size else 0.0
    if math.isfinite(peak):
        return peak
    bad = ~np.isfinite(block)
    i = int(np.argmax(bad.reshape(block.shape[0], -1).any(axis=1)))
    row = int(rows[i]) if rows is not None else first_row + i
    column = int(np.argmax(bad[i].reshape(-1)))
    raise ValueError(f"{what} row {row} contains NaN or infinite values (the first in column "
                     f"{column}) in the model's dtype "
                     f"{block.dtype} (values beyond its range, ±{np.finfo(block.dtype).max:.3g}, "
                     "become infinite)")


class ArrayBatches:
    """The training set as device arrays ``X``, ``t`` (and ``w``) of the model's backend."""

    replayable = True

    def __init__(self, X, t, w=None):
        self.X, self.t, self.w = X, t, w
        self.n = X.shape[0]
        self._max_abs = None

    def max_abs(self, model, combine=None):
        """Largest ``|x|`` of the data (one reduction on the device, then cached). Every
        process holds all of it, so ``combine`` is not needed."""
        if self._max_abs is None:
            xp = model.backend.xp
            self._max_abs = float(xp.max(xp.abs(self.X)))
        return self._max_abs

    def batches(self, model, perm, batch_size, trainer=None, start=0, stop=None,
                shard=None):
        """Yield ``(b, x, t, w)`` for batches ``start <= b < stop`` of the rows in the order
        ``perm`` (None: as stored); ``shard(lo, hi)`` gives this process's rows of each batch
        (default :func:`all_rows`)."""
        be, xp = model.backend, model.backend.xp
        X, t, w = self.X, self.t, self.w
        gather = None
        if perm is not None:
            if trainer is not None and trainer.gathers_batches:
                gather = trainer.gather     # the trainer copies each batch's rows into a buffer
            else:                           # one gather per epoch, then contiguous slices
                idx = be.asarray(perm, dtype="int64")
                X, t = xp.take(X, idx, axis=0), xp.take(t, idx, axis=0)
                if w is not None:
                    w = xp.take(w, idx, axis=0)
        n_batches = -(-self.n // batch_size)
        for b in range(start, n_batches if stop is None else min(stop, n_batches)):
            lo, hi = b * batch_size, min((b + 1) * batch_size, self.n)
            if shard is not None:
                lo, hi = shard(lo, hi)
            if gather is None:
                yield b, X[lo:hi, ...], t[lo:hi, ...], None if w is None else w[lo:hi]
            else:
                rows = perm[lo:hi]
                xb, tb = gather(X, t, rows)
                yield b, xb, tb, None if w is None else xp.take(
                    w, be.asarray(rows, dtype="int64"), axis=0)


class RowReader:
    """Rows of host data ``X``, converted to ``dtype``, read into buffers reused from batch to
    batch (each batch is valid until the next :meth:`read`).

    A NumPy array is gathered with one ``np.take`` into a buffer of its dtype and cast into the
    output buffer: no allocation per batch. A memmap's rows are taken in increasing order (the
    order the file holds them, so pages that are not cached are read in sequence) and put back in
    the requested order by the cast. Other host data (h5py, zarr, pandas, SciPy sparse) is read
    in increasing row order, which files and chunked stores need, by :func:`read_batch`. The
    values equal ``np.asarray(X[rows], dtype)`` bit for bit.
    """

    def __init__(self, X, dtype):
        self.X, self.dtype = X, np.dtype(dtype)
        self.plain = isinstance(X, np.ndarray)           # ndarray or np.memmap
        self.in_file = isinstance(X, np.memmap)
        self._raw = self._out = None

    @staticmethod
    def _reused(buf, m, row_shape, dtype):
        if buf is None or buf.shape[0] < m or buf.shape[1:] != row_shape or buf.dtype != dtype:
            buf = np.empty((m, *row_shape), dtype)
        return buf[:m]

    def read(self, rows, out=None) -> np.ndarray:
        """``X[rows]`` in ``dtype``; ``rows`` a slice or an integer array of in-range rows in any
        order. Written into ``out`` (``len(rows)`` rows of ``dtype``) when given."""
        X = self.X
        rows = as_slice(rows)                   # a run of consecutive rows: one plain read
        if not self.plain:
            block = read_batch(X, rows, self.dtype)
            if out is None:
                return block
            np.copyto(out, block)
            return out
        if isinstance(rows, slice):
            src = np.asarray(X[rows])                        # a view: nothing read yet
            if out is None and src.dtype == self.dtype:
                return src
            order = None
        else:
            order = np.argsort(rows, kind="stable") if self.in_file else None
            m = rows.shape[0]
            if order is None and X.dtype == self.dtype and out is not None:
                return np.take(X, rows, axis=0, out=out, mode="clip")   # rows are in range
            self._raw = src = self._reused(self._raw, m, X.shape[1:], X.dtype)
            np.take(X, rows if order is None else rows[order], axis=0, out=src, mode="clip")
            if order is None and X.dtype == self.dtype:
                return src
        if out is None:
            self._out = out = self._reused(self._out, src.shape[0], src.shape[1:], self.dtype)
        with np.errstate(over="ignore", invalid="ignore"):     # the caller checks the values
            if order is None:
                np.copyto(out, src, casting="unsafe")
            else:
                out[order] = src                             # back in the requested order
        return out


class HostBatches:
    """Host data ``X`` read, converted and checked one batch at a time (see the module doc).

    ``t`` and ``w`` are the prepared targets and weights, already on the device (they are small
    next to ``X``).
    """

    replayable = True

    def __init__(self, X, t, w=None, what="X", rows=None):
        self.X, self.t, self.w, self.what = X, t, w, what
        self.rows = rows                 # a slice of X's rows this source covers (validation split)
        start = 0 if rows is None else rows.start
        self.offset = start
        self.n = (host_shape(X)[0] if rows is None else rows.stop - rows.start)
        self._max_abs = self._peak = None

    def max_abs(self, model, combine=None):
        """Largest ``|x|`` of the rows this process read in its last complete pass (found
        while checking them; for integer data the range of their dtype), or None before a
        complete pass. In data-parallel training ``combine`` (the sum over the ranks, an upper
        bound) makes it the same on every rank."""
        dtype = host_dtype(self.X)
        if dtype is not None and dtype.kind in "biu":
            info = np.iinfo(dtype) if dtype.kind != "b" else None
            return 1.0 if info is None else float(max(abs(int(info.min)), int(info.max)))
        if self._max_abs is None:
            return None
        return self._max_abs if combine is None else combine(self._max_abs)

    def batches(self, model, perm, batch_size, trainer=None, start=0, stop=None,
                shard=None):
        """Yield ``(b, x, t, w)`` as :meth:`ArrayBatches.batches` does; ``x`` is read into a
        buffer reused from batch to batch (on a GPU: a pinned buffer copied to the device while
        the previous step runs, see :mod:`xpnn.staging`)."""
        be, xp = model.backend, model.backend.xp
        stager = staging.stager_for(be)      # GPU: copy the next batch during this step
        reader = RowReader(self.X, model.dtype)      # its buffers live for this pass only
        integer = data_is_integer(self.X)    # integers are finite in any float dtype: no scan
        row_shape = tuple(host_shape(self.X)[1:])
        n_batches = -(-self.n // batch_size)
        self._peak = 0.0 if start == 0 else None      # largest |x| of a complete pass
        for b in range(start, n_batches if stop is None else min(stop, n_batches)):
            lo, hi = (shard or all_rows)(b * batch_size, min((b + 1) * batch_size, self.n))
            if perm is None:
                rows, named, first = slice(self.offset + lo, self.offset + hi), None, \
                    self.offset + lo
                tb = None if self.t is None else self.t[lo:hi, ...]
                wb = None if self.w is None else self.w[lo:hi]
            else:
                local = perm[lo:hi]
                rows = named = local + self.offset
                first = 0
                idx = be.asarray(local, dtype="int64")
                tb = xp.take(self.t, idx, axis=0)
                wb = None if self.w is None else xp.take(self.w, idx, axis=0)
            staged = stager is not None and hi > lo     # (a rank's slice may be empty)
            dest = stager.host_buffer((hi - lo, *row_shape), np.dtype(model.dtype)) \
                if staged else None
            block = reader.read(rows, dest)
            if not integer:
                peak = check_finite_rows(block, first, self.what, named)
                if self._peak is not None:
                    self._peak = max(self._peak, peak)
            xb = stager.put(block) if staged else be.asarray(block, dtype=model.dtype)
            yield b, xb, tb, wb
            if staged:
                stager.release()
        if self._peak is not None and stop is None:
            self._max_abs = self._peak


def _on_host_if_foreign(a, model):
    """A batch array of another library that lives in host memory (the CPU tensors a
    ``torch.utils.data.DataLoader`` yields to a NumPy or CuPy model) as a NumPy array, so the
    model takes it as host data. Arrays of the model's own backend, host data and GPU arrays
    of another library (which the model refuses, naming both backends) are left as they are."""
    owner = backend_of(a)
    if owner is None or owner.family == model.backend.family or owner.is_gpu:
        return a
    return to_numpy(a)


class IterableBatches:
    """Batches from a re-iterable (one pass per epoch) or a generator (``steps_per_epoch``
    batches per epoch), each prepared and checked by the model like ``fit``'s own arrays."""

    replayable = False

    def max_abs(self, model, combine=None):
        """None: the batches of an iterable may change from pass to pass (each step's finite
        loss covers them)."""
        return None

    def __init__(self, data, steps_per_epoch=None, what="data", targets=True):
        self.data, self.steps, self.what = data, steps_per_epoch, what
        self.targets = targets         # False (predict): items are x, or tuples led by x
        self.n = None
        self._iterator = None

    def peek_shape(self, model):
        """Shape of the first batch's ``x`` (the batch is kept for the first epoch)."""
        if self.steps is None:
            first = next(iter(self.data), None)
        else:
            if self._iterator is None:
                self._iterator = iter(self.data)
            first = next(self._iterator, None)
            if first is not None:
                self._iterator = itertools.chain([first], self._iterator)
        if first is None:
            raise ValueError(f"fit: {self.what} yielded no batches")
        return tuple(np.shape(first[0]) if not hasattr(first[0], "shape") else first[0].shape)

    def _items(self):
        if self.steps is None:
            yield from self.data            # a fresh pass over a re-iterable
            return
        if self._iterator is None:
            self._iterator = iter(self.data)
        for _ in range(self.steps):
            try:
                yield next(self._iterator)
            except StopIteration:
                self._iterator = None
                return

    def batches(self, model, perm, batch_size, trainer=None, start=0, stop=None,
                shard=None):
        """Yield ``(b, x, t, w)`` for the batches ``start <= b < stop`` of this pass. On CuPy a
        host batch's ``x`` is copied to the device from pinned memory on a second stream while
        the previous step runs (:mod:`xpnn.staging`), as for :class:`HostBatches`."""
        stager = staging.stager_for(model.backend)
        for b, item in enumerate(self._items()):
            if stop is not None and b >= stop:
                return
            if b < start:
                continue
            yield (b, *self._prepare(model, b, item, stager, shard or all_rows))
            if stager is not None:      # (a device batch staged nothing: a later release of
                stager.release()        # the previous slot, which only waits longer)

    def _prepare(self, model, b, item, stager, shard):
        """Batch ``b``'s ``(x, t, w)`` as checked arrays of the model (``t``, ``w`` None when
        the items carry no targets)."""
        if not self.targets:
            x = item[0] if isinstance(item, (tuple, list)) and item else item
            return inputs.prepare_X(model, _on_host_if_foreign(x, model),
                                    f"{self.what} batch {b}", stager), None, None
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(f"fit: {self.what} must yield (x, y) or (x, y, sample_weight) "
                             f"batches; batch {b} is a {type(item).__name__}")
        item = [_on_host_if_foreign(v, model) for v in item]
        xb = inputs.prepare_X(model, item[0], f"{self.what} batch {b}: x", stager)
        tb = inputs.prepare_y(model, item[1], xb.shape[0], f"{self.what} batch {b}: y")
        wb = None
        if len(item) == 3 and item[2] is not None:
            wb = inputs.prepare_w(model, item[2], xb.shape[0], f"{self.what} batch {b}: "
                                  "sample_weight")
        lo, hi = shard(0, xb.shape[0])   # data-parallel: this rank's rows
        if hi - lo != xb.shape[0]:
            xb, tb = xb[lo:hi, ...], tb[lo:hi, ...]
            wb = None if wb is None else wb[lo:hi]
        return xb, tb, wb


def is_one_pass(data) -> bool:
    """Whether ``data`` is an iterator (a generator, ``iter(...)``): iterating it again
    continues where it stopped, so a second pass finds it used up. Checked without calling
    ``iter`` (which starts the workers of a DataLoader)."""
    return isinstance(data, collections.abc.Iterator)


def no_batches_message(source, where) -> str:
    """The error for an iterable of batches that yielded none (a generator used up)."""
    return (f"{where}: {source.what} yielded no batches. A generator is used up after one "
            "pass: give a re-iterable (a list, a class with __iter__, a DataLoader), or an "
            "endless generator with steps_per_epoch (validation_steps for validation_data)")


def is_batch_iterable(data) -> bool:
    """Whether ``fit``'s first argument is an iterable of batches rather than an array."""
    if data is None or isinstance(data, (str, bytes, np.ndarray, list, tuple)):
        return isinstance(data, (list, tuple)) and len(data) > 0 and all(
            isinstance(item, (tuple, list)) and len(item) in (2, 3)
            and len(getattr(item[0], "shape", ())) >= 1 for item in data)   # not rows of scalars
    if hasattr(data, "shape") or is_sparse(data) or _is_pandas(data):
        return False
    return hasattr(data, "__iter__") or hasattr(data, "__next__")


__all__ = ["RESIDENT_BUDGET", "ArrayBatches", "HostBatches", "IterableBatches", "RowReader",
           "as_array", "as_slice", "batch_permutation", "check_finite_rows", "check_frame",
           "check_frame_missing", "frame_to_numpy", "host_shape", "in_file", "is_frame",
           "is_batch_iterable", "is_one_pass", "is_sparse", "no_batches_message",
           "read_batch"]

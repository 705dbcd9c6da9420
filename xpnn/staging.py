"""Host-to-device staging of streamed batches: on a GPU the copy of the next batch overlaps the
current training step.

:class:`xpnn.data.HostBatches` reads and converts one batch at a time on the host, and
:class:`xpnn.data.IterableBatches` checks and casts each host batch of an iterable (a
DataLoader, a generator). On the CPU backends the batch is used where it is. On CuPy,
:class:`CupyStager` keeps two slots, each a pinned (page-locked) host buffer and a device
buffer: batch ``b`` is converted into slot ``b % 2``'s pinned buffer and copied to its device
buffer on a second CUDA stream, without blocking the host, while the compute stream still runs
the step of batch ``b - 1``. ``HostBatches`` reads and converts each batch straight into the
pinned buffer (:meth:`CupyStager.host_buffer`)::

    host:     read+convert b   read+convert b+1   ...
    copy:          H→D b             H→D b+1
    compute:  step b-1        step b             step b+1

Two CUDA events order the streams: the compute stream waits for the copy of batch ``b`` before
its step uses it, and the copy into a slot waits until the compute stream has finished with the
batch that slot held before (``b - 2``). The host waits only for its own pinned buffer (the copy
of ``b - 2`` out of it must be done before it is overwritten). Nothing here synchronises the
device with the host per batch.
"""

from __future__ import annotations

import numpy as np


def stager_for(backend):
    """A :class:`CupyStager` for the CuPy backend, else None (batches are used as converted)."""
    if backend.family != "cupy":
        return None
    return CupyStager(backend)


class CupyStager:
    """Double-buffered, asynchronous host→device copies of host batches (see the module doc)."""

    SLOTS = 2

    def __init__(self, backend):
        import cupy  # only reached on the cupy backend

        self.cupy, self.device = cupy, backend.device
        with self.device:
            self.copy_stream = cupy.cuda.Stream(non_blocking=True)
        self.pinned = [None] * self.SLOTS     # page-locked host buffers (numpy views)
        self.on_device = [None] * self.SLOTS  # device buffers the steps read
        self.copied = [None] * self.SLOTS     # event: H→D copy of the slot's batch done
        self.released = [None] * self.SLOTS   # event: compute stream done with the slot
        self.count = 0
        self._handed = None                   # the pinned buffer host_buffer gave out

    def _buffers(self, slot, shape, dtype):
        cp = self.cupy
        pinned = self.pinned[slot]
        if pinned is None or pinned.shape[0] < shape[0] or pinned.shape[1:] != shape[1:] \
                or pinned.dtype != dtype:
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            memory = cp.cuda.alloc_pinned_memory(nbytes)
            pinned = np.frombuffer(memory, dtype, int(np.prod(shape))).reshape(shape)
            self.pinned[slot] = pinned
            with self.device:
                self.on_device[slot] = cp.empty(shape, dtype)
        return self.pinned[slot][:shape[0]], self.on_device[slot][:shape[0]]

    def host_buffer(self, shape, dtype) -> np.ndarray:
        """The pinned host buffer the next :meth:`put` copies from, once its previous copy to
        the device is done: read the batch straight into it and :meth:`put` copies nothing on
        the host."""
        slot = self.count % self.SLOTS
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()        # the pinned buffer's last copy is done
            self.copied[slot] = None
        pinned, _ = self._buffers(slot, tuple(shape), np.dtype(dtype))
        self._handed = pinned
        return pinned

    def put(self, block: np.ndarray):
        """Start copying the host batch ``block`` (already in the model's dtype; ideally the
        array :meth:`host_buffer` handed out) to the device; returns the device array, usable by
        work queued on the current stream from now on."""
        cp = self.cupy
        slot = self.count % self.SLOTS
        if block is not self._handed:
            np.copyto(self.host_buffer(block.shape, block.dtype), block)
        self._handed = None
        self.count += 1
        pinned, dev = self._buffers(slot, block.shape, block.dtype)
        with self.device:
            compute = cp.cuda.get_current_stream()
            if self.released[slot] is not None:
                self.copy_stream.wait_event(self.released[slot])
            dev.set(pinned, stream=self.copy_stream)  # asynchronous from pinned memory
            self.copied[slot] = self.copy_stream.record()
            compute.wait_event(self.copied[slot])
        return dev

    def release(self):
        """Mark the most recent batch as used: the work queued on the compute stream so far is
        all that reads it (call before staging the batch after next into its slot)."""
        if self.count:
            slot = (self.count - 1) % self.SLOTS
            with self.device:
                self.released[slot] = self.cupy.cuda.get_current_stream().record()


__all__ = ["CupyStager", "stager_for"]

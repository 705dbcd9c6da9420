"""One training run: everything that lives from the start of ``fit`` (or ``train_on_batch``) to
its end, and the loop itself.

``Sequential.fit`` checks its arguments, turns the data into batch sources
(:mod:`xpnn.sources`) and hands them to a :class:`TrainingRun`, which owns

* the callbacks, as one :class:`CallbackList` (one dispatch per hook);
* the data-parallel set-up (:class:`xpnn.distributed.DataParallel`), or none;
* the interrupt flag (Ctrl-C takes effect between steps);
* the :class:`~xpnn.position.Position` reached, and the one to resume from;
* the divergence guard: a step whose loss or weights are not finite is undone (restored from a
  snapshot, or replayed up to it) before :class:`~xpnn.errors.TrainingDivergedError` is raised.

When the run ends, by returning or raising, none of it stays on the model.

The parts of xpnn that work inside a run talk to it through a small interface:

=====================================  =====================================================
batch sources (:mod:`xpnn.data`)        :meth:`TrainingRun.local_rows` (their ``shard``)
the step (generic and fast trainers,    :meth:`TrainingRun.sync_gradients`,
:class:`xpnn.flat.FlatObjective`)       :meth:`TrainingRun.idle_loss`
checkpoint callbacks                    :attr:`TrainingRun.callbacks`,
                                        :meth:`TrainingRun.capture_position`,
                                        :meth:`TrainingRun.resume_from`,
                                        :attr:`TrainingRun.writes_files`
=====================================  =====================================================

Each epoch: the host generator draws the permutation; the batches are trained by the step (a
fast trainer from :mod:`xpnn.fastpath`, or :meth:`TrainingRun.generic_step`, both passing the
gradients through :meth:`~TrainingRun.sync_gradients` to the optimizer); the epoch's loss and
metrics are summed on the device and read once at its end.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading

from . import data, distributed, fastpath, state, threads
from .callbacks import Callback
from .errors import diverged
from .guard import all_finite, outputs_bounded, quiet
from .metrics import Accuracy, get_metric
from .position import Position
from .progress import source_steps, step_progress

__all__ = ["CallbackList", "TrainingRun", "evaluate"]


class CallbackList:
    """The callbacks of one run, called as one (after ``keras.callbacks.CallbackList``).

    Each hook calls the same hook of every callback, in order. Iterating gives the callbacks.
    """

    def __init__(self, callbacks=(), model=None, run=None):
        self.callbacks = list(callbacks)
        if model is not None:
            self.set_model(model)
        if run is not None:
            self.set_run(run)

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self):
        return len(self.callbacks)

    def set_model(self, model):
        for cb in self.callbacks:
            cb.set_model(model)

    def set_run(self, run):
        """Tell every callback the run it belongs to (None when the run has ended)."""
        for cb in self.callbacks:
            cb.set_run(run)

    def on_train_begin(self, logs=None):
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs=None):
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        for cb in self.callbacks:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs)

    def batch_hooks(self):
        """``(begin, end)``: the bound ``on_train_batch_begin`` and ``on_train_batch_end`` of
        the callbacks that define them (in order), leaving out :class:`~xpnn.Callback`'s own,
        which do nothing: what the training loop calls for every batch."""
        def hooks(name):
            idle = getattr(Callback, name)
            return [getattr(cb, name) for cb in self.callbacks
                    if getattr(type(cb), name, None) is not idle
                    or name in getattr(cb, "__dict__", ())]
        return hooks("on_train_batch_begin"), hooks("on_train_batch_end")


class TrainingRun:
    """One call of ``fit`` (or ``train_on_batch``) on ``model``.

    Parameters
    ----------
    model : Sequential
        Built and compiled.
    callbacks : sequence of Callback
        All of the run's callbacks, History and progress display included.
    comm : xpnn.distributed.Communicator, optional
        Train data-parallel when it has several ranks; ``facts`` (rows, batch size, epochs...)
        must then agree on every rank.

    Attributes
    ----------
    callbacks : CallbackList
    data_parallel : xpnn.distributed.DataParallel or None
    interrupted : bool
        Set by the first Ctrl-C; the loop raises KeyboardInterrupt after the step in progress.
    steps_per_epoch : int or None
        Batches in an epoch of the current ``fit`` (None when unknown, or outside ``fit``).
    batch_size : int or None
        Rows per training batch of the current ``fit`` (None outside ``fit``).
    trainer : fast trainer or None
        The fast trainer (:func:`xpnn.fastpath.select`) that trained the last batches, or
        None (the generic step); the validation after an epoch evaluates with it.
    """

    def __init__(self, model, callbacks=(), comm=None, **facts):
        self.model = model
        self.callbacks = CallbackList(callbacks, model)
        self.interrupted = False
        self._resume = None          # the Position a checkpoint callback asked to resume from
        self._epoch = None           # (epoch, generator state at its start, running sums)
        self._epoch_done = None      # epochs completed, once one has been in this run
        self.data_parallel = None
        self.steps_per_epoch = None  # batches per epoch, once fit knows them
        self.batch_size = None       # rows per training batch, once fit knows them
        self.trainer = None          # the fast trainer of the last epoch's steps, or None
        comm = distributed.active(comm)
        if comm is not None:
            dp = distributed.DataParallel(comm, model)
            dp.check_agreement(**facts, parameters=model.count_params(), dtype=model.dtype,
                               backend=model.backend.family,
                               optimizer=type(model.optimizer).__name__)
            dp.broadcast_state()
            self.data_parallel = dp
        self.callbacks.set_run(self)        # from here on, close() ends the run

    def close(self):
        """End the run: Dropout layers forget their batch slice, callbacks their run."""
        if self.data_parallel is not None:
            self.data_parallel.end()
        self.callbacks.set_run(None)

    # ------------------------------------------------------------------ batch sources
    def local_rows(self, lo, hi):
        """This process's rows of the batch of rows ``[lo, hi)``: all of them, or in
        data-parallel training this rank's contiguous slice."""
        dp = self.data_parallel
        return (lo, hi) if dp is None else dp.batch(lo, hi)

    # ------------------------------------------------------------------ the step
    def sync_gradients(self, grads, loss, n_rows):
        """The one boundary between backward and the optimizer update, on both the generic
        step (``grads`` the list of per-parameter gradients) and the fast trainers (``grads``
        their flat gradient buffer, with two free slots at its end). ``n_rows`` is the number
        of rows of the step, or the sum of their sample weights (a 0-d array). Returns the
        loss the step reports: with one process ``loss``; data-parallel
        (:meth:`xpnn.distributed.DataParallel.sync_gradients`) the weighted gradients and
        losses of every rank summed in one allreduce."""
        dp = self.data_parallel
        if dp is None:
            return loss
        return dp.sync_gradients(self.model, grads, loss, n_rows)

    def idle_loss(self):
        """A rank's part in a data-parallel step where its slice of the batch is empty: the
        Dropout layers draw their masks anyway (the generators stay in step across ranks);
        returns a zero loss."""
        model = self.model
        features, copies = model.n_features_in, 1
        for layer in model.layers:
            if getattr(layer, "batch_slice", None) is not None:
                layer.draw_mask(layer.batch_slice[0], features, copies)
            features = layer.output_features(features)
            copies *= getattr(layer, "rows_per_input", 1)    # EnsembleView: k rows per row
        be = model.backend
        return be.xp.zeros((), dtype=be.dtype(model.dtype), device=be.device)

    def generic_step(self, xb, tb, wb=None):
        """One step of backpropagation on a batch with the model's own layers, loss and
        optimizer; returns (loss, output) as device arrays (``wb``: per-sample weights)."""
        model = self.model
        xp = model.backend.xp
        if xb.shape[0] == 0:          # data-parallel: no rows of this batch on this rank
            for p in model.params:
                p.grad = xp.zeros_like(p.data)
            loss = self.sync_gradients([p.grad for p in model.params], self.idle_loss(),
                                       0 if wb is None else xp.sum(wb))
            model.optimizer.step(model.params)
            return loss, None
        loss, out = model._backprop(xb, tb, wb)
        loss = self.sync_gradients([p.grad for p in model.params], loss,
                                   xb.shape[0] if wb is None else xp.sum(wb))
        model.optimizer.step(model.params)
        return loss, out

    # ------------------------------------------------------------------ checkpoints
    @property
    def writes_files(self) -> bool:
        """False on the ranks other than 0 of a data-parallel run: only rank 0 writes."""
        return self.data_parallel is None or self.data_parallel.is_root

    def capture_position(self) -> Position:
        """Where the run stands, for an exact resume. In data-parallel training every rank
        calls this at the same step: the metrics' sums are those of all ranks' rows."""
        model = self.model
        if self._epoch is None:
            done = self._epoch_done
            return Position(int(model.epochs_trained if done is None else done))
        epoch, epoch_rng, sums = self._epoch
        metrics = [m.get_state() for m in model.metrics]
        if self.data_parallel is not None:      # each rank holds its rows' sums
            metrics = self.data_parallel.sum_metric_states(metrics)
        return Position(int(epoch), int(sums["batch"]), epoch_rng, model.rng.bit_generator.state,
                        float(sums["loss"]), float(sums["weight"]), tuple(metrics))

    def resume_from(self, position: Position) -> None:
        """Continue at ``position`` (called by a callback's ``on_train_begin``)."""
        self._resume = position

    # ------------------------------------------------------------------ the loop
    def fit(self, source, val, batch_size, shuffle, epochs, initial_epoch):
        """Train epochs ``initial_epoch .. epochs - 1`` (from a resume position when a
        callback gives one), validating on ``val`` after each; always ends the run. Each
        epoch runs BLAS on the threads :func:`xpnn.threads.decide` chooses for batches of
        ``batch_size`` rows then (another process may have started or ended), restored
        afterwards. :attr:`steps_per_epoch` is the number of batches of an epoch (None when
        unknown), for callbacks that act per step."""
        self.steps_per_epoch = source_steps(source, batch_size)
        self.batch_size = batch_size
        try:
            self._fit(source, val, batch_size, shuffle, epochs, initial_epoch)
        finally:
            self.close()

    def _fit(self, source, val, batch_size, shuffle, epochs, initial_epoch):
        model, callbacks = self.model, self.callbacks
        model.stop_training = False
        callbacks.on_train_begin()
        resume, self._resume = self._resume, None
        start = initial_epoch if resume is None else resume.epoch
        if resume is not None and not resume.inside_epoch:
            resume = None
        with _interrupts_between_steps(self):
            for epoch in range(start, epochs):
                with threads.using_threads(model, batch_size):
                    callbacks.on_epoch_begin(epoch)
                    logs = self._train_epoch(source, batch_size, shuffle, epoch, resume)
                    resume = None
                    if val is not None:
                        logs.update({f"val_{k}": v for k, v in evaluate(
                            model, val, batch_size=None, run=self).items()})
                    model.epochs_trained += 1
                    self._epoch, self._epoch_done = None, epoch + 1
                    callbacks.on_epoch_end(epoch, logs)
                if model.stop_training:
                    break
        callbacks.on_train_end()

    def _train_epoch(self, source, batch_size, shuffle, epoch, resume=None):
        """One epoch: the loss and metrics over its batches, as host floats. ``resume``
        continues an epoch that was cut short: the same permutation, from its batch."""
        model = self.model
        rng = model.rng
        if resume is not None:
            rng.bit_generator.state = resume.epoch_rng
        epoch_rng = rng.bit_generator.state
        perm = None
        if shuffle == "batch" and source.n is not None:
            perm = data.batch_permutation(rng, source.n, batch_size)
        elif shuffle and source.n is not None:
            perm = rng.permutation(source.n)
        sums = {"loss": 0.0, "weight": 0.0, "batch": 0}
        for m in model.metrics:
            m.reset()
        if resume is not None:
            rng.bit_generator.state = resume.rng
            sums = {"loss": resume.loss, "weight": resume.weight, "batch": resume.batch}
            # Data-parallel: the saved metric sums cover every rank's rows; rank 0 continues
            # from them and the others from zero, so the epoch-end sum over ranks is the total.
            keep = self.writes_files
            for m, saved in zip(model.metrics, resume.metrics, strict=True):
                if keep:
                    m.set_state(model.backend, saved)
                else:
                    m.reset()
        self._epoch = (epoch, epoch_rng, sums)
        # On the host a check per step is cheap; on a GPU it would sync every step, so check
        # once per epoch and, if the epoch went bad, replay it with per-step checks.
        per_step = not model.backend.is_gpu or not source.replayable
        saved = (state.snapshot(model), sums["batch"]) if source.replayable else None
        self._run_batches(source, batch_size, epoch, perm, sums, self.callbacks, per_step,
                          saved)
        if sums["batch"] == 0:              # nothing trained: an iterable that is used up
            raise ValueError(data.no_batches_message(source, f"fit: in epoch {epoch}"))
        if not per_step:
            value = float(sums["loss"])
            if not (math.isfinite(value) and self._weights_finite(fastpath.select(model))):
                state.restore(model, saved[0])
                sums.update(loss=0.0, weight=0.0, batch=saved[1])
                self._run_batches(source, batch_size, epoch, perm, sums, self._replayed(),
                                  True, saved)
        if saved is not None and not self._outputs_finite(source):
            last = sums["batch"] - 1          # finite weights whose outputs overflow
            self._undo_step(source, batch_size, epoch, perm, saved, None, last)
            raise diverged("non-finite", epoch, last, "the outputs on the training data")
        logs = {"loss": float(sums["loss"]) / float(sums["weight"])}
        if self.data_parallel is not None:
            self.data_parallel.reduce_metrics(model.metrics)
        logs.update({m.name: m.result() for m in model.metrics})
        return logs

    def _run_batches(self, source, batch_size, epoch, perm, sums, callbacks, check, saved,
                     stop=None):
        """Train on the epoch's batches from ``sums["batch"]`` on (up to ``stop``), adding to
        ``sums`` (device scalars) and the metrics. With ``check`` every step is verified and a
        bad step undone (by replaying the epoch from ``saved`` up to it) before
        TrainingDivergedError is raised."""
        model = self.model
        xp = model.backend.xp
        # Backend-specific fast trainer for plain MLPs (same numbers), or the generic step.
        trainer = self.trainer = fastpath.select(model)
        fast = None if trainer is None else trainer.train_step
        dp = self.data_parallel
        begin, end = callbacks.batch_hooks()     # the per-batch hooks that do something
        metrics = model.metrics
        for b, xb, tb, wb in source.batches(model, perm, batch_size, trainer,
                                            start=sums["batch"], stop=stop,
                                            shard=None if dp is None else self.local_rows):
            for hook in begin:
                hook(b)
            before = None if saved is not None or not check else state.snapshot(model)
            with quiet():     # a step that overflows: TrainingDivergedError says it all
                loss, out = (self.generic_step(xb, tb, wb) if fast is None
                             else fast(xb, tb, wb, self))
            if check:
                error = self._step_problem(loss, trainer, epoch, b)
                if error is not None:
                    self._undo_step(source, batch_size, epoch, perm, saved, before, b)
                    raise error
            rows = size = xb.shape[0]
            if wb is not None:
                rows = xp.sum(wb)
            if dp is not None:    # data-parallel: the loss is the global batch's
                rows, size = dp.step_weight, dp.batch_rows
            sums["loss"] = sums["loss"] + loss * rows
            sums["weight"] = sums["weight"] + rows
            sums["batch"] = b + 1
            if out is not None:
                for m in metrics:
                    m.update(xp, out, tb)
            if end:
                logs = {"size": size, "loss": loss}
                for hook in end:
                    hook(b, logs)
            if self.interrupted:
                self.interrupted = False
                raise KeyboardInterrupt

    def _undo_step(self, source, batch_size, epoch, perm, saved, before, bad):
        """Put the model back to its state before batch ``bad`` of this epoch: restore the
        snapshot from just before the step, or replay the epoch from its snapshot up to it."""
        if before is not None:
            state.restore(self.model, before)
            return
        snap, start = saved
        state.restore(self.model, snap)
        if bad > start:
            sums = {"loss": 0.0, "weight": 0.0, "batch": start}
            self._run_batches(source, batch_size, epoch, perm, sums, self._replayed(), False,
                              saved, stop=bad)

    def _replayed(self):
        """The callbacks called again when steps are replayed: those that set a value a step
        trains with (per-step schedules), none that log, count or save."""
        return CallbackList([cb for cb in self.callbacks
                             if getattr(cb, "_sets_step_values", False)])

    def train_on_batch(self, xb, tb, wb=None) -> float:
        """One generic step; on a non-finite loss or weight the model is put back as it was and
        TrainingDivergedError raised. Returns the loss as a float; ends the run."""
        model = self.model
        try:
            before = state.snapshot(model)
            with quiet():
                loss, _ = self.generic_step(xb, tb, wb)
            error = self._step_problem(loss, None, 0, 0)
            if error is None and not self._outputs_finite(data.ArrayBatches(xb, tb)):
                error = diverged("non-finite", 0, 0, "the outputs on the batch")
            if error is not None:
                state.restore(model, before)
                raise error
            return float(loss)
        finally:
            self.close()

    def _outputs_finite(self, source) -> bool:
        """Whether the network's outputs (inference) are finite on every row of ``source``:
        each step's finite loss covers the weights before it, this covers the last ones.
        First a bound from the weights and the data's largest ``|x|``
        (:func:`xpnn.guard.outputs_bounded`, no data read); only when it is inconclusive, a
        forward pass over the data. True for an iterable of batches (nothing to bound)."""
        model, dp = self.model, self.data_parallel
        m = source.max_abs(model, None if dp is None else lambda v: dp.sum_floats(v)[0])
        if m is None or outputs_bounded(model, m):
            return True
        xp, bad = model.backend.xp, 0
        with quiet():
            for _, xb, _, _ in source.batches(model, None, 1024, shard=self.local_rows):
                if xb.shape[0] and not all_finite(xp, [model._forward(xb)]):
                    bad = 1
                    break
        if self.data_parallel is not None:      # data-parallel: each rank checked its rows
            bad = self.data_parallel.sum_floats(bad)[0]
        return not bad

    def _step_problem(self, loss, trainer, epoch, batch):
        """The TrainingDivergedError for a step whose loss or weights are not finite, or None
        (the check every step passes through, generic or fast)."""
        value = float(loss)
        if not math.isfinite(value):
            return diverged(value, epoch, batch, "loss")
        if not self._weights_finite(trainer):
            return diverged("non-finite", epoch, batch, "a weight")
        return None

    def _weights_finite(self, trainer=None) -> bool:
        """Whether every parameter is finite (the fast trainer's own check of its flat buffer,
        the optimizer's report of the step just taken when its update found out in the same
        pass, or one reduction per parameter)."""
        if trainer is not None:
            return trainer.weights_finite()
        model = self.model
        known, model.optimizer.params_finite = model.optimizer.params_finite, None
        if known is not None:          # read once: valid only right after the step
            return known
        return all_finite(model.backend.xp, [p.data for p in model.params])


def evaluate(model, source, batch_size=None, verbose=0, run=None) -> dict:
    """Loss and metrics of ``model`` over a batch source, in inference mode (``run``: the
    training run validating, which shards the batches and combines the sums across ranks).
    BLAS runs on the threads :func:`xpnn.threads.decide` chooses, restored afterwards."""
    if batch_size is None:
        batch_size = source.n if isinstance(source, data.ArrayBatches) else 1024
    with threads.using_threads(model, batch_size or 1, training=False):
        return _evaluate(model, source, batch_size, verbose, run)


def _evaluate(model, source, batch_size, verbose, run):
    xp = model.backend.xp
    progress = step_progress(verbose, source_steps(source, batch_size or 1), "evaluate")
    metrics = [get_metric(m) for m in model.metrics]
    for m, src in zip(metrics, model.metrics, strict=True):
        if isinstance(m, Accuracy):
            m.multilabel = src.multilabel
    loss_fn = model.loss
    loss_sum, total, seen = 0.0, 0.0, 0
    shard = None if run is None else run.local_rows
    # Validating in fit: the fast trainer of the epoch's steps computes the same forward
    # into its buffers, and the loss fused (None: the model's layers and loss object), in
    # pieces of a training batch's rows (the same pieces, and so the same rounding, in a run
    # resumed from a checkpoint).
    trainer = None if run is None else run.trainer
    piece = None if trainer is None else run.batch_size or trainer.capacity
    for _, xb, tb, wb in source.batches(model, None, batch_size or 1, shard=shard):
        seen += 1
        if xb.shape[0] == 0:           # data-parallel: none of this batch on this rank
            continue
        by_trainer = bool(piece) and trainer.evaluates(tb, wb)
        pieces = data.row_pieces(piece, xb, tb, wb) if by_trainer else [(xb, tb, wb)]
        for x, t, w in pieces:
            fast = trainer.evaluate_batch(x, t, w, checked=True) if by_trainer else None
            if fast is not None:
                loss, out = fast
            elif model._fused and model._members == 1:   # an ensemble: loss of the mean
                loss = loss_fn.forward_logits(model._forward(x, logits=True), t, w)
                out = loss_fn.p
            else:
                out = model._forward(x)
                loss = loss_fn.forward(out, t, w)
            rows = x.shape[0] if w is None else xp.sum(w)
            loss_sum = loss_sum + loss * rows
            total = total + rows
            for m in metrics:
                m.update(xp, out, t)
        if progress is not None:
            progress.update()
    if seen == 0:                      # an iterable that is used up
        raise ValueError(data.no_batches_message(source, "evaluate"))
    loss_sum, total = float(loss_sum), float(total)
    dp = None if run is None else run.data_parallel
    if dp is not None:                 # data-parallel: every rank evaluated its shard
        loss_sum, total = dp.sum_floats(loss_sum, total)
        dp.reduce_metrics(metrics)
    result = {"loss": loss_sum / total, **{m.name: m.result() for m in metrics}}
    if progress is not None:
        progress.close(result)
    return result


@contextlib.contextmanager
def _interrupts_between_steps(run):
    """Let Ctrl-C (SIGINT) take effect only between training steps: the handler records it and
    the loop raises KeyboardInterrupt after the step in progress has been applied in full. A
    second Ctrl-C before that interrupts at once. (Main thread only; elsewhere a no-op.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if run.interrupted:
            raise KeyboardInterrupt
        run.interrupted = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except (ValueError, OSError):      # no signals here (e.g. an embedded interpreter)
        yield
        return
    run.interrupted = False
    try:
        yield
        if run.interrupted:
            raise KeyboardInterrupt
    finally:
        run.interrupted = False
        signal.signal(signal.SIGINT, previous)

"""Flat parameter/gradient/moment buffers shared by the fast trainers (NumPy and CuPy).

Every parameter of the model is a view into one flat buffer ``flat_p`` (each starting on a
64-byte boundary; the padding between them stays zero and is harmless to every update rule);
its gradient a view into ``flat_g``; and the optimizer's per-parameter buffers, those its
``STATE`` declaration (:class:`xpnn.optimizers.StateSpec`) puts in use, views into ``flat_m`` and
``flat_v`` in declaration order (Adam: ``exp_avg``, ``exp_avg_sq``; SGD: ``momentum_buffer``;
RMSprop: ``square_avg``, ``momentum_buffer``). One optimizer update is then a handful of
element-wise passes over four long arrays instead of a Python loop over parameters, and the
linking, checking and recording of the state below are the same for every optimizer.
"""

from __future__ import annotations

import math
import weakref

_ALIGN = 16   # elements: 64 bytes of float32, 128 of float64


class FlatTrainer:
    """The training step and bookkeeping common to the fast trainers.

    Subclasses set ``lib`` (numpy or cupy) and the activations they apply themselves
    (``fused_acts``), and supply the element-wise work between the matmuls: ``_allocate``
    (buffers for a batch size), ``_bias_act(z, W, b, mode)`` (in place),
    ``_act_backward(i, y, δ, db, mode)`` (in place; True when it also computed ``db``),
    ``_add_weight_decay``, ``_softmax_ce`` and ``update``. Layers they do not compute
    (Dropout, other activations) run as the model's own layer objects (``_post_forward`` /
    ``_post_backward``, which a subclass may do itself: NumPy with Numba applies a Dropout's
    mask in one pass).
    """

    lib = None
    #: Activation names the subclass computes in place; any other runs the generic layers.
    fused_acts: tuple = ()
    #: Whether ``Sequential.fit`` should hand each shuffled batch to :meth:`gather` (rows of
    #: the unshuffled data) instead of gathering the whole dataset once per epoch.
    gathers_batches = False
    #: Whether the parameters were all finite after the last :meth:`update` (the NumPy
    #: trainer finds it in the update's own pass); None when the trainer does not know
    #: without a device synchronisation (CuPy), or after :meth:`attach`.
    last_update_finite: bool | None = None
    #: Whether ``_softmax_ce`` weighs integer-labelled rows by sample weights itself
    #: (otherwise weighted rows take the loss object's fused form).
    weighs_rows = False
    #: What the plan was analysed from (:func:`xpnn.fastpath._plan_key`), set by the selection.
    plan_key = None
    #: Whether ``_softmax_ce`` applies the loss's label smoothing to integer labels itself
    #: (otherwise smoothed targets take the loss object's fused form).
    smooths_labels = False
    #: Set while :meth:`_after_update` writes the per-parameter state (see
    #: :meth:`_interrupted_record`).
    _recording = False

    def __init__(self, model, plan):
        lib = self.lib
        # The model keeps its trainer (``model._fastpath_trainer``); a weak reference back
        # keeps that from being a cycle, so a deleted model is freed at once.
        self._model_ref, self.plan = weakref.ref(model), plan
        self.dtype = lib.dtype(plan.dtype)
        self.params = list(model.params)
        offsets, total = [], 0
        for p in self.params:
            offsets.append(total)
            size = 1
            for d in p.shape:
                size *= d
            total += -(-size // _ALIGN) * _ALIGN
        self.size = max(total, _ALIGN)
        ends = [o + math.prod(p.shape) for o, p in zip(offsets, self.params, strict=True)]
        #: The padding after each parameter, ``(start, stop)`` in the flat buffers.
        self._padding = [(e, b) for e, b in zip(ends, [*offsets[1:], self.size], strict=True)
                         if b > e]
        self.flat_p = lib.zeros(self.size, dtype=self.dtype)
        # The gradients, then two free slots for TrainingRun.sync_gradients (data-parallel
        # training reduces the loss and the rows' weight in the same buffer).
        self.flat_sync = lib.zeros(self.size + 2, dtype=self.dtype)
        self.flat_g = self.flat_sync[:self.size]
        self.flat_m = lib.zeros(self.size, dtype=self.dtype)
        self.flat_v = lib.zeros(self.size, dtype=self.dtype)

        def views(flat):
            out = []
            for p, o in zip(self.params, offsets, strict=True):
                n = 1
                for d in p.shape:
                    n *= d
                out.append(flat[o:o + n].reshape(p.shape))
            return out

        self.p_views, self.g_views = views(self.flat_p), views(self.flat_g)
        self.m_views, self.v_views = views(self.flat_m), views(self.flat_v)
        self._offsets = offsets
        #: ``(lo, hi, lr_factor, wd_factor)``: runs of the flat buffers whose parameters share
        #: their factors (one torch.optim parameter group each), renewed by :meth:`attach`
        self.groups = self._groups()
        self._xs = None                     # the scaled input, with a front Scale
        self.stages = self._stages(plan)
        self.opt = plan.optimizer
        self.kind = type(self.opt).__name__.lower()       # names the optimizer's kernels
        self.spec = type(self.opt).STATE                  # its per-parameter state
        #: ``(name, flat buffer views)`` of each state buffer in use, in declaration order
        names = self.spec.in_use(self.opt)
        self.slots = list(zip(names, (self.m_views, self.v_views)[:len(names)], strict=True))
        self.t = 0                                        # step count (counts_steps)
        self.started = False                              # the state buffers exist
        self.capacity = 0                                 # batch size the buffers hold

    def _stages(self, plan):
        """Per Dense: ``(W, b, dW, db, mode, post)`` with views of the flat buffers (b, db None
        without bias). ``mode`` is ``"identity"`` or the activation of :attr:`fused_acts` that
        directly follows the Dense, computed by the trainer; ``post`` are the generic layer
        objects that follow it (Dropout, activations the trainer does not compute)."""
        stages, k = [], 0 if plan.scale is None else 1   # a front Scale's factors come first
        for dense, acts in zip(plan.dense, plan.acts, strict=True):
            W, dW = self.p_views[k], self.g_views[k]
            k += 1
            b = db = None
            if dense.use_bias:
                b, db = self.p_views[k], self.g_views[k]
                k += 1
            post = [(name, layer) for name, layer in acts if name != "identity"]
            mode = "identity"
            if post and post[0][0] in self.fused_acts:
                mode = post.pop(0)[0]
            stages.append((W, b, dW, db, mode, [layer for _, layer in post]))
        return stages

    @property
    def model(self):
        """The model this trainer was built for (None once it has been freed)."""
        return self._model_ref()

    # ------------------------------------------------------------------ the step
    def train_step(self, xb, tb, wb=None, run=None):
        """Forward, loss, backward and update on one batch; returns ``(loss, output)`` like
        :meth:`xpnn.training.TrainingRun.generic_step` (``wb``: per-sample weights or None).
        The gradients pass through ``run.sync_gradients`` (the training run's boundary; None:
        one process, nothing to combine).

        The equations of :class:`xpnn.layers.Dense` and its activation, layer by layer, with
        every result written into a preallocated buffer (``out=``) and transposed operands
        passed to the matmul as views.
        """
        n = xb.shape[0]
        if n == 0:           # data-parallel: no rows of this batch on this rank
            self.flat_g[...] = 0
            loss = run.sync_gradients(self.flat_sync, run.idle_loss(),
                                      0 if wb is None else self.lib.sum(wb))
            self.update()
            return loss, None
        if n > self.capacity:
            self._allocate(n)
        matmul, stages = self.lib.matmul, self.stages
        for layer in self.plan.pre:                 # rescaling, dropout on the input
            xb = layer.forward(xb, training=True)
        a = xb if self.plan.scale is None else self._scaled(xb)

        # forward: a_i = post(act(a_{i-1} W_i + b_i)), act in place in the buffer z_i (the
        # output layer's bias left to the loss when it adds it in its own pass)
        head_bias = self._head_takes_bias(tb, wb)
        last = len(stages) - 1
        acts, outs = [], []
        for i, (W, b, _, _, mode, post) in enumerate(stages):
            z = self.z[i][:n]
            matmul(a, W, out=z)
            if not (head_bias and i == last):
                self._bias_act(z, W, b, mode)
            acts.append(z)
            z = self._post_forward(i, z, post)
            outs.append(z)
            a = z

        loss, out, delta = self._head(a, tb, n, wb, head_bias)   # and δ = dL/d(output)

        # backward, from the top: δ ← act'(·) ⊙ δ, dW_i = a_{i-1}ᵀ δ (+ λ W_i), db_i = Σ_n δ,
        # then δ ← δ W_iᵀ for the layer below
        for i in range(len(stages) - 1, -1, -1):
            W, b, dW, db, mode, post = stages[i]
            delta = self._post_backward(i, delta, post)
            db_done = self._act_backward(i, acts[i], delta, db, mode) or (
                head_bias and i == last)
            a_prev = outs[i - 1] if i > 0 else xb
            matmul(a_prev.T, delta, out=dW)
            if i == 0 and self.plan.scale is not None:
                self._scale_backward(W, dW)
            wd = self.plan.dense[i].weight_decay
            if wd:                                          # Dense's own L2 penalty on W
                self._add_weight_decay(i, W, dW, wd)
            if db is not None and not db_done:
                self.lib.sum(delta, axis=0, out=db)
            if i > 0:
                da = self.da[i - 1][:n]
                matmul(delta, W.T, out=da)
                delta = da

        if run is not None:                           # the one gradient boundary
            loss = run.sync_gradients(self.flat_sync, loss, n if wb is None else self.lib.sum(wb))
        self.update()
        return loss, out

    def _post_forward(self, i, z, post):
        """The layers ``post`` that follow stage ``i``'s activation (Dropout, activations the
        trainer does not compute) on its output ``z``, as the model's own layer objects."""
        for layer in post:
            z = layer.forward(z, training=True)
        return z

    def _post_backward(self, i, delta, post):
        """The backward of :meth:`_post_forward`: ``δ`` through ``post`` in reverse."""
        for layer in reversed(post):
            delta = layer.backward(delta)
        return delta

    def _scaled(self, xb):
        """``x ⊙ s``, the front :class:`~xpnn.Scale`'s output, in a buffer of the trainer."""
        n = xb.shape[0]
        buf = self._xs
        if buf is None or buf.shape[0] < n or buf.shape[1:] != xb.shape[1:]:
            buf = self._xs = self.lib.empty((max(n, self.capacity), *xb.shape[1:]), self.dtype)
        return self.lib.multiply(xb, self.p_views[0], out=buf[:n])

    def _scale_backward(self, W, dW):
        """The front Scale's step, given ``dW = xᵀ δ`` of the raw input x: the first Dense sees
        ``x ⊙ s``, so its ``dW = diag(s) xᵀ δ`` and ``dL/ds_j = Σ_n x_nj (δ Wᵀ)_nj =
        Σ_k W_jk (xᵀ δ)_jk`` (no ``δ Wᵀ`` product needed)."""
        s, ds = self.p_views[0], self.g_views[0]
        self.lib.sum(W * dW, axis=1, out=ds)
        dW *= s[:, None]

    def _head_takes_bias(self, tb, wb) -> bool:
        """Whether :meth:`_head` adds the output layer's bias and sums its gradient itself
        (the subclass's ``_softmax_ce`` in one pass); False here."""
        return False

    def _head(self, a, tb, n, wb=None, bias=False):
        """Loss on the network output ``a``: returns ``(loss, output, δ = dL/da)``.

        Softmax + cross-entropy is the subclass's fused ``_softmax_ce`` (the loss object's own
        fused form unless :meth:`_fuses_loss`: weighted or smoothed targets that are not
        integer labels of a trainer that :attr:`weighs_rows` / :attr:`smooths_labels`); the other
        heads call the model's loss object. With ``bias`` (:meth:`_head_takes_bias`), ``a``
        still lacks the output layer's bias, which ``_softmax_ce`` adds, summing its gradient
        on the way.
        """
        head, loss_fn = self.plan.head, self.plan.loss
        if bias:                    # _head_takes_bias checked that this is the fused softmax-CE
            _, b, _, db, _, _ = self.stages[-1]
            return self._softmax_ce(a, tb, n, b, db, w=wb)
        if head == "softmax_ce" and self._fuses_loss(tb, wb):
            return self._softmax_ce(a, tb, n, w=wb)
        if head == "plain":
            loss = loss_fn.forward(a, tb, wb)
            return loss, a, loss_fn.backward()
        loss = loss_fn.forward_logits(a, tb, wb)
        return loss, loss_fn.p, loss_fn.backward_logits()

    def evaluate_batch(self, xb, tb, wb=None, checked=False):
        """Loss and output of the network in inference mode on one batch, as
        :func:`xpnn.training.evaluate` computes them with the model's layers: the same
        forward (each Dense's matmul into a buffer of the trainer, its bias and activation in
        place; Dropout passes its input on), then the fused ``_softmax_ce`` (same numbers as the
        loss object's, to rounding). Returns ``(loss, probabilities)``, valid until the next
        step, or None where the generic evaluation applies: another head, targets that are not
        integer labels, weighted or smoothed ones the trainer does not weigh or smooth itself
        (:meth:`_fuses_loss`), or a model no longer linked to this trainer. Buffers too small
        for ``n`` rows grow, as for a training step (:func:`xpnn.training.evaluate` gives the
        validation set in pieces of a training batch's rows where :meth:`evaluates` says the
        trainer takes its targets; ``checked``: the caller has just asked it, and nothing ran
        since).
        """
        n = xb.shape[0]
        if n == 0 or not (checked or self.evaluates(tb, wb)):
            return None
        if n > self.capacity:
            self._allocate(n)
        for layer in self.plan.pre:                 # rescaling; dropout passes x on
            xb = layer.forward(xb, training=False)
        a = xb if self.plan.scale is None else self._scaled(xb)
        matmul = self.lib.matmul
        for i, (W, b, _, _, mode, post) in enumerate(self.stages):
            z = self.z[i][:n]
            matmul(a, W, out=z)
            self._bias_act(z, W, b, mode)
            for layer in post:
                z = layer.forward(z, training=False)
            a = z
        loss, out, _ = self._softmax_ce(a, tb, n, w=wb)
        return loss, out

    def evaluates(self, tb, wb=None) -> bool:
        """Whether :meth:`evaluate_batch` computes the loss of targets ``tb`` with row weights
        ``wb``: softmax + cross-entropy on integer labels that :meth:`_fuses_loss`, with
        the model still linked to this trainer."""
        return (self.plan.head == "softmax_ce" and tb.ndim == 1
                and self._fuses_loss(tb, wb) and self._linked())

    def _linked(self) -> bool:
        """Whether the model still has this trainer's layers, loss and parameters, the
        parameters' arrays being the trainer's views (as :meth:`attach` left them)."""
        model = self.model
        return (model is not None and model.loss is self.plan.loss
                and len(model.layers) == len(self.plan.layers)
                and all(a is b for a, b in zip(model.layers, self.plan.layers, strict=True))
                and self.same_params(model)
                and all(p.data is v for p, v in zip(self.params, self.p_views, strict=True)))

    def _fuses_loss(self, tb, wb) -> bool:
        """Whether ``_softmax_ce`` computes the loss of targets ``tb`` with row weights
        ``wb`` itself: without weights and smoothing always; smoothed or weighted integer
        labels when the trainer :attr:`smooths_labels` / :attr:`weighs_rows`."""
        labels = tb.ndim == 1
        return ((wb is None or (self.weighs_rows and labels))
                and (not self.plan.loss.label_smoothing or (self.smooths_labels and labels)))

    def weights_finite(self) -> bool:
        """Whether every parameter is finite: what the last :meth:`update` found in its own
        pass (:attr:`last_update_finite`) when it is known and nothing was linked since;
        otherwise one sum over the flat buffer (finite exactly when its terms are, unless it
        overflows; then an exact element-wise check)."""
        if self.last_update_finite is not None:
            return self.last_update_finite
        lib = self.lib
        if math.isfinite(float(lib.sum(self.flat_p))):
            return True
        return bool(lib.isfinite(self.flat_p).all())

    # A copied or pickled model must not share (or half-share) these buffers: its copy gets no
    # trainer and builds a fresh one at its next fit.
    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return (_no_trainer, ())

    # ------------------------------------------------------------------ linking
    def same_params(self, model) -> bool:
        """Whether ``model`` still has the Parameter objects this trainer was built for."""
        return len(model.params) == len(self.params) and all(
            a is b for a, b in zip(model.params, self.params, strict=True))

    def attach(self, checked=False) -> bool:
        """Make parameters and optimizer state views of the flat buffers (copying in whatever
        was replaced since the last call). False, and nothing changed, when the state cannot be
        represented (:meth:`state_problem` says why; ``checked``: the caller has just found
        no problem, and nothing ran since)."""
        if not checked and self.state_problem() is not None:
            return False
        # The update runs over the padding too: an infinite step (lr beyond the dtype) leaves
        # NaN there, which restoring the parameters does not touch. Zero it again, unless the
        # last update is known to have left every element finite (its padding then still 0).
        if self.last_update_finite is not True:
            for start, stop in self._padding:
                for flat in (self.flat_p, self.flat_m, self.flat_v):
                    flat[start:stop] = 0
        self.last_update_finite = None          # the parameters may have been replaced
        self.groups = self._groups()
        for p, pv, gv in zip(self.params, self.p_views, self.g_views, strict=True):
            if p.data is not pv:
                pv[...] = p.data
                p.data = pv
            p.grad = gv
        opt = self.opt
        if len(opt.state) != len(self.params):
            opt.state = [{} for _ in self.params]
        states = opt.state
        if self.spec.counts_steps:
            steps = self._steps(states)
            # Several counts only after an interrupted record of a fast step (see
            # _interrupted_record): the flat buffers hold step self.t.
            self.t = self.t if len(steps) > 1 else steps.pop()
            self.started = self.t > 0
        else:                   # some but not all present: an interrupted record
            self.started = any(s.get(name) is not None for s in states
                               for name, _ in self.slots)
        for name, views in self.slots:
            for s, view in zip(states, views, strict=True):
                if not self.started:
                    view[...] = 0
                else:
                    a = s.get(name)
                    if a is not None and a is not view:
                        view[...] = a
                if self.started or self.spec.counts_steps:
                    s[name] = view
        if self.spec.counts_steps:
            for s in states:
                s["step"] = self.t
        return True

    def attached(self) -> bool:
        """Whether :meth:`attach` would change nothing: every parameter's data and gradient
        are this trainer's views, the optimizer's state dicts hold its buffers' views and its
        step count, and the last update left every element finite (the padding still 0). A
        few identity tests, which the selection makes before each epoch instead of checking
        and linking again."""
        if not self.started or self.last_update_finite is not True or self._recording:
            return False
        states = self.opt.state
        if len(states) != len(self.params):
            return False
        for p, pv, gv in zip(self.params, self.p_views, self.g_views, strict=True):
            if p.data is not pv or p.grad is not gv:
                return False
        for name, views in self.slots:
            for s, view in zip(states, views, strict=True):
                if s.get(name) is not view:
                    return False
        return not self.spec.counts_steps or all(s.get("step") == self.t for s in states)

    def _groups(self):
        """Runs of consecutive parameters with the same ``(lr_factor, wd_factor)`` as
        ``(lo, hi, lr_factor, wd_factor)`` spans of the flat buffers (padding included)."""
        groups = []
        bounds = [*self._offsets[1:], self.size]
        for p, lo, hi in zip(self.params, self._offsets, bounds, strict=True):
            factors = (p.lr_factor, p.wd_factor)
            if groups and groups[-1][2:] == factors:
                groups[-1] = (groups[-1][0], hi, *factors)
            else:
                groups.append((lo, hi, *factors))
        return groups

    def state_problem(self) -> str | None:
        """Why the model's current parameters or optimizer state cannot be linked to the flat
        buffers (a sentence), or None when :meth:`attach` will succeed. Changes nothing."""
        model, dtype = self.model, self.dtype
        if model is None or not self.same_params(model):
            return "the model's parameters were replaced after the fast trainer was built"
        for i, (p, pv) in enumerate(zip(self.params, self.p_views, strict=True)):
            if p.data is not pv and not self._fits(p.data, pv):
                return (f"parameter {i} ({p.name}) is not a {dtype} array of shape "
                        f"{tuple(pv.shape)} of this backend")
        states = self.opt.state
        if len(states) != len(self.params):
            return None                                  # fresh optimizer state
        if self.spec.counts_steps:
            steps = self._steps(states)
            if len(steps) > 1 and not self._interrupted_record(states):
                return (f"the optimizer's per-parameter step counts differ ({sorted(steps)}), "
                        "e.g. after a generic step interrupted half-way; call "
                        "model.optimizer.reset() to start the optimizer afresh")
            if steps == {0}:
                return None
        for name, views in self.slots:
            what = name.replace("_", " ")
            arrays = [s.get(name) for s in states]
            present = [a for a in arrays if a is not None]
            if (not self.spec.counts_steps and present and len(present) < len(arrays)
                    and not self._interrupted_record(states)):
                return (f"only some parameters have a {what}, e.g. after a generic step "
                        "interrupted half-way; call model.optimizer.reset() to start the "
                        "optimizer afresh")
            for i, (a, view) in enumerate(zip(arrays, views, strict=True)):
                if a is not None and a is not view and not self._fits(a, view):
                    return (f"the {what} of parameter {i} is not a {dtype} array of shape "
                            f"{tuple(view.shape)} of this backend")
        return None

    def _steps(self, states) -> set:
        """The per-parameter step counts (0 where the buffers do not exist yet)."""
        names = [name for name, _ in self.slots]
        return {s.get("step", 0) if all(n in s for n in names) else 0 for s in states}

    def _interrupted_record(self, states) -> bool:
        """Whether unequal per-parameter state is what an interrupted :meth:`_after_update`
        leaves: the flat update ran for every parameter and only part of its record was
        written (``_recording`` is still set): step counts ``self.t - 1`` and ``self.t``, the
        buffers present this trainer's views."""
        if not self._recording:
            return False
        if self.spec.counts_steps and not self._steps(states) <= {self.t - 1, self.t}:
            return False
        return all(s.get(name) is None or s[name] is view
                   for name, views in self.slots for s, view in zip(states, views, strict=True))

    def _owns(self, a) -> bool:
        return isinstance(a, self.lib.ndarray) and a.dtype == self.dtype

    def _fits(self, a, view) -> bool:
        """Whether ``a`` can be copied into ``view``: an array of this library, dtype and
        shape."""
        return self._owns(a) and tuple(a.shape) == tuple(view.shape)

    def _after_update(self, t=None):
        """Record the update that just ran (step ``t``, default ``self.t + 1``) in the
        optimizer, as the generic path does.

        The trainer's own counters are written first, each in one assignment; the
        per-parameter dicts after them. A KeyboardInterrupt landing in the loop over the dicts
        leaves a pattern :meth:`_interrupted_record` recognises, and the next :meth:`attach`
        completes the record, so the fast path keeps applying."""
        opt = self.opt
        self.t = self.t + 1 if t is None else t
        opt.iterations += 1
        link = not self.started
        self.started = True
        self._recording = True
        for i, s in enumerate(opt.state):
            if self.spec.counts_steps:
                s["step"] = self.t
            if link:
                for name, views in self.slots:
                    s[name] = views[i]
        self._recording = False


def _no_trainer():
    return None

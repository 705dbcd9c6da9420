"""Flat parameter/gradient/moment buffers shared by the fast trainers (NumPy and CuPy).

Every parameter of the model is a view into one flat buffer ``flat_p`` (each starting on a
64-byte boundary; the padding between them stays zero and is harmless to every update rule);
its gradient a view into ``flat_g``; Adam's moments views into ``flat_m``/``flat_v`` and SGD's
momentum buffer a view into ``flat_m``. One optimizer update is then a handful of element-wise
passes over four long arrays instead of a Python loop over parameters.
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
    (Dropout, other activations) run as the model's own layer objects.
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
        # The gradients, then two free slots for Sequential._sync_gradients (data-parallel
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
        self.stages = self._stages(plan)
        self.opt = plan.optimizer
        self.kind = type(self.opt).__name__.lower()       # "adam", "adamw", "sgd"
        self.t = 0                                        # Adam step count
        self.momentum_started = False                     # SGD: momentum buffer exists
        self.capacity = 0                                 # batch size the buffers hold

    def _stages(self, plan):
        """Per Dense: ``(W, b, dW, db, mode, post)`` with views of the flat buffers (b, db None
        without bias). ``mode`` is ``"identity"`` or the activation of :attr:`fused_acts` that
        directly follows the Dense, computed by the trainer; ``post`` are the generic layer
        objects that follow it (Dropout, activations the trainer does not compute)."""
        stages, k = [], 0
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
    def train_step(self, xb, tb, wb=None):
        """Forward, loss, backward and update on one batch; returns ``(loss, output)`` like
        :meth:`xpnn.Sequential._train_step` (``wb``: per-sample weights or None).

        The equations of :class:`xpnn.layers.Dense` and its activation, layer by layer, with
        every result written into a preallocated buffer (``out=``) and transposed operands
        passed to the matmul as views.
        """
        n = xb.shape[0]
        if n == 0:           # data-parallel: no rows of this batch on this rank
            self.flat_g[...] = 0
            loss = self.model._sync_gradients(self.flat_sync, self.model._idle_batch(),
                                              0 if wb is None else self.lib.sum(wb))
            self.update()
            return loss, None
        if n > self.capacity:
            self._allocate(n)
        matmul, stages = self.lib.matmul, self.stages
        for layer in self.plan.pre:                 # rescaling, dropout on the input
            xb = layer.forward(xb, training=True)

        # forward: a_i = post(act(a_{i-1} W_i + b_i)), act in place in the buffer z_i
        acts, outs, a = [], [], xb
        for i, (W, b, _, _, mode, post) in enumerate(stages):
            z = self.z[i][:n]
            matmul(a, W, out=z)
            self._bias_act(z, W, b, mode)
            acts.append(z)
            for layer in post:
                z = layer.forward(z, training=True)
            outs.append(z)
            a = z

        loss, out, delta = self._head(a, tb, n, wb)   # and δ = dL/d(network output)

        # backward, from the top: δ ← act'(·) ⊙ δ, dW_i = a_{i-1}ᵀ δ (+ λ W_i), db_i = Σ_n δ,
        # then δ ← δ W_iᵀ for the layer below
        for i in range(len(stages) - 1, -1, -1):
            W, b, dW, db, mode, post = stages[i]
            for layer in reversed(post):
                delta = layer.backward(delta)
            db_done = self._act_backward(i, acts[i], delta, db, mode)
            a_prev = outs[i - 1] if i > 0 else xb
            matmul(a_prev.T, delta, out=dW)
            wd = self.plan.dense[i].weight_decay
            if wd:                                          # Dense's own L2 penalty on W
                self._add_weight_decay(i, W, dW, wd)
            if db is not None and not db_done:
                self.lib.sum(delta, axis=0, out=db)
            if i > 0:
                da = self.da[i - 1][:n]
                matmul(delta, W.T, out=da)
                delta = da

        loss = self.model._sync_gradients(           # the one gradient boundary
            self.flat_sync, loss, n if wb is None else self.lib.sum(wb))
        self.update()
        return loss, out

    def _head(self, a, tb, n, wb=None):
        """Loss on the network output ``a``: returns ``(loss, output, δ = dL/da)``.

        Softmax + cross-entropy is the subclass's fused ``_softmax_ce`` (the loss object's own
        fused form when the rows carry weights ``wb``); the other heads call the model's loss
        object.
        """
        head, loss_fn = self.plan.head, self.plan.loss
        if head == "softmax_ce" and wb is None:
            return self._softmax_ce(a, tb, n)
        if head == "plain":
            loss = loss_fn.forward(a, tb, wb)
            return loss, a, loss_fn.backward()
        loss = loss_fn.forward_logits(a, tb, wb)
        return loss, loss_fn.p, loss_fn.backward_logits()

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

    def attach(self) -> bool:
        """Make parameters and optimizer state views of the flat buffers (copying in whatever
        was replaced since the last call). False, and nothing changed, when the state cannot be
        represented (:meth:`state_problem` says why)."""
        if self.state_problem() is not None:
            return False
        self.last_update_finite = None          # the parameters may have been replaced
        # The update runs over the padding too: an infinite step (lr beyond the dtype) leaves
        # NaN there, which restoring the parameters does not touch. Zero it again.
        for start, stop in self._padding:
            for flat in (self.flat_p, self.flat_m, self.flat_v):
                flat[start:stop] = 0
        for p, pv, gv in zip(self.params, self.p_views, self.g_views, strict=True):
            if p.data is not pv:
                pv[...] = p.data
                p.data = pv
            p.grad = gv
        opt = self.opt
        if len(opt.state) != len(self.params):
            opt.state = [{} for _ in self.params]
        states = opt.state
        if self.kind in ("adam", "adamw"):
            steps = self._adam_steps(states)
            # Several counts only after an interrupted record of a fast step (see
            # _interrupted_record): the flat moments hold step self.t.
            t = self.t if len(steps) > 1 else steps.pop()
            self.t = t
            for s, mv, vv in zip(states, self.m_views, self.v_views, strict=True):
                if t == 0:
                    mv[...] = 0
                    vv[...] = 0
                else:
                    for key, view in (("exp_avg", mv), ("exp_avg_sq", vv)):
                        if s[key] is not view:
                            view[...] = s[key]
                s["step"], s["exp_avg"], s["exp_avg_sq"] = t, mv, vv
        elif opt.momentum:
            have = [s.get("momentum_buffer") is not None for s in states]
            self.momentum_started = any(have)      # some but not all: an interrupted record
            if self.momentum_started:
                for s, mv in zip(states, self.m_views, strict=True):
                    buf = s.get("momentum_buffer")
                    if buf is not None and buf is not mv:
                        mv[...] = buf
                    s["momentum_buffer"] = mv
        return True

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
        if self.kind in ("adam", "adamw"):
            steps = self._adam_steps(states)
            if len(steps) > 1 and not self._interrupted_record(states):
                return (f"the optimizer's per-parameter step counts differ ({sorted(steps)}), "
                        "e.g. after a generic step interrupted half-way; call "
                        "model.optimizer.reset() to start the optimizer afresh")
            if steps != {0}:
                for i, (s, mv, vv) in enumerate(zip(states, self.m_views, self.v_views,
                                                    strict=True)):
                    for key, view in (("exp_avg", mv), ("exp_avg_sq", vv)):
                        if s[key] is not view and not self._fits(s[key], view):
                            return (f"the optimizer's {key} of parameter {i} is not a {dtype} "
                                    f"array of shape {tuple(view.shape)} of this backend")
        elif self.opt.momentum:
            bufs = [s.get("momentum_buffer") for s in states]
            present = [b for b in bufs if b is not None]
            if present and len(present) < len(bufs) and not self._interrupted_record(states):
                return ("only some parameters have a momentum buffer, e.g. after a generic "
                        "step interrupted half-way; call model.optimizer.reset() to start the "
                        "optimizer afresh")
            for i, (b, mv) in enumerate(zip(bufs, self.m_views, strict=True)):
                if b is not None and b is not mv and not self._fits(b, mv):
                    return (f"the momentum buffer of parameter {i} is not a {dtype} array of "
                            f"shape {tuple(mv.shape)} of this backend")
        return None

    @staticmethod
    def _adam_steps(states) -> set:
        return {s.get("step", 0) if "exp_avg" in s else 0 for s in states}

    def _interrupted_record(self, states) -> bool:
        """Whether unequal per-parameter state is what an interrupted :meth:`_after_update`
        leaves: the flat update ran for every parameter and only part of its record was
        written (``_recording`` is still set). Adam: counts ``self.t - 1`` and ``self.t``, the
        moments still this trainer's views; SGD: the buffers present are this trainer's
        views."""
        if not self._recording:
            return False
        if self.kind in ("adam", "adamw"):
            steps = self._adam_steps(states)
            return (steps == {self.t - 1, self.t} and all(
                s.get("exp_avg") is mv and s.get("exp_avg_sq") is vv
                for s, mv, vv in zip(states, self.m_views, self.v_views, strict=True)))
        return all(s.get("momentum_buffer") is None or s["momentum_buffer"] is mv
                   for s, mv in zip(states, self.m_views, strict=True))

    def _owns(self, a) -> bool:
        return isinstance(a, self.lib.ndarray) and a.dtype == self.dtype

    def _fits(self, a, view) -> bool:
        """Whether ``a`` can be copied into ``view``: an array of this library, dtype and
        shape."""
        return self._owns(a) and tuple(a.shape) == tuple(view.shape)

    def _after_update(self, t=None):
        """Record the update that just ran (Adam: step ``t``, default ``self.t``) in the
        optimizer, as the generic path does.

        The trainer's own counters are written first, each in one assignment; the
        per-parameter dicts after them. A KeyboardInterrupt landing in the loop over the dicts
        leaves a pattern :meth:`_interrupted_record` recognises, and the next :meth:`attach`
        completes the record, so the fast path keeps applying."""
        opt = self.opt
        if self.kind in ("adam", "adamw"):
            self.t = t = self.t if t is None else t
            opt.iterations += 1
            self._recording = True
            for s in opt.state:
                s["step"] = t
            self._recording = False
            return
        opt.iterations += 1
        if opt.momentum and not self.momentum_started:
            self.momentum_started = True
            self._recording = True
            for s, mv in zip(opt.state, self.m_views, strict=True):
                s["momentum_buffer"] = mv
            self._recording = False



def _no_trainer():
    return None

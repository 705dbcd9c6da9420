"""Backend-specific fast paths for training plain MLPs (the one place xpnn leaves the array API).

The generic code in :mod:`xpnn.layers`, :mod:`xpnn.losses` and :mod:`xpnn.optimizers` is the
reference: it runs on every backend and reads like the equations. For the most common network,

    [Dropout ->] [Scale ->] Dense -> act [-> Dropout] -> ... -> Dense [-> Softmax + categorical CE]

trained by Adam, AdamW, SGD or RMSprop, this package provides trainers that compute *the same
numbers* with backend-specific tricks (Dropout and the activations a trainer does not compute
itself run as the model's own layer objects inside the fast step, drawing the same random masks).
Both also take a front :class:`~xpnn.Scale` (RealMLP's learned scale of each input feature,
folded into the first Dense's step) and parameters with their own ``lr_factor`` /
``wd_factor`` (each run of parameters with equal factors updated as one ``torch.optim``
parameter group):

* ``numpy_mlp`` (NumPy): parameters, gradients and optimizer moments live in flat buffers
  updated in place; activations and gradients are preallocated and written with ``out=``;
  transposed operands go to BLAS as views. When Numba is installed (``xpnn[fast]``), the
  element-wise work (optimizer update, bias + ReLU, ReLU's backward + bias gradient,
  softmax-cross-entropy, the product of a Dropout after an activation with the layer's mask)
  runs as one compiled pass each from ``numba_kernels``, otherwise
  as NumPy passes; for large models the update is split across threads. Shuffled batches are
  gathered one at a time into a reused buffer (``gathers_batches``), not the whole dataset
  once per epoch.
* ``cupy_mlp`` (CuPy): the same layout with fused CUDA kernels (one per optimizer update,
  bias+activation forward and backward, softmax-cross-entropy) and no host synchronisation.

:func:`select` picks a trainer automatically (``Sequential.fit`` calls it once per epoch) or
returns ``None``, and the run then uses the generic step
(:meth:`xpnn.training.TrainingRun.generic_step`). Force the generic path
with the environment variable ``XPNN_FASTPATH=0`` or ``model.fastpath = False``.

The model's ``Parameter.data`` arrays become views into the trainer's flat parameter buffer and
the optimizer's state entries (those its ``STATE`` declares) views into its
flat moment buffers, so the generic path (``train_on_batch``, ``predict``, ``get_weights``...) and
the fast path see one and the same model and can alternate freely. Each call to :func:`select`
re-checks that identity and copies in anything that was replaced in between.
"""

from __future__ import annotations

import os

from ._plan import Plan, analyze

__all__ = ["Plan", "analyze", "enabled", "explain", "select"]


def enabled(model) -> bool:
    """Whether fast paths may be used for ``model`` (env ``XPNN_FASTPATH=0`` or
    ``model.fastpath = False`` turn them off)."""
    if os.environ.get("XPNN_FASTPATH", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return bool(getattr(model, "fastpath", True))


#: The backend families with a fast trainer.
FAMILIES = ("numpy", "cupy")


def _trainer_class(family):
    if family == "numpy":
        from .numpy_mlp import NumpyMLPTrainer
        return NumpyMLPTrainer
    if family == "cupy":
        from .cupy_mlp import CupyMLPTrainer  # imports cupy; only reached on the cupy backend
        return CupyMLPTrainer
    return None


def explain(model) -> str | None:
    """Why ``model`` trains on the generic path (a sentence), or None when a fast path applies:
    None exactly when :func:`select` returns a trainer.

    Parameters
    ----------
    model : Sequential
        A compiled model.

    Returns
    -------
    str or None
        The reason, or None.
    """
    return _choose(model)[1]


def select(model):
    """A fast trainer for ``model`` in its current state, or None for the generic path
    (:func:`explain` says why).

    The trainer is cached on the model and reused while layers, optimizer, loss, dtype and
    backend stay the same; every call re-links parameters and optimizer state to its buffers
    where anything replaced them since (the trainer's ``attached()`` says whether).

    Parameters
    ----------
    model : Sequential
        A compiled model.

    Returns
    -------
    trainer or None
        The fast trainer (``NumpyMLPTrainer`` or ``CupyMLPTrainer``), or None.
    """
    trainer = getattr(model, "_fastpath_trainer", None)
    if (trainer is not None and trainer.plan_key == _plan_key(model) and enabled(model)
            and trainer.attached()):
        return trainer              # as the last epoch left it: nothing to check or link
    trainer, _ = _choose(model)
    if trainer is None or not trainer.attach(checked=True):
        return None
    return trainer


def _plan_key(model) -> tuple:
    """Everything :func:`analyze` reads, by identity where it is an object: a trainer whose
    ``plan_key`` equals this was built for a plan that :func:`analyze` would give again (the
    analysis is skipped, once per epoch)."""
    return (model.built, model.loss, model.optimizer, model.dtype, model.backend.name,
            model._fused, *model.layers,
            *[(p, p.lr_factor, p.wd_factor) for p in getattr(model, "params", ())])


def _choose(model):
    """``(trainer, None)`` with the cached or a new trainer whose buffers can take the model's
    current state, or ``(None, reason)``. Links nothing."""
    if not enabled(model):
        return None, "fast paths are disabled (XPNN_FASTPATH=0 or model.fastpath = False)"
    if model.backend.family not in FAMILIES:
        return None, f"no fast path for the {model.backend.family} backend"
    trainer = getattr(model, "_fastpath_trainer", None)
    key = _plan_key(model)
    if trainer is None or trainer.plan_key != key or not trainer.same_params(model):
        plan, reason = analyze(model)
        if plan is None:              # before importing a trainer (Numba, CuPy) it cannot use
            return None, reason
        cls = _trainer_class(model.backend.family)
        if (trainer is None or not isinstance(trainer, cls) or trainer.plan != plan
                or not trainer.same_params(model)):
            trainer = cls(model, plan)
            model._fastpath_trainer = trainer
        trainer.plan_key = key
    problem = trainer.state_problem()
    if problem is not None:
        return None, problem
    return trainer, None

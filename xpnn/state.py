"""Device-side snapshots of a model's training state, to undo a step, an epoch or a failed fit.

:func:`snapshot_weights` copies the parameters; :func:`snapshot` also the optimizer's
per-parameter state and step count and the host random generator. Nothing leaves the device.
"""

from __future__ import annotations

__all__ = ["restore", "restore_weights", "snapshot", "snapshot_weights"]


def snapshot_weights(model) -> list:
    """Device-side copies of all parameters (no host transfer)."""
    return [model.backend.copy(p.data) for p in model.params]


def restore_weights(model, saved) -> None:
    """Write a :func:`snapshot_weights` back into the parameters, in place."""
    for p, s in zip(model.params, saved, strict=True):
        p.data[...] = s


def snapshot(model):
    """Weights, optimizer state and step count, and the random generator's state."""
    opt, be = model.optimizer, model.backend
    states = [{k: be.copy(v) if hasattr(v, "shape") else v for k, v in s.items()}
              for s in opt.state]
    return snapshot_weights(model), states, opt.iterations, model.rng.bit_generator.state


def restore(model, saved) -> None:
    """Put a :func:`snapshot` back: the model continues as if nothing happened since."""
    weights, states, iterations, rng_state = saved
    restore_weights(model, weights)
    model.optimizer.state, model.optimizer.iterations = states, iterations
    model.rng.bit_generator.state = rng_state

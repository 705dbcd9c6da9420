"""The fast path's analysis is reused from epoch to epoch (``trainer.plan_key``) only while
everything it was made from is the same: each change below, made after a fit has cached it,
must be seen by the next selection."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn import fastpath


class MyReLU(xpnn.ReLU):
    """A subclass: the fast path takes exact classes only."""


def _fitted():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 4)), rng.integers(0, 3, 64)
    model = xpnn.Sequential(xpnn.Dense(4, 8), xpnn.ReLU(), xpnn.Dense(8, 3), xpnn.Softmax(),
                            seed=0)
    model.compile("crossentropy", xpnn.Adam(0.01))
    model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    trainer = fastpath.select(model)
    assert trainer is not None and trainer.plan_key is not None
    return model, trainer, X, y


def _lr_factor(model):
    model.params[0].lr_factor = 0.5


def _wd_factor(model):
    model.params[1].wd_factor = 0.0


def _layer(model):
    layer = MyReLU()
    layer.build(model.backend, model.dtype, model.rng, 8)
    model.layers[1] = layer


def _fastpath_off(model):
    model.fastpath = False


@pytest.mark.parametrize("change, reason", [(_layer, "MyReLU"), (_fastpath_off, "disabled")])
def test_a_change_that_rules_the_fast_path_out_is_seen(change, reason):
    model, _, X, y = _fitted()
    change(model)
    assert fastpath.select(model) is None
    assert reason in fastpath.explain(model)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)      # the generic step


@pytest.mark.parametrize("change, groups", [(_lr_factor, 2), (_wd_factor, 3)])
def test_factors_set_after_a_cached_analysis_are_applied(change, groups):
    """NumPy's trainer updates parameters with their own factors (parameter groups); factors
    changed between fits take effect at the next one, as on the generic path."""
    model, trainer, X, y = _fitted()
    twin, _, _, _ = _fitted()
    twin.fastpath = False
    for m in (model, twin):
        change(m)
        m.fit(X, y, epochs=2, batch_size=16, verbose=0)
    assert fastpath.select(model) is trainer
    assert len(trainer.groups) == groups          # runs of parameters with equal factors
    for a, b in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_new_activation_loss_or_optimizer_gets_a_new_plan():
    model, trainer, X, y = _fitted()
    layer = xpnn.Tanh()
    layer.build(model.backend, model.dtype, model.rng, 8)
    model.layers[1] = layer
    new = fastpath.select(model)
    assert new is not trainer and new.plan.acts[0][0][1] is model.layers[1]
    model.compile("mse", xpnn.SGD(0.1))                     # no fused softmax-CE any more
    again = fastpath.select(model)
    assert again is not new and again.plan.head == "plain"
    assert again.opt is model.optimizer and again.plan.loss is model.loss
    model.optimizer = xpnn.RMSprop(0.01)
    last = fastpath.select(model)
    assert last.opt is model.optimizer and last.kind == "rmsprop"


def test_cached_analysis_trains_as_a_fresh_one():
    """Reusing the analysis changes no number: the weights equal those of a fit whose
    analysis is made afresh every epoch."""

    class Forget(xpnn.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            trainer = getattr(self.model, "_fastpath_trainer", None)
            if trainer is not None:
                trainer.plan_key = None                  # forces a fresh analysis

    weights = []
    for callbacks in ([], [Forget()]):
        model, _, X, y = _fitted()
        model.fit(X, y, epochs=3, batch_size=16, verbose=0, callbacks=callbacks)
        weights.append(model.get_weights())
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_linked_trainer_is_not_linked_again(monkeypatch):
    """While parameters and optimizer state are the trainer's own views, the selection before
    each epoch links nothing (``attached``); the first epoch of a fit links once."""
    model, trainer, X, y = _fitted()
    assert trainer.attached()
    attached = []
    attach = type(trainer).attach
    monkeypatch.setattr(type(trainer), "attach",
                        lambda self, *a, **k: attached.append(1) or attach(self, *a, **k))
    model.fit(X, y, epochs=4, batch_size=16, verbose=0)
    assert not attached
    model.optimizer.state = [dict(s) for s in model.optimizer.state]   # new dicts, same arrays
    assert trainer.attached()
    _copy_state(model)                                                  # other arrays
    assert not trainer.attached()
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert len(attached) == 1 and trainer.attached()


def _replace_weight(model):
    model.params[0].data = model.params[0].data.copy()


def _replace_moment(model):
    state = model.optimizer.state[1]
    state["exp_avg"] = state["exp_avg"].copy()


def _copy_state(model):
    model.optimizer.state = [{k: v.copy() if hasattr(v, "copy") else v for k, v in s.items()}
                             for s in model.optimizer.state]


def _replace_grad(model):
    model.params[2].grad = None


@pytest.mark.parametrize("change", [_replace_weight, _replace_moment, _copy_state, _replace_grad])
def test_state_replaced_between_epochs_is_linked_again(change):
    """A weight, a moment or the whole optimizer state replaced by equal copies between
    epochs (a callback's doing) is seen: the trainer is no longer ``attached``, links the copies
    and trains on to the weights of a fit where nothing was replaced."""

    class Replace(xpnn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            change(self.model)
            assert not fastpath._choose(self.model)[0].attached()

    weights = []
    for callbacks in ([], [Replace()]):
        model, _, X, y = _fitted()
        model.fit(X, y, epochs=3, batch_size=16, verbose=0, callbacks=callbacks)
        weights.append(model.get_weights())
        assert model._fastpath_trainer.attached() == (not callbacks)    # the last change
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)

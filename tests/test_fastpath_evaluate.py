"""The validation inside ``fit`` evaluated by the fast trainer of the epoch
(``FlatTrainer.evaluate_batch``): the same losses as the model's layers and loss object, and
the generic evaluation wherever the trainer is not linked to the model any more."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn.callbacks import Callback
from xpnn.fastpath._flat import FlatTrainer
from xpnn.losses import CategoricalCrossEntropy


def _data(n=120, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    return X, (X[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int) + (X[:, 1] > 1)


def _model(dtype, ls, dropout=True):
    layers = [xpnn.Dense(5, 16), xpnn.ReLU()]
    if dropout:
        layers.append(xpnn.Dropout(0.2))
    layers += [xpnn.Dense(16, 8), xpnn.Tanh(), xpnn.Dense(8, 3), xpnn.Softmax()]
    model = xpnn.Sequential(*layers, dtype=dtype, seed=0)
    return model.compile(CategoricalCrossEntropy(label_smoothing=ls), xpnn.AdamW(0.01),
                         ["accuracy"])


@pytest.fixture
def spy(monkeypatch):
    """Records, per batch given to a fast trainer's ``evaluate_batch``, whether it evaluated
    it."""
    used = []
    original = FlatTrainer.evaluate_batch

    def evaluate_batch(self, xb, tb, wb=None, checked=False):
        result = original(self, xb, tb, wb, checked)
        used.append(result is not None)
        return result

    monkeypatch.setattr(FlatTrainer, "evaluate_batch", evaluate_batch)
    return used


@pytest.mark.parametrize("kernels", ["1", "0"], ids=["numba", "numpy"])
@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_validation_by_the_trainer_equals_the_generic_one(dtype, ls, kernels, spy,
                                                          monkeypatch):
    """Per epoch the trainer's validation loss and accuracy equal those of
    ``model.evaluate`` (layer by layer, the loss object) on the weights of that epoch."""
    if kernels == "1":
        pytest.importorskip("numba")
    monkeypatch.setenv("XPNN_NUMBA", kernels)
    X, y = _data()
    Xv, yv = _data(40, seed=1)
    model = _model(dtype, ls)
    seen = []

    class Generic(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.evaluate(Xv, yv))

    history = model.fit(X, y, epochs=4, batch_size=64, validation_data=(Xv, yv), verbose=0,
                        callbacks=[Generic()])
    assert spy == [True] * 4
    rtol = 1e-12 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(history.history["val_loss"], [s["loss"] for s in seen],
                               rtol=rtol)
    assert history.history["val_accuracy"] == [s["accuracy"] for s in seen]


def test_fit_results_equal_with_and_without_the_trainer_validation(monkeypatch):
    """float64: the validation losses equal the generic path's to rounding and early
    stopping picks the same epoch, so the weights are the same."""
    X, y = _data(200)
    Xv, yv = _data(60, seed=2)
    runs = []
    for fast in (True, False):
        model = _model("float64", 0.1)
        model.fastpath = fast
        stop = xpnn.EarlyStopping("val_loss", patience=2, restore_best_weights=True)
        history = model.fit(X, y, epochs=12, batch_size=64, validation_data=(Xv, yv),
                            verbose=0, callbacks=[stop])
        runs.append((history.history["val_loss"], stop.best_epoch, model.get_weights()))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-10)
    assert runs[0][1] == runs[1][1]
    for a, b in zip(runs[0][2], runs[1][2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_a_replaced_weight_array_is_evaluated_generically(spy):
    """A callback that gives a Dense a new weight array after the last step (the trainer's
    views no longer the model's parameters): the validation uses the new weights."""
    X, y = _data()
    Xv, yv = _data(40, seed=1)
    model = _model("float64", 0.1)

    class Replace(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                dense = self.model.layers[0]
                dense.W.data = dense.W.data * 3.0       # a new array, not the trainer's view

    history = model.fit(X, y, epochs=1, batch_size=64, validation_data=(Xv, yv), verbose=0,
                        callbacks=[Replace()])
    assert spy == []
    np.testing.assert_allclose(history.history["val_loss"], [model.evaluate(Xv, yv)["loss"]],
                               rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_more_rows_than_the_buffers_are_evaluated_in_pieces(weighted, spy):
    """A validation set larger than a training batch (300 rows, batches of 32): the trainer
    evaluates it in pieces of 32 rows (the last one shorter) and the loss, the
    (weighted) mean over all rows, and the accuracy equal the generic evaluation's."""
    pytest.importorskip("numba")          # row weights in the fused loss: Numba's kernel
    X, y = _data()
    Xv, yv = _data(300, seed=1)
    wv = np.linspace(0.5, 2.0, 300) if weighted else None
    val = (Xv, yv) if wv is None else (Xv, yv, wv)
    model = _model("float64", 0.1)
    seen = []

    class Generic(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.evaluate(Xv, yv, sample_weight=wv))

    history = model.fit(X, y, epochs=2, batch_size=32, validation_data=val, verbose=0,
                        callbacks=[Generic()])
    assert spy == [True] * 20                   # 2 epochs of 10 pieces: 9 of 32 rows, 1 of 12
    np.testing.assert_allclose(history.history["val_loss"], [s["loss"] for s in seen],
                               rtol=1e-12)
    assert history.history["val_accuracy"] == [s["accuracy"] for s in seen]


def test_generic_where_the_trainer_cannot(spy, monkeypatch):
    """One-hot targets, or sample weights without Numba's kernel: the generic evaluation,
    of the whole validation set at once."""
    X, y = _data()
    Xv, yv = _data(300, seed=1)
    model = _model("float64", 0.0)
    model.fit(X, np.eye(3)[y], epochs=1, batch_size=64,
              validation_data=(Xv, np.eye(3)[yv]), verbose=0)
    monkeypatch.setenv("XPNN_NUMBA", "0")
    model = _model("float64", 0.0)
    model.fit(X, y, epochs=1, batch_size=64,
              validation_data=(Xv, yv, np.linspace(0.5, 2.0, 300)), verbose=0)
    assert spy == []

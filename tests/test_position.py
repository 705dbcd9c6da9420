"""xpnn.position.Position: JSON round trip, validation, and its use in model files."""

from __future__ import annotations

import numpy as np
import pytest
from _models import classifier

import xpnn
from xpnn import serialization
from xpnn.position import Position


def _inside():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    rng.random()
    metrics = ({"totals": [3.0, 4.0], "dtype": "float32", "count": 7},)
    return Position(2, 5, state, rng.bit_generator.state, 1.25, 40.0, metrics)


def test_round_trip_at_an_epoch_start_and_inside_an_epoch():
    start = Position(3)
    assert not start.inside_epoch
    assert start.to_json() == {"epoch": 3, "batch": 0}
    assert Position.from_json(start.to_json()) == start
    inside = _inside()
    assert inside.inside_epoch
    assert Position.from_json(inside.to_json(), n_metrics=1) == inside


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("rng"), "lacks"),
    (lambda d: d.update(extra=1), "unknown entries"),
    (lambda d: d.update(epoch=-1), "bad training position"),
    (lambda d: d.update(batch=True), "bad training position"),
    (lambda d: d.update(weight=-2.0), "training position weight"),
    (lambda d: d.update(loss=float("nan")), "training position loss"),
    (lambda d: d["rng"].update(bit_generator="MT19937"), "bad random generator state"),
    (lambda d: d.update(metrics=[]), "metric states do not match"),
    (lambda d: d["metrics"][0].update(dtype="int8"), "bad metric state"),
])
def test_invalid_positions_are_refused(change, message):
    data = _inside().to_json()
    data["rng"] = dict(data["rng"])
    data["metrics"] = [dict(m) for m in data["metrics"]]
    change(data)
    with pytest.raises(ValueError, match=message):
        Position.from_json(data, n_metrics=1)


def test_a_batch_without_the_epoch_state_is_refused():
    with pytest.raises(ValueError, match="inside an epoch without its state"):
        Position.from_json({"epoch": 1, "batch": 4})


def test_model_files_store_and_read_back_a_position(tmp_path):
    model = classifier(k=2)
    rng = np.random.default_rng(1)
    model.fit(rng.normal(size=(40, 4)), rng.integers(0, 2, 40), epochs=1, verbose=0)
    inside = _inside()
    path = serialization.save(model, tmp_path / "m", position=inside)
    assert serialization.read(path).training["position"] == inside
    path = serialization.save(model, tmp_path / "start", position=Position(1))
    assert serialization.read(path).training["position"] == Position(1)
    assert serialization.read(serialization.save(model, tmp_path / "none")
                              ).training["position"] is None
    assert isinstance(xpnn.load(path), xpnn.Sequential)

"""examples/run_seeds.py: seed lists, the mean ± std summary, the target check, and a real
two-seed run of the XOR example (a few epochs) that fills a results file."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _driver():
    spec = importlib.util.spec_from_file_location("xpnn_run_seeds", EXAMPLES / "run_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_seeds():
    drv = _driver()
    assert drv.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert drv.parse_seeds("3, 1,7") == [3, 1, 7]
    assert drv.parse_seeds("0-2,9") == [0, 1, 2, 9]
    with pytest.raises(Exception, match="no seeds"):
        drv.parse_seeds(" , ")


def test_summary_mean_std_and_targets():
    drv = _driver()
    records = [{"test": {"accuracy": a, "nested": {"r2": r}}, "seconds": s, "epochs_run": 3}
               for a, r, s in [(0.90, 0.5, 10.0), (0.88, 0.6, 12.0), (0.89, 0.7, 11.0)]]
    out = drv.summarise(records, [0, 1, 2], [("accuracy", 0.875), ("nested/r2", 0.5)])
    acc = out["test"]["accuracy"]
    assert acc["mean"] == pytest.approx(0.89)
    assert acc["std"] == pytest.approx(statistics.stdev([0.90, 0.88, 0.89]))
    assert (acc["min"], acc["max"]) == (0.88, 0.90)
    assert out["seconds"]["min"] == 10.0
    # 0.89 - 0.01 = 0.88 >= 0.875; 0.6 - 0.1 = 0.5 >= 0.5, but only just: still cleared
    assert out["targets"]["accuracy"]["cleared"]
    assert out["targets"]["nested/r2"]["cleared"]
    out = drv.summarise(records, [0, 1, 2], [("accuracy", 0.885)])
    assert not out["targets"]["accuracy"]["cleared"]  # mean 0.89 clears it, mean - std does not


def test_two_seeds_of_xor_into_a_results_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"other": {"kept": True}}))
    drv = _driver()
    summary = drv.main(["xor.py", "--seeds", "0,1", "--out", str(tmp_path / "runs"),
                        "--timeout", "600", "--target", "accuracy=0.0", "--results",
                        str(results), "--key", "xor", "--", "--epochs", "5"])
    assert summary["seeds"] == [0, 1]
    assert len(summary["test"]["accuracy"]["values"]) == 2
    assert summary["epochs_run"] == [5, 5]
    assert summary["environment"]["variables"]["OPENBLAS_NUM_THREADS"] == "1"
    written = json.loads(results.read_text())
    assert written["other"] == {"kept": True}
    assert written["xor"]["seed"] == 0 and written["xor"]["seeds"]["seeds"] == [0, 1]
    assert (tmp_path / "runs" / "seed1" / "metrics.json").is_file()
    assert json.loads((tmp_path / "runs" / "seeds.json").read_text())["script"] == "xor.py"
    assert "accuracy:" in capsys.readouterr().out


def test_failing_run_is_reported(tmp_path):
    drv = _driver()
    with pytest.raises(SystemExit, match="failed with status"):
        drv.main(["xor.py", "--seeds", "0", "--out", str(tmp_path), "--timeout", "600", "--",
                  "--epochs", "not-a-number"])
    assert "invalid int value" in (tmp_path / "seed0.log").read_text()

"""Smoke tests of the example scripts in examples/: each runs for a couple of epochs (XOR and
quickstart.py in full) into a temporary folder, and must print its report and write
metrics.json and its PNG figures.

Real data are read from ``$XPNN_DATA`` or else ``<repo>/../shared/data``; an example whose data
are missing there is skipped with the reason. MNIST runs on a 2,000-image subset.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
pytest.importorskip("pandas")
pytest.importorskip("tqdm")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
METRICS_KEYS = {"experiment", "test", "epochs_run", "backend", "seconds"}


def _data_home() -> Path:
    env = os.environ.get("XPNN_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


DATA = _data_home()


def _need(*relative: str) -> None:
    for rel in relative:
        if not (DATA / rel).is_file():
            pytest.skip(f"dataset file {DATA / rel} not found (set XPNN_DATA to a folder "
                        f"holding {rel})")


def _load(name: str):
    """Import examples/<name>.py as a module (examples/ on sys.path for its _common import)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"xpnn_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, out: Path, *args: str) -> dict:
    record = _load(name).main([*args, "--out", str(out), "--quiet"])
    written = json.loads((out / "metrics.json").read_text())
    assert METRICS_KEYS <= set(written), sorted(written)
    assert written == record
    assert written["seconds"] > 0
    return written


def _pngs(out: Path, *names: str) -> None:
    for name in names:
        path = out / name
        assert path.is_file(), f"{path} was not written"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_xor_solved_on_every_backend(tmp_path, backend, capsys):
    """XOR in full; ``backend`` is parametrized by the root conftest (every backend here)."""
    m = _run("xor", tmp_path, "--backend", backend)
    assert m["backend"] == backend
    assert m["epochs_run"] == 300
    assert m["test"]["accuracy"] == 1.0
    assert "accuracy 1.00" in capsys.readouterr().out
    _pngs(tmp_path, "decision_surface.png", "learning_curves.png")


def test_quickstart_as_a_script(tmp_path):
    """The README's command, run in full as a subprocess (offline: sklearn's 8x8 digits)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py"), "--out",
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "precision" in proc.stdout and "macro avg" in proc.stdout  # sklearn's report
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert METRICS_KEYS <= set(m)
    assert m["test"]["accuracy"] > 0.9
    assert m["seconds"] < 60
    _pngs(tmp_path, "learning_curves.png", "confusion_matrix.png")


@pytest.mark.parametrize("kind, folder", [("mnist", "mnist"), ("fashion", "fashion-mnist")])
def test_mnist(tmp_path, kind, folder, capsys):
    _need(*(f"{folder}/{f}" for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                      "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")))
    m = _run("mnist", tmp_path, "--kind", kind, "--data-home", str(DATA), "--epochs", "2",
             "--limit", "2000", "--hidden", "128,64", "--dropout", "0", "--input-dropout", "0")
    assert m["epochs_run"] == 2
    assert 0.3 < m["test"]["accuracy"] <= 1.0  # chance is 0.1
    assert "macro avg" in capsys.readouterr().out
    _pngs(tmp_path, "learning_curves.png", "confusion_matrix.png")


def test_titanic(tmp_path, capsys):
    _need("titanic/train.csv")
    m = _run("titanic", tmp_path, "--data-home", str(DATA), "--epochs", "3", "--members", "2",
             "--cv", "2")
    assert {"accuracy", "auc"} <= set(m["test"])
    assert set(m["validation"]) >= {"accuracy", "auc"}
    assert len(m["cv"]["folds"]) == 2 and "accuracy_std" in m["cv"]
    assert "macro avg" in capsys.readouterr().out
    _pngs(tmp_path, "roc_curve.png", "learning_curves.png")


def test_diabetes(tmp_path, capsys):
    m = _run("diabetes", tmp_path, "--epochs", "3", "--members", "2", "--cv", "2")
    assert {"mse", "r2"} <= set(m["test"])
    assert len(m["cv"]["r2_folds"]) == 2
    out = capsys.readouterr().out
    assert "train" in out and "validation" in out and "R²" in out
    _pngs(tmp_path, "learning_curves.png", "predictions.png")


def test_student_performance(tmp_path, capsys):
    _need("student-performance/Student_Performance.csv")
    m = _run("student_performance", tmp_path, "--data-home", str(DATA), "--epochs", "3")
    assert m["epochs_run"] == 3
    assert m["test"]["r2"] > 0.5
    assert "validation" in capsys.readouterr().out
    _pngs(tmp_path, "learning_curves.png", "r2_curve.png")


def test_optimizers(tmp_path):
    m = _run("optimizers", tmp_path, "--epochs", "3")
    assert len(m["test"]) == 3 and all("r2" in v for v in m["test"].values())
    _pngs(tmp_path, "optimizers.png", "learning_curves.png")


def test_missing_dataset_is_reported(tmp_path, capsys):
    module = _load("titanic")
    with pytest.raises(SystemExit) as exc:
        module.run_main(module.main, ["--data-home", str(tmp_path / "nothing"), "--out",
                                      str(tmp_path / "out"), "--quiet"])
    assert exc.value.code == 2
    assert "titanic" in capsys.readouterr().err.lower()

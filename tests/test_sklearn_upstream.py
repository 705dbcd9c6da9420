"""scikit-learn's own MLP test module, run against :mod:`xpnn.sklearn`.

The installed scikit-learn ships ``sklearn/neural_network/tests/test_mlp.py``. This test copies
it into a temporary folder, changes its one import of the estimators to
``from xpnn.sklearn import MLPClassifier, MLPRegressor``, supplies the ``global_random_seed``
fixture (scikit-learn's conftest provides it upstream: 42 unless
``SKLEARN_TESTS_GLOBAL_RANDOM_SEED`` says otherwise) and runs it with pytest in a subprocess
under a timeout. Only the tests that read scikit-learn's private internals are deselected.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sklearn = pytest.importorskip("sklearn")

UPSTREAM = Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
REPLACEMENT = "from xpnn.sklearn import MLPClassifier, MLPRegressor"

#: Tests that call scikit-learn's private methods or read its private optimizer object.
PRIVATE = {
    "test_gradient": "calls the private MLP._loss_grad_lbfgs",
    "test_learning_rate_warmstart": "reads the private MLP._optimizer.learning_rate",
    "test_adaptive_learning_rate": "reads the private MLP._optimizer.learning_rate",
}

CONFTEST = '''
import os

import pytest


def _seeds():
    spec = os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED", "42").strip()
    if spec == "all":
        return list(range(100))
    if "-" in spec:
        low, high = (int(s) for s in spec.split("-"))
        return list(range(low, high + 1))
    return [int(spec)]


@pytest.fixture(params=_seeds())
def global_random_seed(request):
    return request.param
'''

TIMEOUT_S = 900


def test_sklearn_test_mlp_passes(tmp_path):
    if not UPSTREAM.is_file():
        pytest.skip(f"this scikit-learn install has no tests ({UPSTREAM} is missing)")
    source = UPSTREAM.read_text()
    assert source.count(IMPORT) == 1, f"{UPSTREAM} no longer imports the estimators as expected"
    (tmp_path / "test_mlp_xpnn.py").write_text(source.replace(IMPORT, REPLACEMENT))
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    repo = Path(__file__).resolve().parents[1]
    # One BLAS thread: the module fits hundreds of tiny networks, for which thread hand-offs
    # cost more than the matmuls (and a busy machine makes them far worse).
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
                   [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]))
    deselect = " or ".join(PRIVATE)
    cmd = [sys.executable, "-m", "pytest", "test_mlp_xpnn.py", "-q", "-p", "no:cacheprovider",
           "-rfE", "--tb=short", "-k", f"not ({deselect})", "-W",
           "ignore::pytest.PytestUnraisableExceptionWarning"]
    try:
        run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-6000:]
        pytest.fail(f"scikit-learn's test_mlp.py did not finish in {TIMEOUT_S} s:\n{out}")
    out = run.stdout + run.stderr
    assert run.returncode == 0, (f"scikit-learn's test_mlp.py failed on xpnn.sklearn:\n"
                                 f"{out[-20000:]}")
    summary = out.strip().splitlines()[-1]
    assert "passed" in summary and "failed" not in summary and "skipped" not in summary, summary
    assert f"{len(PRIVATE)} deselected" in summary, summary

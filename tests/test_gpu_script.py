"""``benchmarks/gpu.sh`` dry-runs on the CPU in CI's conditions.

A GPU is lent rarely and briefly, so the script must work the first time it runs there. Here a
copy of the repository gets its data the way the GPU machine does (``gpu.sh stage`` copies
MNIST from a ``../shared`` folder into the ignored ``.data/``), the shared folder is then
removed (the GPU machine has only the repository and its carried folders), and the script runs
its dry mode: the same steps, with tiny sizes, the CUDA parts skipped. The files it leaves
under ``$OUT`` are the ones the device tool brings back: at most 8, at most two folders deep,
plain names.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ["bench/configs.json", "bench/configs.md", "bench/log.txt", "bench/sweep.json",
            "bench/sweep.md", "gpu.log", "stream/results.json", "tests.txt"]
LEFT_BEHIND = (".git", ".data", ".whl", ".site", "runs", "out", "__pycache__", ".pytest_cache",
               ".ruff_cache", ".hypothesis", "*.egg-info", "build", "dist", ".venv", ".tox")


def _fake_mnist(folder: Path, n: int = 300):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split, count in (("train", n), ("t10k", n // 5)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        for kind, arr, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
            with gzip.open(folder / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + arr.tobytes())


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_gpu_script_dry_run_layout(tmp_path):
    repo, shared, out = tmp_path / "repo", tmp_path / "shared", tmp_path / "out"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(*LEFT_BEHIND))
    _fake_mnist(shared / "data" / "mnist")
    env = {k: v for k, v in os.environ.items() if k not in ("XPNN_DATA", "PYTHONPATH")}
    env.update(PYTHON=sys.executable, OUT=str(out), GPU_DRY="1")

    staged = subprocess.run(["bash", "benchmarks/gpu.sh", "stage"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=60)
    assert staged.returncode == 0, staged.stdout + staged.stderr
    assert sorted(p.name for p in (repo / ".data" / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    shutil.rmtree(shared)                              # the GPU machine has no ../shared

    proc = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (out / "gpu.log").read_text()

    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == EXPECTED, log
    assert len(files) <= 8
    assert all(len(Path(f).parts) <= 3 for f in files)          # $OUT/a/b/file at most
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for f in files for part in Path(f).parts)

    assert f"MNIST from {repo / '.data'}" in log
    assert "dry run of every step on the CPU" in log
    for step in ("versions", "check-CONFIGS-args", "check-SWEEP-args", "check-EXAMPLE-args",
                 "bench-configs", "tests", "bench-sweep", "example", "stream"):
        assert f"step {step} exit code 0" in log, log
    assert "MNIST: 1 epochs" in log                              # the example trained
    bench_log = (out / "bench" / "log.txt").read_text()
    assert "arguments ok: configs S,M,L; impls xpnn-cupy,torch-cuda,jax-cuda,gemm-cupy" in bench_log
    assert "arguments ok: configs sweep" in bench_log and "example arguments ok" in log
    assert re.search(r"done in \d+s", log)
    assert "stream: numpy median streamed/resident" in log             # the dry run's backend
    stream = json.loads((out / "stream" / "results.json").read_text())
    assert stream["backend"] == "numpy" and len(stream["ratios_streamed_over_resident"]) == 1

    configs = json.loads((out / "bench" / "configs.json").read_text())
    assert configs["complete"] and configs["data"].startswith("mnist train")
    assert set(configs["skipped"]) == {"xpnn-cupy", "torch-cuda", "jax-cuda", "gemm-cupy"}
    assert [(r["config"], r["impl"]) for r in configs["records"]] == [("S", "xpnn-numpy")]
    sweep = json.loads((out / "bench" / "sweep.json").read_text())
    assert [(r["config"], r["impl"]) for r in sweep["records"]] == [("M b256", "xpnn-numpy")]
    assert all("error" not in r for r in configs["records"] + sweep["records"])
    tests = (out / "tests.txt").read_text()
    assert re.search(r"\d+ skipped, \d+ deselected", tests), tests

"""The documentation site: every Python code block of the user guide and the README runs, and
the built site has a reference page for every public name.

* Code blocks: each ```` ```python ```` block of a Markdown page under ``docs/`` and of
  ``README.md`` runs, in order, in one namespace per page and in a fresh temporary folder
  (blocks may write files). Blocks in another language (``bash``, ``text``) are not run. A
  page whose blocks need an optional package that is missing (onnxruntime, h5py...) skips.
* Reference pages: the site is built once with Sphinx (warnings as errors, nitpicky), into a
  temporary folder, unless ``XPNN_DOCS_HTML`` names a site already built from this tree with
  ``python -m sphinx -W -n -b html docs docs/_build/html`` (as ``.ci/run`` does). These tests
  need the ``docs`` extra and skip without it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from _public_api import public_modules

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
GENERATED = {"_build", "api/generated", "gallery", "gallery_src"}
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.S | re.M)


def guide_pages():
    pages = ["../README.md"]
    for path in sorted(DOCS.rglob("*.md")):
        rel = path.relative_to(DOCS).as_posix()
        if not any(rel == g or rel.startswith(g + "/") for g in GENERATED):
            pages.append(rel)
    return pages


def python_blocks(text):
    """The bodies of the page's ```python fences, in order."""
    return [m["body"] for m in FENCE.finditer(text) if m["info"].strip() == "python"]


PAGES = [p for p in guide_pages() if python_blocks((DOCS / p).read_text(encoding="utf-8"))]


def test_fence_parser():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x + 1\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = x + 1\n"]


def test_the_guide_has_code():
    assert {"guide/getting-started.md", "guide/training.md", "guide/backprop.md",
            "index.md"} <= set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_run(page, tmp_path, monkeypatch):
    text = (DOCS / page).read_text(encoding="utf-8")
    for module in re.findall(r"^\s*(?:import|from) (onnxruntime|h5py|zarr|torch)\b", text, re.M):
        pytest.importorskip(module)
        if module == "onnxruntime":
            pytest.importorskip("onnx")  # what model.export writes with
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{Path(page).stem}"}
    for i, block in enumerate(python_blocks(text), 1):
        code = compile(block, f"{page}, code block {i}", "exec")
        exec(code, namespace)  # noqa: S102 - the documentation's own examples


# --- The built site --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    built = os.environ.get("XPNN_DOCS_HTML")
    if built:
        return Path(built)
    for module in ("sphinx", "numpydoc", "myst_parser", "sphinx_gallery", "pydata_sphinx_theme"):
        pytest.importorskip(module)
    from sphinx.cmd.build import build_main

    out = tmp_path_factory.mktemp("html")
    status = build_main(["-W", "-n", "-q", "-b", "html", "-d", str(out / ".doctrees"),
                         str(DOCS), str(out)])
    assert status == 0, "the documentation build failed (warnings are errors)"
    return out


def test_every_public_name_has_a_reference_page(site):
    missing = []
    for module_name, names in public_modules().items():
        module = importlib.import_module(module_name)
        assert (site / "api" / "generated" / f"{module_name}.html").is_file(), module_name
        for name in names:
            page = site / "api" / "generated" / f"{module_name}.{name}.html"
            anchor = f"{module_name}.{name}"
            if inspect.ismodule(getattr(module, name)):  # a submodule: its own listing page
                anchor = f"module-{anchor}"
            if not page.is_file() or f'id="{anchor}"' not in page.read_text(encoding="utf-8"):
                missing.append(f"{module_name}.{name}")
    assert not missing, f"no reference page for {missing}"


def test_every_name_in_xpnn_all_is_covered():
    import xpnn

    documented = set(public_modules()["xpnn"])
    assert set(xpnn.__all__) <= documented


def test_gallery_pages_show_the_saved_figures(site):
    page = (site / "gallery" / "plot_03_mnist.html").read_text(encoding="utf-8")
    assert "mnist_confusion_matrix.png" in page and "fashion_learning_curves.png" in page
    assert (site / "_images" / "mnist_confusion_matrix.png").is_file()


def test_readme_progress_sample_is_what_fit_prints_in_a_pipe(tmp_path):
    """The README shows ``fit(verbose=1)``'s output in a pipe: the quickstart, run with its
    output piped, prints lines of the same layout (durations and digits aside)."""
    import subprocess

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quickstart = next(b for b in python_blocks(readme) if "model.fit(" in b)
    sample = [line for line in readme.splitlines() if line.startswith("Epoch ")]
    assert len(sample) >= 2
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-c", quickstart], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    printed = {line.split(":", 1)[0].split(" - ")[0]: line
               for line in run.stdout.splitlines() if line.startswith("Epoch ")}

    def layout(line):
        return re.sub(r"\d+(\.\d+)?", "N", line)

    for line in sample:
        epoch = line.split(" - ")[0]
        assert epoch in printed, (epoch, run.stdout[-2000:])
        assert layout(printed[epoch]) == layout(line), (printed[epoch], line)
        numbers = [float(v) for v in re.findall(r": (\d+\.\d+)", line)]
        got = [float(v) for v in re.findall(r": (\d+\.\d+)", printed[epoch])]
        assert np.allclose(got, numbers, atol=0.02), (printed[epoch], line)

"""Sphinx configuration of xpnn's documentation.

Build (from the repository root, after ``pip install -e ".[docs]"``)::

    python -m sphinx -W -n -b html docs docs/_build/html

Three parts of the site are generated when the build starts, so they follow the code:

* ``api/generated/``: one listing page per public module and, through autosummary, one page per
  name in that module's ``__all__`` (see :data:`PUBLIC_MODULES`). A name added to ``__all__``
  gets its page at the next build.
* ``gallery_src/``: the scripts of ``examples/`` in sphinx-gallery's format. Their experiments need
  real data and minutes, so the gallery is built with ``plot_gallery=False`` (nothing runs): each
  page shows the script, its docstring and the figures saved in ``docs/figures/`` by its last run.
* ``gallery/``: sphinx-gallery's output from ``gallery_src/``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))

import xpnn  # noqa: E402

project = "xpnn"
author = "the xpnn developers"
copyright = "2026, the xpnn developers"  # noqa: A001
release = xpnn.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "gallery_src", "Thumbs.db", ".DS_Store", "**/GALLERY_HEADER.rst"]
templates_path = ["_templates"]
nitpicky = True

# --- API reference -----------------------------------------------------------------------------

#: The public modules, in the order of the reference, each documented by its ``__all__``; of
#: ``xpnn.fastpath`` only ``explain`` and ``select`` (the rest is the trainers' machinery).
PUBLIC_MODULES = {
    "xpnn": None,
    "xpnn.sklearn": None,
    "xpnn.distributed": None,
    "xpnn.schedules": None,
    "xpnn.datasets": None,
    "xpnn.fastpath": ["explain", "select"],
}

#: Section titles of ``xpnn``'s page, by the submodule that defines a name.
_SECTIONS = {
    "xpnn.model": "Models", "xpnn.builders": "Models", "xpnn.layers": "Layers",
    "xpnn.losses": "Losses", "xpnn.optimizers": "Optimizers", "xpnn.callbacks": "Callbacks",
    "xpnn.checkpoint": "Callbacks", "xpnn.progress": "Callbacks", "xpnn.backend": "Backends",
    "xpnn.errors": "Errors",
}
_ORDER = ["Models", "Layers", "Losses", "Optimizers", "Callbacks", "Backends", "Errors"]


def public_names(module_name: str) -> list[str]:
    """The names documented for ``module_name``: its ``__all__`` (or the listed subset)."""
    chosen = PUBLIC_MODULES[module_name]
    module = importlib.import_module(module_name)
    return list(chosen) if chosen is not None else list(module.__all__)


def _section(module_name: str, name: str, obj) -> str:
    if inspect.ismodule(obj):
        return "Modules"
    if module_name == "xpnn":
        defined = getattr(obj, "__module__", None) or ""
        for prefix, title in _SECTIONS.items():
            if defined == prefix or defined.startswith(prefix + "."):
                return title
        if not (inspect.isclass(obj) or callable(obj)):
            return "Constants"
        return "Other"
    if inspect.isclass(obj):
        return "Exceptions" if issubclass(obj, BaseException) else "Classes"
    if callable(obj):
        return "Functions"
    return "Constants"


def write_api_pages(out: Path) -> list[str]:
    """Write one listing page per public module into ``out``; return the page names."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pages = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        sections: dict[str, list[str]] = {}
        for name in public_names(module_name):
            sections.setdefault(_section(module_name, name, getattr(module, name)), []).append(name)
        order = _ORDER + ["Classes", "Exceptions", "Functions", "Constants", "Other", "Modules"]
        lines = [f"``{module_name}``", "=" * (len(module_name) + 4), "",
                 f".. automodule:: {module_name}", "   :no-members:", "",
                 f".. currentmodule:: {module_name}", ""]
        for title in order:
            names = sections.get(title)
            if not names:
                continue
            lines += [title, "-" * len(title), ""]
            if title == "Modules":
                lines += [f"* :doc:`{module_name}.{n}` (``{module_name}.{n}``)" for n in names]
                lines.append("")
                continue
            lines += [".. autosummary::", "   :toctree: .", "   :nosignatures:", ""]
            lines += [f"   {n}" for n in names]
            lines.append("")
        (out / f"{module_name}.rst").write_text("\n".join(lines), encoding="utf-8")
        pages.append(module_name)
    return pages


API_PAGES = write_api_pages(DOCS / "api" / "generated")

autosummary_generate = True
autosummary_imported_members = True
autosummary_ignore_module_all = False
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()  # tests/test_docstrings.py validates instead

# Names that docstrings mention and that live outside this site (no network at build time, so
# no intersphinx): their roles render as code without a link.
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|scipy|sklearn|torch|cupy|mpi4py|onnx|h5py|zarr|pandas|tqdm)(\..*)?"),
    (r"py:.*", r"(int|float|str|bool|list|tuple|dict|callable|object|None|Exception|"
               r"ValueError|TypeError|RuntimeError|KeyboardInterrupt|Path|os\.PathLike)"),
    # xpnn's implementation modules: docstrings may name them; the reference documents the
    # public names (each page says where a name is defined).
    (r"py:.*", r"xpnn\.(data|layers|losses|optimizers|serialization|flat|export|model|callbacks|"
               r"checkpoint|backend|staging|guard|metrics|progress|builders|errors|_validation|"
               r"training|position|inputs|sources|state|"
               r"datasets\.(idx|titanic|tabular|mnist|_home)|fastpath\.\w+|sklearn\._\w+)(\..*)?"),
    # Labels of scikit-learn's own site, in the docstrings of methods inherited from its mixins
    # (``set_output``).
    (r"std:ref", r"df_output_transform|sphx_glr_auto_examples_.*"),
]

# --- User guide (MyST Markdown) ------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# --- Gallery -----------------------------------------------------------------------------------

#: The order of the gallery, and the figures each script's run saved in docs/figures/
#: (``<prefix>_<figure>.png``; the MNIST script also makes the Fashion-MNIST figures). Scripts of
#: examples/ not listed here follow, with the figures named after them.
GALLERY = {
    "quickstart": ["quickstart"],
    "xor": ["xor"],
    "mnist": ["mnist", "fashion"],
    "titanic": ["titanic"],
    "diabetes": ["diabetes"],
    "student_performance": ["student_performance"],
    "optimizers": ["optimizers"],
    "distributed_mnist": [],
    "run_seeds": [],
}


_DATA_NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}


def gallery_scripts() -> dict[str, list[str]]:
    """Every script of examples/ (helpers starting with ``_`` aside) with its figure prefixes."""
    scripts = {name: prefixes for name, prefixes in GALLERY.items()
               if (ROOT / "examples" / f"{name}.py").is_file()}
    for path in sorted((ROOT / "examples").glob("*.py")):
        if not path.name.startswith("_"):
            scripts.setdefault(path.stem, [path.stem])
    return scripts


def _rst_title(text: str) -> list[str]:
    return [text, "=" * len(text)]


def _literal_commands(lines: list[str]) -> list[str]:
    """Mark the docstring's indented command lines as a shell block (plain indentation would
    be a block quote in reStructuredText)."""
    out: list[str] = []
    for i, line in enumerate(lines):
        after_blank = i == 0 or not lines[i - 1].strip()
        paragraph = [x for x in out if x.strip()]
        literal = bool(paragraph) and paragraph[-1].rstrip().endswith("::")
        if line.startswith("    ") and after_blank and not literal:
            out += [".. code-block:: bash", ""]
        out.append(line)
    return out


def write_gallery_sources(out: Path) -> None:
    """Rewrite each example as a sphinx-gallery script: the docstring becomes the page's text
    (its first line the title) followed by the saved figures; the code is unchanged."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "GALLERY_HEADER.rst").write_text("\n".join(_rst_title("Gallery") + [
        "",
        "The paper's experiments, one script each in ``examples/``. They need the real data sets",
        "and minutes of training, so the site does not run them: each page shows the script and",
        "the figures its last run saved in ``docs/figures/`` (the numbers are in",
        ":doc:`/results`). Run one with ``python examples/NAME.py`` after",
        "``pip install -e \".[examples]\"``.", ""]), encoding="utf-8")
    figures = sorted((DOCS / "figures").glob("*.png"))
    for number, (name, prefixes) in enumerate(gallery_scripts().items(), 1):
        source = (ROOT / "examples" / f"{name}.py").read_text(encoding="utf-8")
        tree = ast.parse(source)
        doc = ast.get_docstring(tree, clean=True)
        body = source.splitlines()[tree.body[0].end_lineno if doc else 0:]
        summary, _, rest = (doc or name).partition("\n")
        title, colon, tagline = summary.strip().rstrip(".").partition(": ")
        shown = [(p, f) for p in prefixes for f in figures if f.stem.startswith(p + "_")]
        header = _rst_title(title) + [""]
        if colon:
            header += [tagline[:1].upper() + tagline[1:] + ".", ""]
        header += _literal_commands(rest.strip().splitlines()) + [""]
        if shown:
            header += ["Figures saved by the last run:", ""]
            for prefix, fig in shown:
                caption = fig.stem[len(prefix) + 1:].replace("_", " ")
                if len(prefixes) > 1:  # say which data set
                    caption = f"{_DATA_NAMES.get(prefix, prefix)}: {caption}"
                caption = caption[:1].upper() + caption[1:]
                header += [f".. figure:: /figures/{fig.name}", f"   :alt: {caption}",
                           "   :width: 70%", "", f"   {caption}", ""]
        thumb = [f"# sphinx_gallery_thumbnail_path = 'figures/{shown[0][1].name}'"] if shown else []
        text = '"""\n' + "\n".join(header).replace('"""', "'''") + '\n"""\n'
        text += "\n".join(thumb + body) + "\n"
        (out / f"plot_{number:02d}_{name}.py").write_text(text, encoding="utf-8")
    common = ROOT / "examples" / "_common.py"
    shutil.copy(common, out / "_common.py")


write_gallery_sources(DOCS / "gallery_src")
shutil.rmtree(DOCS / "gallery", ignore_errors=True)  # sphinx-gallery's output, made anew

sphinx_gallery_conf = {
    "examples_dirs": "gallery_src",
    "gallery_dirs": "gallery",
    "plot_gallery": "False",
    "filename_pattern": r"^$",  # nothing is executed (plot_gallery is off anyway)
    "ignore_pattern": r"_common\.py",
    "within_subsection_order": "FileNameSortKey",  # the order of GALLERY
    "download_all_examples": False,
    "doc_module": ("xpnn",),
    "reference_url": {"xpnn": None},
    "remove_config_comments": True,
    "show_memory": False,
    "show_signature": False,
    "min_reported_time": 10**9,
    "write_computation_times": False,
}

# --- HTML ----------------------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"xpnn {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navbar_end": ["theme-switcher", "navbar-icon-links"],
    "secondary_sidebar_items": ["page-toc"],
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False


# --- Resolving short names ---------------------------------------------------------------------

_BARE_ROLE = re.compile(r":(meth|attr):`(\w+)`")


def qualify_class_roles(app, what, name, obj, options, lines):
    """In a class docstring, ``:meth:`lr``` means that class's method: qualify it, so the link
    also resolves in the summary tables of the module pages (which have no class context)."""
    if what != "class":
        return
    lines[:] = [_BARE_ROLE.sub(lambda m: f":{m[1]}:`~{name}.{m[2]}`", line) for line in lines]


def resolve_public_name(app, env, node, contnode):
    """Resolve a Python reference such as ``Sequential.fit`` through the top-level ``xpnn``
    namespace, where every public name is documented."""
    if node.get("refdomain") != "py" or node["reftarget"].startswith("xpnn."):
        return None
    domain = env.get_domain("py")
    target = "xpnn." + node["reftarget"].lstrip("~.")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], target, node,
                               contnode)


def setup(app):
    app.connect("autodoc-process-docstring", qualify_class_roles)
    app.connect("missing-reference", resolve_public_name)

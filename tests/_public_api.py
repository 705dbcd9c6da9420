"""The public API as the documentation site defines it (``docs/conf.py``): the tests of the
docs and of the docstrings check the same names."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def public_modules() -> dict:
    """``{module name: [public names]}`` from ``docs/conf.py``'s ``PUBLIC_MODULES``."""
    sys.path.insert(0, str(DOCS))
    try:
        conf = importlib.import_module("conf")
    finally:
        sys.path.remove(str(DOCS))
    return {name: conf.public_names(name) for name in conf.PUBLIC_MODULES}

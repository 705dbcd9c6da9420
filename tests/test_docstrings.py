"""The public API's docstrings: every public function, class and method has one, numpydoc's
validation passes on it, and every example in xpnn's docstrings runs (doctest).

What is public is what the documentation site documents: the names in the ``__all__`` of each
module in ``docs/conf.py``'s ``PUBLIC_MODULES``, and the public methods of those classes that
xpnn defines (a method that overrides a documented one inherits its docstring, as on the site).

numpydoc checks (see numpydoc's validation docs for the codes): GL08 the object has no
docstring; PR01 a parameter of the signature is not documented; PR02 a documented parameter is
not in the signature; PR03 parameters documented in another order.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from pathlib import Path

import numpy as np
import pytest
from _public_api import public_modules

import xpnn

DOCS = Path(__file__).resolve().parents[1] / "docs"
CHECKS = {"GL08", "PR01", "PR02", "PR03"}

def _members(cls):
    """Public methods and properties xpnn defines on ``cls`` or its xpnn bases."""
    names = []
    for klass in cls.__mro__:
        if not (getattr(klass, "__module__", "") or "").startswith("xpnn"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in names:
                continue
            if inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod,
                                                               property)):
                names.append(name)
    return names


def _defined_by(cls, name):
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return cls


def public_objects():
    """``(path, object)`` for every public class, function and method, each object once,
    under the public path of the class that defines it where that class is public."""
    modules = public_modules()
    public_path = {}
    entries = []
    for module_name, names in modules.items():
        module = importlib.import_module(module_name)
        for name in names:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                public_path.setdefault(obj, f"{module_name}.{name}")
            if inspect.isclass(obj) or inspect.isfunction(obj):
                entries.append((f"{module_name}.{name}", obj))
    seen = set()
    out = []
    for path, obj in entries:
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        out.append((path, obj))
        if not inspect.isclass(obj):
            continue
        for member in _members(obj):
            owner = _defined_by(obj, member)
            raw = vars(owner)[member]
            key = ("member", id(raw))
            if key in seen:
                continue
            seen.add(key)
            out.append((f"{public_path.get(owner, path)}.{member}", getattr(obj, member)))
    return out


def _inherits_docstring(path, obj):
    """A method without a docstring of its own that overrides a documented base method."""
    func = obj.fget if isinstance(obj, property) else obj
    return not getattr(func, "__doc__", None) and bool(inspect.getdoc(func))


def validation_errors(path):
    numpydoc_validate = pytest.importorskip("numpydoc.validate")
    result = numpydoc_validate.validate(path)
    return [f"{code}: {message}" for code, message in result["errors"] if code in CHECKS]


def _params(items):
    return [pytest.param(name, id=name) for name in items]


OBJECTS = dict(public_objects())


def test_public_api_was_found():
    assert {"xpnn.Sequential", "xpnn.Dense.forward", "xpnn.sklearn.MLPClassifier",
            "xpnn.schedules.CosineDecay", "xpnn.fastpath.explain"} <= set(OBJECTS)


@pytest.mark.parametrize("path", _params(OBJECTS))
def test_numpydoc_validation(path):
    obj = OBJECTS[path]
    if _inherits_docstring(path, obj):
        return  # documented by the base method it overrides, as on the site
    errors = validation_errors(path)
    assert not errors, f"{path}:\n" + "\n".join(errors)


# --- Docstring examples -------------------------------------------------------------------------

def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    names = ["xpnn"] + [m.name for m in pkgutil.walk_packages(xpnn.__path__, "xpnn.")]
    cases = {}
    for name in sorted(names):
        try:
            module = importlib.import_module(name)
        except ImportError:  # a module of an optional dependency (CuPy...) that is missing
            continue
        for test in finder.find(module, name):
            if test.examples:
                cases.setdefault(test.name, test)
    return cases


DOCTESTS = _doctests()


def test_docstring_examples_were_found():
    assert {"xpnn", "xpnn.backend", "xpnn.builders.mlp"} <= set(DOCTESTS)


@pytest.mark.parametrize("name", _params(DOCTESTS))
def test_docstring_example(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    test = DOCTESTS[name]
    test.globs = dict(test.globs)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    with np.printoptions(legacy=False):
        result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)

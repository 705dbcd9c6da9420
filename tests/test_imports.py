"""Every import between xpnn's modules points one way: no cycles, imports inside functions
included (errors and backend at the bottom; layers, losses, optimizers, callbacks above them;
the fast trainers above those; the model above them; the estimators on top)."""

from __future__ import annotations

import ast
from pathlib import Path

import xpnn

PACKAGE = Path(xpnn.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(current: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_graph() -> dict[str, set[str]]:
    """``{module: {xpnn modules it imports}}``, from every import statement in the source."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.module, node.level)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def _is_parent_package(a: str, b: str) -> bool:
    """An ``__init__`` re-exporting its own submodules is not an edge back up."""
    return b.startswith(a + ".")


def find_cycle(graph):
    """A list of modules forming a cycle, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if _is_parent_package(node, nxt) or _is_parent_package(nxt, node):
                continue
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_between_xpnn_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_bottom_modules_import_nothing_of_xpnn_above_them():
    graph = import_graph()
    assert graph["xpnn.errors"] == set()
    assert graph["xpnn.backend"] <= {"xpnn.errors"}
    for low in ("xpnn.layers.dense", "xpnn.losses", "xpnn.optimizers.adam", "xpnn.callbacks",
                "xpnn.fastpath._flat"):
        assert "xpnn.model" not in graph[low], low
    assert "xpnn.sklearn" not in set().union(*(v for k, v in graph.items() if k != "xpnn"))

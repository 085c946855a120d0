"""The engine's shape: no import cycle inside it, no import hidden in a function, no Context,
and no module over the size limit (issue 15: one per-site cycle, explicit dependencies)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "megarun" / "engine"
MAX_LINES = 450


def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(encoding="utf-8"))
            for path in sorted(ENGINE.glob("*.py")) if path.stem != "__init__"}


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module:
        names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        return names
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return []


def _engine_imports(tree: ast.Module) -> set[str]:
    """The engine modules a module imports, wherever (an import inside a function that only
    hides a cycle is still one)."""
    found = set()
    for node in ast.walk(tree):
        for name in _imported(node):
            parts = name.split(".")
            if parts[:2] == ["megarun", "engine"] and len(parts) > 2:
                found.add(parts[2])
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of the graph, or []."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_the_engine_has_no_import_cycle() -> None:
    graph = {name: _engine_imports(tree) & set(_modules()) for name, tree in _modules().items()}
    assert _cycle(graph) == []


def test_the_engine_imports_nothing_inside_a_function() -> None:
    hidden = []
    for name, tree in _modules().items():
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                hidden += [f"{name}.{function.name}: {imported}" for node in ast.walk(function)
                           for imported in _imported(node)[:1]]
    assert hidden == []


def test_the_engine_takes_its_dependencies_not_a_context() -> None:
    users = [name for name, tree in _modules().items()
             if any("megarun.homehost.context" in _imported(node) for node in ast.walk(tree))]
    assert users == []


def test_no_engine_module_is_over_the_size_limit() -> None:
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines())
             for path in ENGINE.glob("*.py")}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}

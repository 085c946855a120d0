"""The campaign, suites and archive wings take what they need as arguments: none imports the
CLI's composition root (megarun.homehost.context), none hides an import inside a function, and
their dependencies point one way: archive uses suites and campaign, suites uses campaign."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

WINGS = ("campaign", "suites", "archive")
#: What each wing must not import (a higher wing: the arrows point the other way).
HIGHER = {"campaign": ("megarun.suites", "megarun.archive"), "suites": ("megarun.archive",),
          "archive": ()}
#: Function-level imports that stay, each for a reason that still holds.
KEPT_LOCAL = {("campaign/joblogs.py", "megarun.transport.ssh.transport")}  # paramiko: remote logs only


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, inside a function) for every import of a source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    local: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local.update(id(inner) for inner in ast.walk(node) if inner is not node)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in local))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, id(node) in local) for alias in node.names)
    return found


def _modules(wing: str) -> list[Path]:
    return sorted((REPO / "megarun" / wing).glob("*.py"))


def test_no_wing_imports_the_context() -> None:
    offenders = [f"{path.relative_to(REPO)}" for wing in WINGS for path in _modules(wing)
                 for module, _ in _imports(path) if module == "megarun.homehost.context"]
    assert offenders == []


def test_wings_import_no_higher_wing() -> None:
    offenders = [f"{path.relative_to(REPO)} imports {module}" for wing in WINGS
                 for path in _modules(wing) for module, _ in _imports(path)
                 if module.startswith(HIGHER[wing])]
    assert offenders == []


def test_wings_hide_no_imports_in_functions() -> None:
    offenders = []
    for wing in WINGS:
        for path in _modules(wing):
            where = str(path.relative_to(REPO / "megarun"))
            offenders.extend(f"{where}: {module}" for module, local in _imports(path)
                             if local and (where, module) not in KEPT_LOCAL)
    assert offenders == []


def test_no_wing_module_passes_the_size_limit() -> None:
    sizes = {str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
             for wing in WINGS for path in _modules(wing)}
    assert {name: lines for name, lines in sizes.items() if lines > 450} == {}

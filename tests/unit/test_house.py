"""The house's shape (docs/architecture.md): no module of megarun/ imports itself back through
others, function-level imports included (grimp reads every import statement), and no module
grows past what one reader holds in mind."""

from __future__ import annotations

from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[2] / "megarun"
#: A module longer than this is split by subject (issue 15: about 500 lines).
MAX_LINES = 500


def strongly_connected(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that import each other in a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    imported = graph.find_modules_directly_imported_by(child) & modules
                    work.append((child, iter(sorted(imported))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph.find_modules_directly_imported_by(node):
                    groups.append(sorted(group))
    return groups


def test_strongly_connected_finds_a_circle() -> None:
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=a, imported=b)
    assert strongly_connected(graph, {"p.a", "p.b", "p.c", "p.d"}) == [["p.a", "p.b", "p.c"]]


def test_no_import_cycle_in_megarun() -> None:
    graph = grimp.build_graph("megarun", cache_dir=None)
    # A package's __init__ that re-exports its modules is not a circle of its own making.
    modules = {m for m in graph.modules if m.startswith("megarun.")}
    circles = strongly_connected(graph, modules)
    described = []
    for circle in circles:
        ties = [f"{a} -> {b}" for a in circle for b in circle
                if b in graph.find_modules_directly_imported_by(a)]
        described.append("; ".join(ties))
    assert not circles, "import cycles in megarun/: " + " || ".join(described)


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {path.relative_to(PACKAGE.parent): len(path.read_text().splitlines())
             for path in PACKAGE.rglob("*.py")}
    over = sorted(f"{path} ({lines})" for path, lines in sizes.items() if lines > MAX_LINES)
    assert not over, f"modules over {MAX_LINES} lines: {', '.join(over)}"


def test_the_module_map_names_every_module() -> None:
    """docs/architecture.md lists each module under its wing's heading (transport/ssh/ under
    transport's)."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    sections = dict(part.split("\n", 1) for part in doc.split("\n### ")[1:])
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if path.name == "__init__.py" or len(parts) == 1:
            continue
        if f"`{path.name}`" not in sections.get(parts[0], ""):
            missing.append("/".join(parts))
    assert not missing, f"docs/architecture.md does not list: {', '.join(missing)}"

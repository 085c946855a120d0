"""State and status names are spelled once, in megarun/core/states.py (and the agent's own list).

Anywhere else a name written as a string ("READY", or 'COMPLETED' inside an SQL string) would
silently go stale when a state is renamed; the enums (and bind parameters or f-strings built
from them, for SQL) cannot. This scans every module of megarun/ for string constants that are a
state or status name, or hold one in SQL quotes, and names each file:line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from megarun.agent import states as agent_states
from megarun.core.states import JobState, JobStatus

ROOT = Path(__file__).resolve().parents[2] / "megarun"
#: The two places where the names are written down.
HOMES = {ROOT / "core" / "states.py", ROOT / "agent" / "states.py"}
#: The batch systems' own job states (Slurm's RUNNING, COMPLETED, TIMEOUT), which the
#: schedulers map to their BatchState; they import nothing of megarun's job states.
FOREIGN = ROOT / "schedulers"
NAMES = frozenset(s.value for s in JobState) | frozenset(s.value for s in JobStatus)
#: A name quoted inside a longer string: SQL (`state = 'READY'`) or JSON text.
QUOTED = re.compile("['\"](" + "|".join(sorted(map(re.escape, NAMES))) + ")['\"]")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes: prose may name a state."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def state_literals(path: Path, where: str) -> list[str]:
    """`where:line: text` for each string constant of `path` that spells a state or status."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if id(node) in skip:
            continue
        text = node.value
        if text in NAMES or QUOTED.search(text):
            found.append(f"{where}:{node.lineno}: {text!r}")
    return found


def test_no_state_or_status_name_is_spelled_outside_its_home() -> None:
    found = [hit for path in sorted(ROOT.rglob("*.py"))
             if path not in HOMES and FOREIGN not in path.parents
             for hit in state_literals(path, str(path.relative_to(ROOT.parent)))]
    assert not found, "state/status names spelled as strings:\n" + "\n".join(found)


def test_the_scan_sees_plain_sql_and_fstring_literals(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""A READY job."""\na = "READY"\n'
                      'b = "SELECT id FROM job WHERE state = \'KILLED\'"\n'
                      'c = f"x {a} IN (\'PASS\', ?)"\nd = "Ready to go"\n', encoding="utf-8")
    hits = state_literals(sample, "sample.py")
    assert [h.split(":")[1] for h in hits] == ["2", "3", "4"]


def test_the_agents_own_state_list_equals_core_states() -> None:
    assert agent_states.JOB_STATES == tuple(s.value for s in JobState)
    # in rank order too: the agent's rules take the worst status by its place in this list
    assert agent_states.JOB_STATUSES == tuple(s.value for s in JobStatus)

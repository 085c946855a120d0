"""The CLI's `job` commands, `status` and `runs ls` read and make jobs through megarun.api,
the layer the Python API stands on, not beside it: their modules call none of the wing
functions megarun.api wraps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

#: Wing functions the CLI reaches only through megarun.api.jobs and megarun.api.runs.
WRAPPED = {"iter_jobs", "list_jobs", "count_jobs", "count_by_state", "get_job", "create_jobs",
           "write_job_logs", "job_log_excerpts", "list_runs", "stale_in_run",
           "stale_tests_by_run", "read_area_definitions", "job_steps", "get_run"}


def called_names(path: Path) -> set[str]:
    """Every name a module calls or imports (`f(...)`, `mod.f(...)`, `from m import f`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", ["job_cmd.py", "run_cmd.py"])
def test_the_cli_reads_jobs_and_runs_through_the_api(module: str) -> None:
    path = REPO / "megarun" / "cli" / module
    assert called_names(path) & WRAPPED == set()

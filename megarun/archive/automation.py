"""The area's rules, applied by every sync cycle after the sites: finish or undo the moves a
crash cut short, then `[archive] auto-reduce` and the `[[auto-migrate]]` rules of megarun.toml.

Each step is reported on its own line; one that fails is reported and never stops the others,
nor the cycle.
"""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Callable
from typing import Any

from peewee import OperationalError

from megarun.db.connection import translate_operational_error
from megarun.errors import MegarunError
from megarun.homehost.context import Context

FAILED = "failed: "


def apply_rules(ctx: Context) -> list[str]:
    """Run recovery and the area's rules; return one line per thing done or failed (a failure
    starts with "failed: ")."""
    lines: list[str] = []
    for name, step in _steps():
        lines.extend(_run_step(name, step, ctx))
    return lines


def rules_failed(lines: list[str]) -> bool:
    """Whether a line of `apply_rules` reports a failure."""
    return any(line.startswith(FAILED) for line in lines)


def _steps() -> list[tuple[str, Callable[[Context], list[str]]]]:
    return [("archive recovery", _archive_recovery), ("migrate recovery", _migrate_recovery),
            ("archive auto-reduce", _archive_rule), ("auto-migrate", _auto_migrate)]


def _run_step(name: str, step: Callable[[Context], list[str]], ctx: Context) -> list[str]:
    try:
        return step(ctx)
    except MegarunError as exc:
        return [f"{FAILED}{name}: {exc}"]
    except (OperationalError, sqlite3.OperationalError) as exc:
        return [f"{FAILED}{name}: {translate_operational_error(exc)}"]


def _archive_module() -> Any:
    """The archive service, when this megarun has it."""
    try:
        return importlib.import_module("megarun.archive.completed")
    except ModuleNotFoundError:
        return None


def _archive_recovery(ctx: Context) -> list[str]:
    archive = _archive_module()
    recover = getattr(archive, "recover", None)
    done: list[str] = recover(ctx) if recover is not None else []
    return [f"archive recovery: {line}" for line in done]


def _migrate_recovery(ctx: Context) -> list[str]:
    from megarun.archive.migrate import recover_migrations

    return recover_migrations(ctx)


def _archive_rule(ctx: Context) -> list[str]:
    archive = _archive_module()
    apply_rule = getattr(archive, "apply_rule", None)
    result = apply_rule(ctx) if apply_rule is not None else None
    if result is None:
        return []
    lines = [f"archive recovery: {line}" for line in getattr(result, "recovered", [])]
    moved = getattr(result, "moved", [])
    if moved:
        jobs = getattr(result, "jobs", 0)
        lines.append(f"archive auto-reduce: {len(moved)} run(s), {jobs} job(s) moved into "
                     "completed-runs.db")
    return lines


def _auto_migrate(ctx: Context) -> list[str]:
    if not ctx.area.config.auto_migrate:
        return []
    from megarun.archive.migrate import apply_auto_migrate

    lines = []
    for result in apply_auto_migrate(ctx):
        if result.error:
            lines.append(f"{FAILED}auto-{result.summary()}")
        elif result.moved or result.refused or result.recovered:
            lines.append(f"auto-{result.summary()}")
    return lines

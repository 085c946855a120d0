"""The area's rules, applied by every sync cycle after the sites: finish or undo the moves a
crash cut short, then `[archive] auto-reduce` and the `[[auto-migrate]]` rules of megarun.toml.

Each step is reported on its own line; one that fails is reported and never stops the others,
nor the cycle.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from peewee import OperationalError

from megarun.archive.completed import apply_rule, recover
from megarun.archive.migrate import apply_auto_migrate, recover_migrations
from megarun.archive.runselect import RunStore
from megarun.db.connection import translate_operational_error
from megarun.errors import MegarunError

FAILED = "failed: "


def apply_rules(store: RunStore) -> list[str]:
    """Run recovery and the area's rules; return one line per thing done or failed (a failure
    starts with "failed: ")."""
    lines: list[str] = []
    for name, step in _steps():
        lines.extend(_run_step(name, step, store))
    return lines


def rules_failed(lines: list[str]) -> bool:
    """Whether a line of `apply_rules` reports a failure."""
    return any(line.startswith(FAILED) for line in lines)


def _steps() -> list[tuple[str, Callable[[RunStore], list[str]]]]:
    return [("archive recovery", _archive_recovery), ("migrate recovery", recover_migrations),
            ("archive auto-reduce", _archive_rule), ("auto-migrate", _auto_migrate)]


def _run_step(name: str, step: Callable[[RunStore], list[str]], store: RunStore) -> list[str]:
    try:
        return step(store)
    except MegarunError as exc:
        return [f"{FAILED}{name}: {exc}"]
    except (OperationalError, sqlite3.OperationalError) as exc:
        return [f"{FAILED}{name}: {translate_operational_error(exc)}"]


def _archive_recovery(store: RunStore) -> list[str]:
    return [f"archive recovery: {line}" for line in recover(store)]


def _archive_rule(store: RunStore) -> list[str]:
    result = apply_rule(store)
    if result is None:
        return []
    lines = [f"archive recovery: {line}" for line in result.recovered]
    if result.moved:
        lines.append(f"archive auto-reduce: {len(result.moved)} run(s), {result.jobs} job(s) "
                     "moved into completed-runs.db")
    return lines


def _auto_migrate(store: RunStore) -> list[str]:
    if not store.area.config.auto_migrate:
        return []
    lines = []
    for result in apply_auto_migrate(store):
        if result.error:
            lines.append(f"{FAILED}auto-{result.summary()}")
        elif result.moved or result.refused or result.recovered:
            lines.append(f"auto-{result.summary()}")
    return lines

"""STALE: whether a run's COMPLETED results still match what defined them.

A suite job's result is defined by its test.toml (TestDef.definition) and by the megarun.toml
variables that reach its steps: `[default]` and the `[targets."..."]` sections matching the
run's target, less those the target's keys, the test's `env`, its item variables or megarun's
own variables override. A run keeps, per test, the hash of both (run_test.definition_hash) as
it last used them. A result whose test's hash changed is STALE.

`run` and `rerun` write the mark (prepare_run); `status`, `runs ls` and `runs export` compute
it from the current files, once per call, and show it without writing (they also run where the
database is a read-only mirror).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.suites.definition import TestDef, load_tests
from megarun.suites.targets import target_variables

#: Variables megarun sets after the target's: a megarun.toml variable of one of these names
#: never reaches a step, so changing it changes no result.
MEGARUN_VARIABLES = frozenset({
    "MEGARUN_TARGET", "MEGARUN_RUNNAME", "MEGARUN_TEST", "MEGARUN_ITEMPATH", "MEGARUN_RUN_DIR",
    "MEGARUN_JOB_ID", "MEGARUN_ATTEMPT", "MEGARUN_WORKDIR", "OMP_NUM_THREADS",
})


@dataclass(frozen=True)
class Definition:
    """What defines one test's results in one run: its hash, and the text kept in run_test."""

    hash: str
    legacy_hash: str  # the test.toml alone: what runs made before variables counted stored
    variables: dict[str, str]

    def text(self, test: TestDef) -> str:
        return json.dumps({**test.definition(), "variables": self.variables}, sort_keys=True)


def seen_variables(variables: Mapping[str, str], keys: Iterable[str],
                   test: TestDef) -> dict[str, str]:
    """The megarun.toml variables that reach the steps of `test` (see the module docstring)."""
    hidden = set(keys) | set(test.env) | set(test.items) | set(test.itemstable) | MEGARUN_VARIABLES
    return {name: value for name, value in sorted(variables.items()) if name not in hidden}


def definition_of(test: TestDef, variables: Mapping[str, str], keys: Iterable[str]) -> Definition:
    """The definition of `test`'s results under the target's `variables`."""
    seen = seen_variables(variables, keys, test)
    legacy = test.definition_hash()
    text = json.dumps({"test": legacy, "variables": seen}, sort_keys=True, separators=(",", ":"))
    return Definition(hashlib.sha256(text.encode("utf-8")).hexdigest(), legacy, seen)


def current_definitions(tests: Mapping[str, TestDef], variables: Mapping[str, str],
                        keys: Iterable[str]) -> dict[str, Definition]:
    """Every test's definition, hashed once."""
    key_list = list(keys)
    return {name: definition_of(test, variables, key_list) for name, test in tests.items()}


def has_changed(stored_hash: str, current: Definition) -> bool:
    """True when a stored hash no longer matches the test's current definition.

    A hash of the test.toml alone was stored before megarun.toml variables counted: it still
    matches while the test.toml is unchanged (the next `run` stores the full hash), so an
    upgrade never turns every result STALE.
    """
    return stored_hash not in (current.hash, current.legacy_hash)


def stored_definitions(db: SqliteDatabase, run_id: int) -> dict[str, tuple[str, str]]:
    """Per test of the run: (hash, definition text) as the run last used them."""
    rows = db.execute_sql("SELECT test, definition_hash, definition FROM run_test "
                          "WHERE run_id = ?", (run_id,)).fetchall()
    return {test: (digest, text) for test, digest, text in rows}


def why_changed(stored_text: str, test: TestDef, current: Definition) -> str:
    """What changed, in the words of an item's message: its test.toml, variables, or both."""
    try:
        old: dict[str, Any] = json.loads(stored_text)
    except ValueError:
        return "its definition changed"
    old_variables = old.pop("variables", None)
    parts = []
    if old != test.definition():
        parts.append(f"its {test.path.parent.name}/test.toml changed")
    if isinstance(old_variables, dict) and old_variables != current.variables:
        names = sorted(n for n in set(old_variables) | set(current.variables)
                       if old_variables.get(n) != current.variables.get(n))
        parts.append(f"megarun.toml variable(s) {', '.join(names)} changed")
    return " and ".join(parts) if parts else "its definition changed"


def changed_tests(stored: Mapping[str, tuple[str, str]], tests: Mapping[str, TestDef],
                  current: Mapping[str, Definition]) -> dict[str, str]:
    """The run's tests whose definition changed, each with why (a test no longer in the area
    is not judged: nothing defines it any more)."""
    return {name: why_changed(text, tests[name], current[name])
            for name, (digest, text) in stored.items()
            if name in current and has_changed(digest, current[name])}


@dataclass(frozen=True)
class AreaDefinitions:
    """The area's tests and megarun.toml variables, read once per command."""

    tests: dict[str, TestDef]
    raw_config: dict[str, Any]
    keys: tuple[str, ...]
    origin: str

    def for_target(self, target: str) -> dict[str, Definition]:
        variables = target_variables(self.raw_config, target, self.origin)
        return current_definitions(self.tests, variables, self.keys)


def read_area_definitions(tests_dir: Path, raw_config: dict[str, Any], keys: Iterable[str],
                          config_path: Path) -> AreaDefinitions:
    """Load every test.toml once (ConfigError when one, or a variables section, is invalid)."""
    target_variables(raw_config, "", str(config_path))  # checks every section, whatever matches
    return AreaDefinitions(load_tests(tests_dir), raw_config, tuple(keys), str(config_path))


def stale_in_run(db: SqliteDatabase, run_id: int, target: str,
                 area: AreaDefinitions) -> dict[str, str]:
    """The tests of one run whose COMPLETED results are STALE now, each with why."""
    stored = stored_definitions(db, run_id)
    if not stored:
        return {}
    return changed_tests(stored, area.tests, area.for_target(target))


def stale_tests_by_run(db: SqliteDatabase, targets: Mapping[int, str],
                       area: AreaDefinitions) -> dict[int, set[str]]:
    """Per run (id -> target given), the tests whose results are STALE now: one query over
    run_test, each target's definitions hashed once."""
    by_target: dict[str, dict[str, Definition]] = {}
    found: dict[int, set[str]] = {}
    rows = db.execute_sql("SELECT run_id, test, definition_hash FROM run_test").fetchall()
    for run_id, test, digest in rows:
        target = targets.get(run_id)
        if target is None or test not in area.tests:
            continue
        if target not in by_target:
            by_target[target] = area.for_target(target)
        if has_changed(digest, by_target[target][test]):
            found.setdefault(run_id, set()).add(test)
    return found

"""STALE: whether a run's COMPLETED results still match what defined them.

A suite job's result is defined by its test.toml (TestDef.definition) and by the megarun.toml
variables that reach its steps: `[default]` and the `[targets."..."]` sections matching the
run's target, less those the target's keys, the test's `env`, its item variables or megarun's
own variables override. A run keeps, per test, the hash of both (run_test.definition_hash) and
the definition itself with the digest of the test.toml bytes it came from. A result whose
test's hash changed is STALE.

`run` and `rerun` write the mark (prepare_run); `status`, `runs ls` and `runs export` work it
out from the current files once per call and show it without writing (they also run where the
database is a read-only mirror). They parse only the test.toml files whose bytes changed since
the run stored them: the others' definitions are the stored ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.errors import ConfigError
from megarun.suites.definition import TEST_FILE, TestDef, load_test
from megarun.suites.targets import target_variables

#: Variables megarun sets after the target's: a megarun.toml variable of one of these names
#: never reaches a step, so changing it changes no result.
MEGARUN_VARIABLES = frozenset({
    "MEGARUN_TARGET", "MEGARUN_RUNNAME", "MEGARUN_TEST", "MEGARUN_ITEMPATH", "MEGARUN_RUN_DIR",
    "MEGARUN_JOB_ID", "MEGARUN_ATTEMPT", "MEGARUN_WORKDIR", "OMP_NUM_THREADS",
})
#: Keys run_test.definition holds besides the test's own definition.
_EXTRA_KEYS = ("variables", "source")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Definition:
    """What defines one test's results in one run."""

    hash: str
    legacy_hash: str  # the test.toml alone: what runs made before variables counted stored
    variables: dict[str, str]  # the megarun.toml variables its steps see
    fields: dict[str, Any]  # TestDef.definition()
    source: str  # sha256 of the test.toml bytes

    def text(self) -> str:
        """What run_test.definition keeps."""
        return json.dumps({**self.fields, "variables": self.variables, "source": self.source},
                          sort_keys=True)


def seen_variables(variables: Mapping[str, str], keys: Iterable[str],
                   fields: Mapping[str, Any]) -> dict[str, str]:
    """The megarun.toml variables that reach the steps of the test defined by `fields`."""
    hidden = (set(keys) | set(fields["env"]) | set(fields["items"]) | set(fields["itemstable"])
              | MEGARUN_VARIABLES)
    return {name: value for name, value in sorted(variables.items()) if name not in hidden}


def definition_from(fields: dict[str, Any], source: str, variables: Mapping[str, str],
                    keys: Iterable[str]) -> Definition:
    """The Definition of a test's resolved `fields` under the target's `variables`."""
    legacy = _sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")))
    seen = seen_variables(variables, keys, fields)
    combined = _sha256(json.dumps({"test": legacy, "variables": seen}, sort_keys=True,
                                  separators=(",", ":")))
    return Definition(combined, legacy, seen, fields, source)


def definition_of(test: TestDef, variables: Mapping[str, str], keys: Iterable[str]) -> Definition:
    """The definition of `test`'s results under the target's `variables`."""
    return definition_from(test.definition(), test.source, variables, keys)


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


def _stored_parts(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def why_changed(stored_text: str, name: str, current: Definition) -> str:
    """What changed, in the words of an item's message: its test.toml, variables, or both."""
    old = _stored_parts(stored_text)
    old_variables = old.get("variables")
    parts = []
    if old and {k: v for k, v in old.items() if k not in _EXTRA_KEYS} != current.fields:
        parts.append(f"its {name}/{TEST_FILE} changed")
    if isinstance(old_variables, dict) and old_variables != current.variables:
        names = sorted(n for n in set(old_variables) | set(current.variables)
                       if old_variables.get(n) != current.variables.get(n))
        parts.append(f"megarun.toml variable(s) {', '.join(names)} changed")
    return " and ".join(parts) if parts else "its definition changed"


def changed_tests(stored: Mapping[str, tuple[str, str]],
                  current: Mapping[str, Definition]) -> dict[str, str]:
    """The run's tests whose definition changed, each with why (a test no longer in the area
    is not judged: nothing defines it any more)."""
    return {name: why_changed(text, name, current[name])
            for name, (digest, text) in stored.items()
            if name in current and has_changed(digest, current[name])}


@dataclass
class AreaDefinitions:
    """The area's test definitions and megarun.toml variables as they are now, read at most
    once per command: a test.toml is parsed only when its bytes differ from the stored ones."""

    tests_dir: Path
    raw_config: dict[str, Any]
    keys: tuple[str, ...]
    origin: str
    _variables: dict[str, dict[str, str]] = field(default_factory=dict)
    _sources: dict[str, str | None] = field(default_factory=dict)
    _parsed: dict[str, dict[str, Any]] = field(default_factory=dict)
    _current: dict[tuple[str, str], Definition] = field(default_factory=dict)

    def variables(self, target: str) -> dict[str, str]:
        if target not in self._variables:
            self._variables[target] = target_variables(self.raw_config, target, self.origin)
        return self._variables[target]

    def source(self, name: str) -> str | None:
        """The digest of the test's test.toml now; None when the test is gone."""
        if name not in self._sources:
            path = self.tests_dir / name / TEST_FILE
            try:
                raw = path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                self._sources[name] = None
            except OSError as exc:  # unreadable: a ConfigError, as load_test would say
                raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
            else:
                self._sources[name] = hashlib.sha256(raw).hexdigest()
        return self._sources[name]

    def current(self, name: str, stored_text: str, target: str) -> Definition | None:
        """The test's definition now (ConfigError when its changed test.toml is invalid).

        `stored_text` is only a shortcut: whichever way it is found, the definition is the
        current file's, so it is kept per test and target.
        """
        known = self._current.get((name, target))
        if known is not None:
            return known
        source = self.source(name)
        if source is None:
            return None
        stored = _stored_parts(stored_text)
        if stored.get("source") == source:  # the same bytes: the stored definition holds
            fields = {k: v for k, v in stored.items() if k not in _EXTRA_KEYS}
        else:
            if name not in self._parsed:
                self._parsed[name] = load_test(self.tests_dir / name / TEST_FILE).definition()
            fields = self._parsed[name]
        found = definition_from(fields, source, self.variables(target), self.keys)
        self._current[(name, target)] = found
        return found


def read_area_definitions(tests_dir: Path, raw_config: dict[str, Any], keys: Iterable[str],
                          config_path: Path) -> AreaDefinitions:
    """The area's definitions, read lazily; ConfigError at once for a bad variables section."""
    target_variables(raw_config, "", str(config_path))  # checks every section, whatever matches
    return AreaDefinitions(tests_dir, raw_config, tuple(keys), str(config_path))


def stale_in_run(db: SqliteDatabase, run_id: int, target: str,
                 area: AreaDefinitions) -> dict[str, str]:
    """The tests of one run whose COMPLETED results are STALE now, each with why."""
    stored = stored_definitions(db, run_id)
    current = {name: area.current(name, text, target) for name, (_, text) in stored.items()}
    return changed_tests(stored, {n: d for n, d in current.items() if d is not None})


def stale_tests_by_run(db: SqliteDatabase, area: AreaDefinitions) -> dict[int, set[str]]:
    """Per run, the tests whose results are STALE now (one query over run_test)."""
    rows = db.execute_sql("SELECT run.id, run.target, t.test, t.definition_hash, t.definition "
                          "FROM run_test t JOIN run ON run.id = t.run_id").fetchall()
    found: dict[int, set[str]] = {}
    for run_id, target, test, digest, text in rows:
        current = area.current(test, text, target)
        if current is not None and has_changed(digest, current):
            found.setdefault(run_id, set()).add(test)
    return found

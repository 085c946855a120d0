"""Test definitions: `<area>/tests/<name>/test.toml`, validated into frozen TestDef values.

The folder name is the test name. Step commands are shell text written by the test author and
are run as written, never templated. Item values may hold any text (they reach the steps as
environment variables, never as shell code); only the itempath, which names directories, is made
safe by replacing every character outside `[A-Za-z0-9_.+-]` with `_`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megarun.config.tomlfile import check_keys, decode_utf8, expect_type, parse_toml, synonym
from megarun.core.quantities import MINUTE, SECOND, parse_duration
from megarun.core.states import JobStatus
from megarun.errors import ConfigError
from megarun.suites.targets import VARIABLE_RE, scalar_text

TEST_FILE = "test.toml"
#: The statuses a test's rules may give.
STATUSES = tuple(s.value for s in (JobStatus.PASS, JobStatus.WARN, JobStatus.FAIL,
                                   JobStatus.ABORT, JobStatus.SKIP, JobStatus.CHECK))
WAITON_MODES = ("normal", "toplevel", "itemmatch")
MAX_ITEM_VALUE = 200
MAX_ITEMS = 10_000

#: Tests say `runtimelim` (a bare number: seconds) and jobs `walltime` (a bare number: minutes);
#: either word is accepted in either place, each keeping its own bare unit.
RUNTIME_WORDS = {"runtimelim": SECOND, "walltime": MINUTE}
_TEST_KEYS = {"description", "steps", "waiton", "waiton_mode", "priority", "jobgroup",
              "env", "skip", "items", "itemstable", "rules", *RUNTIME_WORDS}
#: Steps say `cmd`, apps `command`: a step takes either.
_STEP_KEYS = {"name", "cmd", "command"}
_RULES_KEYS = {"exit", "patterns"}
_PATTERN_KEYS = {"regex", "status", "step"}
_SKIP_KEYS = {"targets"}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.+-]")
_EXIT_RE = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class Step:
    """One shell command of a test; its output goes to <name>.out and <name>.err."""

    name: str
    cmd: str


@dataclass(frozen=True)
class PatternRule:
    """A regex that, when found in a step's logs, gives the test the rule's status."""

    regex: str
    status: str
    step: str | None = None  # None: every step's logs


@dataclass(frozen=True)
class Rules:
    """How exit codes and log lines map to a status; empty means 0 -> PASS, anything else -> FAIL."""

    exit: dict[int, str] = field(default_factory=dict)
    patterns: tuple[PatternRule, ...] = ()

    def as_spec(self) -> dict[str, Any]:
        """The rules as a JSON-able dict; {} when there are none."""
        if not self.exit and not self.patterns:
            return {}
        return {
            "exit": {str(code): status for code, status in self.exit.items()},
            "patterns": [{"regex": p.regex, "status": p.status, "step": p.step} for p in self.patterns],
        }


@dataclass(frozen=True)
class TestDef:
    """A validated test.toml."""

    __test__ = False  # a name starting with "Test": keep pytest from collecting it where imported

    name: str
    path: Path
    description: str
    steps: tuple[Step, ...]  # at least one
    items: dict[str, list[str]] = field(default_factory=dict)
    itemstable: dict[str, list[str]] = field(default_factory=dict)
    waiton: tuple[str, ...] = ()
    waiton_mode: str = "normal"
    runtimelim: float | None = None
    priority: int = 0
    jobgroup: str | None = None
    rules: Rules = field(default_factory=Rules)
    skip_targets: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # sha256 of the test.toml bytes this was read from (not part of the definition): a file
    # with the same digest needs no parsing to be known unchanged (megarun.suites.stale)
    source: str = field(default="", compare=False)

    def definition(self) -> dict[str, Any]:
        """The resolved definition as a JSON-able dict: every field except the path."""
        return {
            "name": self.name,
            "description": self.description,
            "steps": [{"name": step.name, "cmd": step.cmd} for step in self.steps],
            "items": {key: list(values) for key, values in self.items.items()},
            "itemstable": {key: list(values) for key, values in self.itemstable.items()},
            "waiton": list(self.waiton),
            "waiton_mode": self.waiton_mode,
            "runtimelim": self.runtimelim,
            "priority": self.priority,
            "jobgroup": self.jobgroup,
            "rules": self.rules.as_spec(),
            "skip_targets": list(self.skip_targets),
            "env": dict(self.env),
        }

    def definition_hash(self) -> str:
        """sha256 of the canonical JSON of definition(): unchanged by reformatting the file."""
        text = json.dumps(self.definition(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def safe_component(value: str) -> str:
    """An item value as a directory name: unsafe characters become `_`, "." and ".." become "_"."""
    safe = _UNSAFE_RE.sub("_", value)
    return "_" if safe in (".", "..") else safe


def item_rows(test: TestDef) -> Iterator[dict[str, str]]:
    """The test's item combinations, {variable: raw value} each; one empty row when it has none.

    `items` is a cartesian product in variable order (the first variable varies slowest);
    `itemstable` is read row by row.
    """
    if test.items:
        names = list(test.items)
        for combo in itertools.product(*test.items.values()):
            yield dict(zip(names, combo, strict=True))
    elif test.itemstable:
        names = list(test.itemstable)
        for row in zip(*test.itemstable.values(), strict=True):
            yield dict(zip(names, row, strict=True))
    else:
        yield {}


def itempath(variables: dict[str, str]) -> str:
    """The safe item values joined by "/" in variable order; "" for no items."""
    return "/".join(safe_component(value) for value in variables.values())


def load_tests(tests_dir: Path) -> dict[str, TestDef]:
    """Every tests_dir/*/test.toml by test name, sorted; folders without test.toml are ignored."""
    if not tests_dir.is_dir():
        return {}
    paths = sorted(p for p in tests_dir.glob(f"*/{TEST_FILE}") if p.is_file())
    tests = [load_test(path) for path in paths]
    return {test.name: test for test in sorted(tests, key=lambda t: t.name)}


def load_test(path: Path) -> TestDef:
    """Parse and validate one test.toml; the test's name is its folder's name."""
    origin = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    data = parse_toml(decode_utf8(raw, origin), origin)
    name = path.parent.name
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"{origin}: invalid test name {name!r} (the folder name): use up to 64 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    check_keys(data, _TEST_KEYS, origin)
    steps = _steps(data, origin)
    if "items" in data and "itemstable" in data:
        raise ConfigError(f"{origin}: give either 'items' or 'itemstable', not both")
    items = _item_columns(data.get("items", {}), origin, "items")
    _check_item_count(items, origin)
    itemstable = _item_columns(data.get("itemstable", {}), origin, "itemstable")
    _check_table(itemstable, origin)
    waiton_mode = expect_type(data.get("waiton_mode", "normal"), str, origin, "waiton_mode")
    if waiton_mode not in WAITON_MODES:
        raise ConfigError(
            f"{origin}: key 'waiton_mode' must be one of {', '.join(WAITON_MODES)}, got {waiton_mode!r}"
        )
    jobgroup = data.get("jobgroup")
    if jobgroup is not None:
        expect_type(jobgroup, str, origin, "jobgroup")
        if not _NAME_RE.fullmatch(jobgroup):
            raise ConfigError(f"{origin}: key 'jobgroup' must be a name of letters, digits, '_', '.' or '-'")
    return TestDef(
        name=name,
        path=path,
        steps=steps,
        description=expect_type(data.get("description", ""), str, origin, "description"),
        items=items,
        itemstable=itemstable,
        waiton=_waiton(data.get("waiton", []), origin),
        waiton_mode=waiton_mode,
        runtimelim=_runtimelim(data, origin),
        priority=expect_type(data.get("priority", 0), int, origin, "priority"),
        jobgroup=jobgroup,
        rules=_rules(data.get("rules", {}), {step.name for step in steps}, origin),
        skip_targets=_skip(data.get("skip", {}), origin),
        env=_env(data.get("env", {}), origin),
        source=hashlib.sha256(raw).hexdigest(),
    )


def _steps(data: dict[str, Any], origin: str) -> tuple[Step, ...]:
    if "steps" not in data:
        raise ConfigError(f"{origin}: missing key 'steps'")
    raw = expect_type(data["steps"], list, origin, "steps")
    if not raw:
        raise ConfigError(f"{origin}: key 'steps' must list at least one step")
    steps: list[Step] = []
    seen: set[str] = set()
    for number, entry in enumerate(raw, start=1):
        key = f"steps[{number - 1}]"
        default_name = f"step{number}"
        if isinstance(entry, str):
            name, cmd = default_name, entry
        else:
            expect_type(entry, (str, dict), origin, key)
            check_keys(entry, _STEP_KEYS, origin, key)
            found = synonym(entry, ("cmd", "command"), origin, key)
            if found is None:
                raise ConfigError(f"{origin}: [{key}] missing key 'cmd'")
            name = expect_type(entry.get("name", default_name), str, origin, f"{key}.name")
            cmd = expect_type(found[1], str, origin, f"{key}.{found[0]}")
        if not _NAME_RE.fullmatch(name):
            raise ConfigError(
                f"{origin}: key '{key}.name': step name {name!r} must be up to 64 letters, digits, "
                "'_', '.' or '-', starting with a letter or digit"
            )
        if name in seen:
            raise ConfigError(f"{origin}: key '{key}.name': step name {name!r} is used twice")
        if not cmd.strip():
            raise ConfigError(f"{origin}: key '{key}.cmd' must not be empty")
        seen.add(name)
        steps.append(Step(name, cmd))
    return tuple(steps)


def _item_columns(table: Any, origin: str, key: str) -> dict[str, list[str]]:
    expect_type(table, dict, origin, key)
    columns: dict[str, list[str]] = {}
    for name, raw in table.items():
        where = f"{key}.{name}"
        if not VARIABLE_RE.fullmatch(name):
            raise ConfigError(
                f"{origin}: key {where!r}: item variable name {name!r} must be letters, digits and '_', "
                "not starting with a digit"
            )
        expect_type(raw, list, origin, where)
        if not raw:
            raise ConfigError(f"{origin}: key {where!r} must list at least one value")
        values: list[str] = []
        for value in raw:
            text = None if isinstance(value, bool) else scalar_text(value)
            if text is None:
                raise ConfigError(f"{origin}: key {where!r}: value {value!r} must be a string or number")
            if not text or len(text) > MAX_ITEM_VALUE:
                raise ConfigError(
                    f"{origin}: key {where!r}: value {text!r} must have 1 to {MAX_ITEM_VALUE} characters"
                )
            if "\x00" in text:
                raise ConfigError(f"{origin}: key {where!r}: values must not contain a NUL character")
            values.append(text)
        columns[name] = values
    return columns


def _check_item_count(items: dict[str, list[str]], origin: str) -> None:
    """Each value's itempath component must be unique in its list, and the product bounded."""
    for name, values in items.items():
        seen: dict[str, str] = {}
        for value in values:
            safe = safe_component(value)
            if safe in seen:
                raise ConfigError(
                    f"{origin}: key 'items.{name}': values {seen[safe]!r} and {value!r} "
                    f"give the same itempath component {safe!r}"
                )
            seen[safe] = value
    count = math.prod(len(values) for values in items.values())
    if count > MAX_ITEMS:
        raise ConfigError(f"{origin}: key 'items' gives {count} combinations (at most {MAX_ITEMS})")


def _check_table(table: dict[str, list[str]], origin: str) -> None:
    """All columns the same length, and every row a different itempath."""
    lengths = {name: len(values) for name, values in table.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}: {length}" for name, length in lengths.items())
        raise ConfigError(f"{origin}: key 'itemstable' columns must all have the same length ({detail})")
    if table and next(iter(lengths.values())) > MAX_ITEMS:
        raise ConfigError(f"{origin}: key 'itemstable' has more than {MAX_ITEMS} rows")
    seen: dict[str, int] = {}
    for number, row in enumerate(zip(*table.values(), strict=True), start=1):
        path = "/".join(safe_component(value) for value in row)
        if path in seen:
            raise ConfigError(
                f"{origin}: key 'itemstable': rows {seen[path]} and {number} give the same itempath {path!r}"
            )
        seen[path] = number


def _waiton(raw: Any, origin: str) -> tuple[str, ...]:
    names = [raw] if isinstance(raw, str) else expect_type(raw, list, origin, "waiton")
    for name in names:
        expect_type(name, str, origin, "waiton")
    return tuple(dict.fromkeys(names))


def _runtimelim(data: dict[str, Any], origin: str) -> float | None:
    """Seconds of `runtimelim` (or `walltime`): a duration, or a bare number in the word's unit."""
    found = synonym(data, ("runtimelim", "walltime"), origin)
    if found is None:
        return None
    key, raw = found
    seconds = parse_duration(raw, f"{origin}: key {key!r}", RUNTIME_WORDS[key], ConfigError)
    if seconds <= 0:
        raise ConfigError(f"{origin}: key {key!r} must be a positive duration, got {raw!r}")
    return seconds


def _rules(raw: Any, step_names: set[str], origin: str) -> Rules:
    expect_type(raw, dict, origin, "rules")
    check_keys(raw, _RULES_KEYS, origin, "rules")
    exit_table = expect_type(raw.get("exit", {}), dict, origin, "rules.exit")
    exit_rules: dict[int, str] = {}
    for code, status in exit_table.items():
        key = f"rules.exit.{code}"
        if not _EXIT_RE.fullmatch(code):
            raise ConfigError(f"{origin}: key {key!r}: exit code {code!r} must be an integer")
        exit_rules[int(code)] = _status(status, origin, key)
    patterns: list[PatternRule] = []
    for number, entry in enumerate(expect_type(raw.get("patterns", []), list, origin, "rules.patterns")):
        key = f"rules.patterns[{number}]"
        expect_type(entry, dict, origin, key)
        check_keys(entry, _PATTERN_KEYS, origin, key)
        for needed in ("regex", "status"):
            if needed not in entry:
                raise ConfigError(f"{origin}: [{key}] missing key {needed!r}")
        regex = expect_type(entry["regex"], str, origin, f"{key}.regex")
        try:
            re.compile(regex)
        except re.error as exc:
            raise ConfigError(f"{origin}: key '{key}.regex': invalid regex {regex!r}: {exc}") from exc
        step = entry.get("step")
        if step is not None:
            expect_type(step, str, origin, f"{key}.step")
            if step not in step_names:
                valid = ", ".join(sorted(step_names))
                raise ConfigError(f"{origin}: key '{key}.step': no step named {step!r} (steps: {valid})")
        patterns.append(PatternRule(regex, _status(entry["status"], origin, f"{key}.status"), step))
    return Rules(exit_rules, tuple(patterns))


def _status(raw: Any, origin: str, key: str) -> str:
    status: str = expect_type(raw, str, origin, key)
    if status not in STATUSES:
        raise ConfigError(f"{origin}: key {key!r} must be one of {', '.join(STATUSES)}, got {status!r}")
    return status


def _skip(raw: Any, origin: str) -> tuple[str, ...]:
    expect_type(raw, dict, origin, "skip")
    check_keys(raw, _SKIP_KEYS, origin, "skip")
    targets = raw.get("targets", [])
    patterns = [targets] if isinstance(targets, str) else expect_type(targets, list, origin, "skip.targets")
    for pattern in patterns:
        expect_type(pattern, str, origin, "skip.targets")
        if not pattern.strip():
            raise ConfigError(f"{origin}: key 'skip.targets' must not hold an empty pattern")
    return tuple(patterns)


def _env(raw: Any, origin: str) -> dict[str, str]:
    expect_type(raw, dict, origin, "env")
    env: dict[str, str] = {}
    for name, value in raw.items():
        if not VARIABLE_RE.fullmatch(name):
            raise ConfigError(
                f"{origin}: key 'env.{name}': variable name must be letters, digits and '_', "
                "not starting with a digit"
            )
        text = scalar_text(value)
        if text is None:
            raise ConfigError(
                f"{origin}: key 'env.{name}' must be a string, number or boolean, got {value!r}"
            )
        if "\x00" in text:
            raise ConfigError(f"{origin}: key 'env.{name}' must not contain a NUL character")
        env[name] = text
    return env

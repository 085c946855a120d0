"""Targets: the values of the area's keys joined by "/", `%` patterns, and per-target variables.

A target such as `linux/x86_64` names one combination of the area's `keys` (e.g. `os`, `arch`).
Its values become directory names, so each must be a short name without spaces, `..` or shell
metacharacters. Patterns use `%` for any run of characters (including "/" and nothing at all) and
may be a comma-separated list, any of which may match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from megarun.errors import ConfigError, UsageError

_VALUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_target(target: str, keys: Sequence[str]) -> dict[str, str]:
    """Split `target` into {key: value} in key order, refusing a wrong count or an unsafe value."""
    if not keys:
        raise UsageError(
            "this area has no target keys",
            'set `keys` in megarun.toml, e.g. keys = ["os", "arch"]',
        )
    parts = target.split("/")
    form = "/".join(keys)
    if len(parts) != len(keys):
        raise UsageError(
            f"target {target!r} has {len(parts)} part(s); this area's keys need {len(keys)}: {form}"
        )
    for key, value in zip(keys, parts, strict=True):
        if not _VALUE_RE.fullmatch(value):
            raise UsageError(
                f"target {target!r}: value {value!r} for key {key!r} must be up to 64 letters, digits, "
                "'_', '.', '+' or '-', starting with a letter or digit"
            )
    return dict(zip(keys, parts, strict=True))


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(piece) for piece in pattern.split("%")), re.DOTALL)


def pattern_matches(pattern: str, value: str) -> bool:
    """True when `value` matches `pattern` or any pattern of a comma-separated list.

    `%` matches any run of characters, including "/" and the empty string; everything else is
    literal. Blank entries of a list (as in "a,,b") are ignored.
    """
    for part in pattern.split(","):
        part = part.strip()
        if part and _compile(part).fullmatch(value):
            return True
    return False


def target_variables(raw: dict[str, Any], target: str, origin: str) -> dict[str, str]:
    """The variables megarun.toml exports for `target`.

    `[default]` comes first, then every `[targets."<pattern>"]` section whose pattern matches the
    target, in file order, a later section overriding an earlier one. Every section is validated,
    whether it matches or not, so a mistake shows up on any target.
    """
    default = raw.get("default", {})
    if not isinstance(default, dict):
        raise ConfigError(f"{origin}: key 'default' must be a table, got {default!r}")
    result = _variables(default, origin, "default")
    sections = raw.get("targets", {})
    if not isinstance(sections, dict):
        raise ConfigError(f"{origin}: key 'targets' must be a table, got {sections!r}")
    for pattern, table in sections.items():
        where = f'targets."{pattern}"'
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: key {where!r} must be a table of variables, got {table!r}")
        values = _variables(table, origin, where)
        if pattern_matches(pattern, target):
            result.update(values)
    return result


def _variables(table: dict[str, Any], origin: str, where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in table.items():
        if not VARIABLE_RE.fullmatch(name):
            raise ConfigError(
                f"{origin}: [{where}] variable name {name!r} must be letters, digits and '_', "
                "not starting with a digit"
            )
        text = scalar_text(value)
        if text is None:
            raise ConfigError(f"{origin}: [{where}] key {name!r} must be a string or number, got {value!r}")
        if "\x00" in text:
            raise ConfigError(f"{origin}: [{where}] key {name!r} must not contain a NUL character")
        values[name] = text
    return values


def scalar_text(value: Any) -> str | None:
    """A TOML string, integer, float or boolean as text (booleans as true/false); None otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None

"""An app's requirements against a site's capabilities, read and compared (pure).

Site matching (megarun.engine.matching) uses these to choose a site; `job create --site` uses
them to refuse a site that cannot run the app; `--capability`/`--require` are read here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from megarun.config.apps import VERSION_OPERATORS, parse_constraints
from megarun.config.presets import parse_scalar
from megarun.errors import UsageError

_LEADING_VERSION = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")
_PAIR = re.compile(r"^\s*([^<>=!\s]+)\s*(>=|<=|==|!=|>|<|=)(.*)$")

Version = tuple[int, ...]


def satisfies(requirements: Mapping[str, Any], capabilities: Mapping[str, Any],
              site: str = "the site") -> str | None:
    """None when the capabilities meet every requirement, else a one-line reason for the first
    one they miss ("needs gpu=true; site a has gpu=false").

    A string starting with an operator is a version constraint (">=3.10", ">=3.10,<3.13");
    other strings compare without regard to case; `true` needs a capability that is set and not
    false; `false` is met by a capability that is false or absent; numbers compare as numbers.
    Any other missing capability is not satisfied.
    """
    for key, wanted in requirements.items():
        have = capabilities.get(key)
        if not _meets(wanted, have):
            shown = f"{key}={_text(have)}" if key in capabilities else f"no {key!r} capability"
            return f"needs {describe_requirement(key, wanted)}; site {site} has {shown}"
    return None


def describe_requirement(key: str, wanted: Any) -> str:
    """`python>=3.10`, `os=linux`, `gpu=true`."""
    if _is_constraint(wanted):
        return f"{key}{str(wanted).strip()}"
    return f"{key}={_text(wanted)}"


def _meets(wanted: Any, have: Any) -> bool:
    if isinstance(wanted, bool):
        return _truthy(have) if wanted else not _truthy(have)
    if have is None:
        return False
    if _is_constraint(wanted):
        version = parse_version(have)
        return version is not None and all(
            compare_versions(version, op, bound)
            for op, bound in parse_constraints(wanted, "requirement"))
    if isinstance(wanted, int | float):
        number = _number(have)
        return number is not None and number == wanted
    return _text(have).lower() == str(wanted).strip().lower()


def _is_constraint(value: Any) -> bool:
    return isinstance(value, str) and value.strip().startswith(VERSION_OPERATORS)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "0")
    return bool(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_version(value: Any) -> Version | None:
    """The leading dotted number of a capability ("3.11.4", "v12.2", "3.12.0rc1"), or None."""
    if isinstance(value, bool):
        return None
    match = _LEADING_VERSION.match(str(value))
    return tuple(int(n) for n in match.group(1).split(".")) if match else None


def compare_versions(have: Version, operator: str, bound: Version) -> bool:
    """`have <operator> bound`, missing trailing parts counting as zero (3.10 == 3.10.0)."""
    width = max(len(have), len(bound))
    left = have + (0,) * (width - len(have))
    right = bound + (0,) * (width - len(bound))
    results = {">=": left >= right, "<=": left <= right, ">": left > right, "<": left < right,
               "==": left == right, "!=": left != right}
    return results[operator]


def parse_tag_pairs(pairs: Sequence[str], option: str = "--capability") -> dict[str, Any]:
    """`--capability`/`--require` options into a table. `key=value`; a constraint may also be
    written `python>=3.10` (or `python=>=3.10`). true/false and whole numbers are parsed;
    anything else (versions such as 3.10 included) stays a string."""
    table: dict[str, Any] = {}
    for pair in pairs:
        match = _PAIR.match(pair)
        if match is None or not match.group(3).strip():
            raise UsageError(f"{option} {pair!r}: expected key=value")
        key, operator, raw = match.group(1), match.group(2), match.group(3).strip()
        if operator != "=":
            raw = operator + raw
        value = parse_scalar(raw)
        table[key] = raw if isinstance(value, float) else value
    return table

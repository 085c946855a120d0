"""Reading TOML files with errors that name the file, and checking keys against a schema."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from megarun.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older interpreters only
    import tomli as tomllib


def load_toml(path: Path) -> dict[str, Any]:
    """Parse `path`; a syntax error becomes a ConfigError naming the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_toml(text, str(path))


def parse_toml(text: str, origin: str) -> dict[str, Any]:
    """Parse TOML text; `origin` names it in error messages."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML: {exc}") from exc


def check_keys(table: dict[str, Any], allowed: Iterable[str], origin: str, where: str = "") -> None:
    """Refuse keys a schema does not know, naming the file, the table and the key."""
    allowed_set = set(allowed)
    for key in table:
        if key not in allowed_set:
            place = f"[{where}] " if where else ""
            valid = ", ".join(sorted(allowed_set))
            raise ConfigError(f"{origin}: {place}unknown key {key!r} (valid keys: {valid})")


def expect_type(value: Any, kind: type | tuple[type, ...], origin: str, key: str) -> Any:
    """Return `value` when it has the expected TOML type, else a ConfigError naming the key."""
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{origin}: key {key!r} must be a number, not a boolean")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{origin}: key {key!r} must be {_article(names)}, got {value!r}")
    return value


def _article(name: str) -> str:
    words = {"str": "a string", "int": "an integer", "float": "a number", "list": "a list",
             "dict": "a table", "bool": "true or false"}
    return " or ".join(words.get(part.strip(), part) for part in name.split(" or "))

"""Reading TOML files with errors that name the file, and checking keys against a schema.

Every file is refused whole when it is not UTF-8, nests too deep, or holds a value no part of
megarun can use (NUL, undecodable text, integers beyond 64 bits, NaN, infinities): see
megarun.config.inputs.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from megarun.config.inputs import find_bad_value
from megarun.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older interpreters only
    import tomli as tomllib


def load_toml(path: Path) -> dict[str, Any]:
    """Parse `path`; a syntax error becomes a ConfigError naming the file and the line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_toml(decode_utf8(data, str(path)), str(path))


def decode_utf8(data: bytes, origin: str) -> str:
    """Text of a file that must be UTF-8; binary or other encodings are a ConfigError."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{origin}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start}); megarun reads only UTF-8 files") from None


def parse_toml(text: str, origin: str) -> dict[str, Any]:
    """Parse TOML text; `origin` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML: {exc}") from exc
    except RecursionError:
        # tomllib recurses per nesting level; thousands of "[[[" exhaust the stack
        raise ConfigError(f"{origin}: invalid TOML: nested too deeply") from None
    bad = find_bad_value(data)
    if bad is not None:
        raise ConfigError(f"{origin}: key '{bad[0]}' {bad[1]}")
    return data


def check_keys(table: dict[str, Any], allowed: Iterable[str], origin: str, where: str = "") -> None:
    """Refuse keys a schema does not know, naming the file, the table and the key."""
    allowed_set = set(allowed)
    for key in table:
        if key not in allowed_set:
            place = f"[{where}] " if where else ""
            valid = ", ".join(sorted(allowed_set))
            raise ConfigError(f"{origin}: {place}unknown key {key!r}"
                              f"{did_you_mean(key, allowed_set)} (valid keys: {valid})")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'cmd'?)` for the closest of `choices` to a misspelt word, else ""."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def synonym(table: dict[str, Any], names: tuple[str, str], origin: str,
            where: str = "") -> tuple[str, Any] | None:
    """The key and value of whichever of two words for one thing `table` gives (`cmd` and
    `command`, `walltime` and `runtimelim`); both at once is an error, neither is None."""
    given = [name for name in names if name in table]
    if len(given) > 1:
        place = f"[{where}] " if where else ""
        raise ConfigError(f"{origin}: {place}give {names[0]!r} or {names[1]!r}, not both "
                          "(they mean the same)")
    return (given[0], table[given[0]]) if given else None


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

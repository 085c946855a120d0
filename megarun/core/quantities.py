"""The one grammar of durations and sizes, for CLI options and every TOML file megarun reads.

Durations: one or more `<number><unit>` groups, units `w`, `d`, `h`, `m`, `s` from largest to
smallest (`90s`, `10m`, `1h30m`, `2d`, `1.5h`, `1h 30m`); a number after the last unit counts
in the next smaller unit (`1h30` is 1h30m, `2m30` is 2m30s, `1d12` is 1d12h). A bare number
keeps the unit each option or key always had (minutes for walltime, seconds for runtimelim,
days for --older-than): callers pass it as `bare`. Sizes: a number with `B`, `K`, `M`, `G`,
`T` or `P`, optionally followed by `i` and/or `B` (`512M`, `10G`, `1.5TiB`, `20GB`), all binary
(1K = 1024 bytes, as `df -h` and `du -h` count); a bare number is in the caller's `bare` unit.
Units are case-insensitive. Documented once in docs/cli.md, "Durations and sizes".
"""

from __future__ import annotations

import math
import re

from megarun.errors import MegarunError, UsageError

SECOND = 1.0
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
#: A year: no duration megarun waits or asks a scheduler for is longer.
MAX_SECONDS = 365 * DAY
#: A century: the longest age (`--older-than`, the archive rules) that still means something.
MAX_AGE = 100 * 365 * DAY
_LONGEST_WORDS = {MAX_SECONDS: "a year", MAX_AGE: "a century"}

_DURATION_UNITS = {"w": 7 * DAY, "d": DAY, "h": HOUR, "m": MINUTE, "s": SECOND}
_UNIT_ORDER = "wdhms"
_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_GROUP_RE = re.compile(rf"\s*({_NUMBER})\s*([wdhms]?)", re.IGNORECASE)
_SIZE_RE = re.compile(rf"^\s*({_NUMBER})\s*(?:([kmgtp])(i?)b?|(b))?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
#: Byte counts of the bare-number units callers use.
BYTE = 1
MEBIBYTE = 1 << 20

DURATION_FORMS = "a duration such as 90s, 10m, 1h30m or 2d"
SIZE_FORMS = "a size such as 512M, 10G or 1.5TiB"
_BARE_DURATIONS = {SECOND: "seconds", MINUTE: "minutes", HOUR: "hours", DAY: "days"}
_BARE_SIZES = {BYTE: "bytes", MEBIBYTE: "megabytes"}


def parse_duration(value: str | float, what: str, bare: float = SECOND,
                   error: type[MegarunError] = UsageError, longest: float = MAX_SECONDS) -> float:
    """Seconds in `value` (text in the duration grammar, or a number in `bare` seconds).

    `what` names the option or key in the one-line error (an `error`, exit 2): a duration that
    is negative, not finite, or longer than `longest` (a year; MAX_AGE for ages) is refused.
    """
    seconds = _duration_seconds(value, bare)
    if seconds is None or not 0 <= seconds <= longest:
        limit = _LONGEST_WORDS.get(longest, f"{longest:g} s")
        raise error(f"{what} {_shown(value)}: expected {DURATION_FORMS} (at most {limit}; a "
                    f"bare number is {_BARE_DURATIONS.get(bare, 'seconds')})")
    return seconds


def parse_size(value: str | float, what: str, bare: int = BYTE,
               error: type[MegarunError] = UsageError) -> int:
    """Bytes in `value` (text in the size grammar, or a number in `bare` bytes)."""
    size = _size_bytes(value, bare)
    if size is None:
        raise error(f"{what} {_shown(value)}: expected {SIZE_FORMS} (binary units: 1K = 1024 "
                    f"bytes; a bare number is {_BARE_SIZES.get(bare, 'bytes')})")
    return size


def _duration_seconds(value: str | float, bare: float) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) * bare if math.isfinite(value) and value >= 0 else None
    if not isinstance(value, str) or not value.strip():
        return None
    text, total, position, last = value.strip(), 0.0, 0, -1
    while position < len(text):
        match = _GROUP_RE.match(text, position)
        if match is None:
            return None
        number, unit = float(match.group(1)), match.group(2).lower()
        if not unit:
            # a lone number is in the bare unit; one after a unit is in the next smaller unit
            if match.end() < len(text.rstrip()) or last == len(_UNIT_ORDER) - 1:
                return None
            if last < 0:
                return number * bare
            unit = _UNIT_ORDER[last + 1]
        order = _UNIT_ORDER.index(unit)
        if order <= last:  # units from largest to smallest, each at most once
            return None
        total, position, last = total + number * _DURATION_UNITS[unit], match.end(), order
    return total


def _size_bytes(value: str | float, bare: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value * bare) if math.isfinite(value) and 0 <= value < 2 ** 53 else None
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    number = float(match.group(1))
    if match.group(2) is None and match.group(4) is None:
        scale = bare
    else:
        scale = _SIZE_UNITS[(match.group(2) or match.group(4)).lower()]
    size = number * scale
    return int(size) if size < 2 ** 63 else None


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def format_age(seconds: float) -> str:
    """A short human age: `45 s`, `12 min`, `3.5 h`, `40 d`."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def format_size(size: float) -> str:
    """A short human size in binary units: `512 B`, `1.5 KiB`, `20.0 GiB`."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"

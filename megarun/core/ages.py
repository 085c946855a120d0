"""Ages such as `30d` for `--older-than` and the area's archive and migration rules."""

from __future__ import annotations

import re

from megarun.errors import UsageError

_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_age(text: str, what: str = "--older-than") -> float:
    """Seconds in `text`: a number with s, m, h, d or w (`30d`, `12h`); a bare number is days."""
    match = _AGE_RE.match(text)
    if match is None:
        raise UsageError(f"{what} {text!r}: expected an age such as 30d, 12h, 90m or 2w")
    unit = (match.group(2) or "d").lower()
    return float(match.group(1)) * _UNIT_SECONDS[unit]


def format_age(seconds: float) -> str:
    """A short human age: `45 s`, `12 min`, `3.5 h`, `40 d`."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"

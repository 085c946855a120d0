"""Checks every value a user hands megarun must pass, whatever file or option it came from.

A config file or a `--from-file` line is parsed by a general-purpose reader (tomllib, json)
that accepts things megarun can never use: NUL characters (they end a C string, so an agent
cannot pass them to a process), text that is not UTF-8 (argv decoded with surrogateescape),
integers SQLite cannot store (beyond 64 bits), NaN and infinities, and structures nested so
deep that any recursive walk overflows the stack. These are refused here, at the reader, with
a message naming the file and the field, before any validator or the database sees them.
"""

from __future__ import annotations

import math
from typing import Any

#: SQLite stores integers in 64 bits; a larger one raises OverflowError when bound.
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
#: No megarun file needs more; a deeper one is refused before anything recurses into it.
MAX_DEPTH = 64


def text_problem(text: str) -> str | None:
    """Why `text` cannot be used as a value (None when it can)."""
    if "\0" in text:
        return "must not contain a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # bytes that were not UTF-8 reach Python as lone surrogates (os.fsdecode)
        return "is not valid UTF-8 text"
    return None


def number_problem(value: int | float) -> str | None:
    """Why a number cannot be stored (None when it can): beyond 64 bits, NaN or infinite."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            return f"must be between {INT64_MIN} and {INT64_MAX}"
        return None
    if not math.isfinite(value):
        return f"must be a finite number, got {value}"
    return None


def value_problem(value: Any) -> str | None:
    """Why one scalar value cannot be used (None for containers and good scalars)."""
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, (int, float)):
        return number_problem(value)
    return None


def find_bad_value(data: Any, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """The first (dotted field name, problem) in a parsed document, or None when all is well.

    Walks iteratively, so a document nested deeper than Python's recursion limit is reported,
    not crashed on. Keys are checked like values.
    """
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        where, value, depth = stack.pop()
        if isinstance(value, (dict, list)) and depth >= max_depth:
            return where or "(top)", f"is nested more than {max_depth} levels deep"
        if isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                name = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and text_problem(key):
                    return printable(name), f"name {text_problem(key)}"
                stack.append((name, item, depth + 1))
        elif isinstance(value, list):
            for index in reversed(range(len(value))):
                stack.append((f"{where}[{index}]", value[index], depth + 1))
        else:
            problem = value_problem(value)
            if problem:
                return printable(where or "(top)"), problem
    return None


def printable(name: str) -> str:
    """A field name fit for a one-line message even when it holds NUL, newlines or surrogates,
    and cut short when a deep document makes it long."""
    text = repr(name)[1:-1]
    return text if len(text) <= 80 else f"{text[:77]}..."

"""Rendering for every command: aligned tables for people, --json and --csv for scripts.

rich is imported only when a terminal will see colours (or a progress bar): a pipe gets plain
text, and commands used from scripts start faster.
"""

import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from megarun.core.states import JobState, JobStatus

if TYPE_CHECKING:
    from rich.console import Console

_T, _S = JobStatus, JobState
STATUS_STYLES = {status.value: style for status, style in (
    (_T.PASS, "green"), (_T.SKIP, "cyan"), (_T.WAIVED, "cyan"), (_T.WARN, "yellow"),
    (_T.CHECK, "yellow"), (_T.FAIL, "red"), (_T.TIMEOUT, "red"), (_T.PREQ_FAIL, "magenta"),
    (_T.DEAD, "red"), (_T.ABORT, "red"))}
STATE_STYLES = {state.value: style for state, style in (
    (_S.RUNNING, "blue"), (_S.LAUNCHED, "blue"), (_S.QUEUED, "cyan"), (_S.READY, "white"),
    (_S.AWAITING_PARENTS, "dim"), (_S.COMPLETED, "green"), (_S.KILLED, "red"), (_S.DEAD, "red"),
    (_S.KILLREQ, "yellow"), (_S.STALE, "yellow"))}


@lru_cache(maxsize=2)
def rich_console(stderr: bool = False) -> "Console":
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def say(text: str) -> None:
    """One line of plain output on stdout."""
    print(text)


def note(text: str, style: str = "") -> None:
    """A remark on stderr, coloured when stderr is a terminal."""
    if style and sys.stderr.isatty():
        rich_console(stderr=True).print(text, style=style, markup=False)
    else:
        print(text, file=sys.stderr)


def print_json(data: Any) -> None:
    """JSON on stdout and nothing else: indented for a terminal; one line for a pipe, where the
    C encoder writes large answers (a 10,000-job run) several times faster."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(data, indent=indent, default=str))
    sys.stdout.write("\n")


def print_json_rows(rows: Iterable[Any], batch: int = 1000) -> int:
    """A JSON array written `batch` elements at a time (the same text as
    print_json(list(rows)), without ever holding the list); returns how many were written.

    Each batch goes through one json.dumps call: the C encoder then does most of the work, as
    it does for a whole list, instead of one Python-level call per row.
    """
    indent = 2 if sys.stdout.isatty() else None
    write = sys.stdout.write
    count = 0
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, batch)):
        text = json.dumps(chunk, indent=indent, default=str)
        if indent:  # "[\n  {...},\n  {...}\n]": the inside, its lines already indented
            write(("[\n" if not count else ",\n") + text[2:-2])
        else:  # "[{...}, {...}]"
            write(("[" if not count else ", ") + text[1:-1])
        count += len(chunk)
    write(("\n]" if indent and count else "]" if count else "[]") + "\n")
    return count


def _display(column: str, value: Any) -> str:
    """A value as people read it: words, never a Python repr (True, None, [...], {...})."""
    if column in ("created", "started", "ended", "time") and isinstance(value, float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return _words(value).replace("\n", "\\n")


def _words(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{key}={_words(item)}" for key, item in _dotted(value))
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(_words(item) for item in value) or "-"
    return str(value)


def _dotted(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested mapping as (dotted key, leaf value) pairs: {"node": {"cpus": 0}} gives
    [("node.cpus", 0)]; an empty table stays one pair."""
    pairs: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            pairs.extend(_dotted(value, f"{prefix}{key}."))
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def _cell_style(column: str, text: str) -> str:
    if column == "status":
        return STATUS_STYLES.get(text, "")
    if column == "state":
        return STATE_STYLES.get(text, "")
    return ""


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None = None,
                empty: str = "nothing to show") -> None:
    """Aligned columns, one line per row, like `ls -l`: fast for long listings, never wrapped."""
    if not rows:
        note(empty, "dim")
        return
    cells = [[_display(column, row.get(column)) for column in columns] for row in rows]
    headers = [column.upper() for column in columns]
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    if sys.stdout.isatty():
        _print_coloured(title, columns, headers, cells, widths)
        return
    out = [title] if title else []
    out.append(_join(headers, widths))
    out.extend(_join(line, widths) for line in cells)
    sys.stdout.write("\n".join(out) + "\n")


def _join(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _print_coloured(title: str | None, columns: Sequence[str], headers: list[str],
                    cells: list[list[str]], widths: list[int]) -> None:
    from rich.text import Text

    out = Text()
    if title:
        out.append(title + "\n", style="bold")
    out.append(_join(headers, widths) + "\n", style="bold")
    for line in cells:
        for index, (column, text, width) in enumerate(zip(columns, line, widths, strict=True)):
            out.append("  " if index else "")
            out.append(text.ljust(width) if index < len(columns) - 1 else text,
                       style=_cell_style(column, text))
        out.append("\n")
    rich_console().print(out, end="", soft_wrap=True)


#: A streamed table is aligned block by block, this many rows each.
TABLE_BLOCK = 1000


def render_stream(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], as_json: bool,
                  title: str | None = None, empty: str = "nothing to show") -> int:
    """Like `render`, for listings that can be huge: rows are consumed one at a time (JSON row
    by row, a table in aligned blocks of TABLE_BLOCK rows); returns how many. CSV is
    megarun.cli.formats' (the fields of --json)."""
    counted = _Counted(rows)
    if as_json:
        print_json_rows(counted)
    else:
        for index, block in enumerate(_blocks(counted, TABLE_BLOCK)):
            print_table(block, columns, title if index == 0 else None, empty)
        if counted.count == 0:
            note(empty, "dim")
    return counted.count


class _Counted:
    """Passes rows through and counts them."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.rows = iter(rows)
        self.count = 0

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        for row in self.rows:
            self.count += 1
            yield row


def _blocks(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    iterator = iter(rows)
    while block := list(itertools.islice(iterator, size)):
        yield block


def render(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], as_json: bool,
           title: str | None = None, empty: str = "nothing to show") -> None:
    """A small listing as a table or a JSON array (listings with --csv go through
    megarun.cli.formats.render_listing)."""
    if as_json:
        print_json(list(rows))
    else:
        print_table(rows, columns, title, empty)


def print_mapping(data: dict[str, Any], title: str | None = None) -> None:
    """A key/value view of one object (show commands), a nested table one dotted key a line;
    lists of records are left out."""
    pairs = [(key, value) for key, value in _dotted(data)
             if not (isinstance(value, list) and value and isinstance(value[0], dict))]
    width = max((len(key) for key, _ in pairs), default=0)
    if title:
        say(title)
    for key, value in pairs:
        say(f"{key.ljust(width)}  {_display(key.rpartition('.')[2], value)}")

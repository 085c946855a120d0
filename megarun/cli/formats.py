"""The shape of what scripts read: JSON documents with a schema version, times in ISO 8601 UTC
next to epoch seconds, and CSV rows with the same fields as the JSON rows.

docs/cli.md documents every field of schema_version 1 (tests/cli/test_output_formats.py
compares the two). An object gets a top-level "schema_version"; a listing stays a bare array
of rows, so that `jq '.[]'` and existing scripts keep working, and follows the same version.
"""

import csv
import itertools
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeVar

from megarun.cli.output import note, print_json, render_stream
from megarun.core.states import parse_status
from megarun.errors import UsageError

SCHEMA_VERSION = 1

#: Keys that hold a time in epoch seconds; each gets a twin KEY_at in ISO 8601 UTC.
TIME_KEYS = ("created", "submitted", "started", "ended", "since", "time")


def iso_utc(epoch: float | None) -> str | None:
    """Epoch seconds as "2026-11-30T15:33:20Z" (to the second; the epoch value keeps the rest)."""
    if epoch is None:
        return None
    return _iso_second(math.floor(epoch))


@lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    # cached: the jobs of a listing were mostly created, started and ended in a few seconds
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


#: A row of a listing: a plain dict or a TypedDict of a wing.
Row = TypeVar("Row", bound=Mapping[str, Any])


def stamped(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row with, after its fields, an ISO 8601 twin KEY_at of each epoch time (TIME_KEYS)
    it holds: appended, so that the fields before keep their places (CSV columns too)."""
    twins = {f"{key}_at": iso_utc(row[key]) for key in TIME_KEYS
             if key in row and (row[key] is None or isinstance(row[key], float))}  # not a count
    if twins or not isinstance(row, dict):
        return {**row, **twins}
    return row


def stamped_rows(rows: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    return (stamped(row) for row in rows)


def document(data: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON object as commands print it: schema_version first, its times stamped."""
    return {"schema_version": SCHEMA_VERSION, **stamped(data)}


def print_document(data: Mapping[str, Any]) -> None:
    print_json(document(data))


def csv_cell(value: Any) -> str:
    """One CSV field: null is empty, booleans as in JSON, a flat object as k=v,k=v (tags), any
    other object or array as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        if all(isinstance(v, str | int | float) and not isinstance(v, bool)
               for v in value.values()):
            return ",".join(f"{k}={v}" for k, v in value.items())
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def write_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> int:
    """RFC 4180 CSV (the csv module's quoting) of the rows' JSON fields: the table's columns
    first, then the row's other fields in JSON order; returns how many rows."""
    iterator = iter(rows)
    first = next(iterator, None)
    fields = [c for c in columns if first is None or c in first]
    if first is not None:
        fields += [key for key in first if key not in fields]
    writer = csv.writer(sys.stdout, lineterminator="\r\n")
    writer.writerow(fields)
    if first is None:
        return 0
    writer.writerow([csv_cell(first.get(f)) for f in fields])
    count = 1
    for row in iterator:
        writer.writerow([csv_cell(row.get(f)) for f in fields])
        count += 1
    return count


def render_listing(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], as_json: bool,
                   as_csv: bool, title: str | None = None, empty: str = "nothing to show") -> int:
    """A listing as a table (its columns), a JSON array or CSV (every JSON field), streamed row
    by row; returns how many rows."""
    if as_csv:
        return write_csv(stamped_rows(rows), columns)
    if as_json:
        return render_stream(stamped_rows(rows), columns, True)
    return render_stream(rows, columns, False, title, empty)


#: The default --limit of listings: enough to read, small enough to print at once.
LIST_LIMIT = 1000


class Limited:
    """At most `limit` rows of a listing (0: all); then `note_more` counts the rows left out,
    reading them one at a time, and says so on stderr, as `job ls` does."""

    def __init__(self, rows: Iterable[Mapping[str, Any]], limit: int) -> None:
        self.rows = iter(rows)
        self.limit = limit

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return itertools.islice(self.rows, self.limit) if self.limit else self.rows

    def note_more(self) -> None:
        more = sum(1 for _ in self.rows)
        if more:
            note(f"... {more:,} more; --limit 0 for all", "dim")


def with_status(rows: Iterable[Row], status: str | None,
                also: Sequence[str] = ()) -> Iterator[Row]:
    """The rows whose roll-up `status` is `status` (a JobStatus, any case, or one of `also`),
    or all of them; UsageError for an unknown status."""
    if status is None:
        return iter(rows)
    wanted = status.upper() if status.upper() in also else None
    if wanted is None:
        try:
            wanted = parse_status(status).value
        except ValueError as exc:
            raise UsageError(f"--status: {exc}{''.join(', ' + a for a in also)}") from None
    return (row for row in rows if row["status"] == wanted)

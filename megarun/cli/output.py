"""Rendering for every command: rich tables for people, --json and --csv for scripts."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """JSON on stdout and nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=str))
    sys.stdout.write("\n")


def print_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_flat(row.get(c)) for c in columns])


def _flat(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None,
                empty: str = "nothing to show") -> None:
    if not rows:
        err_console.print(f"[dim]{empty}[/dim]")
        return
    table = Table(title=title, header_style="bold", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column.upper(), overflow="fold")
    for row in rows:
        table.add_row(*(style_value(column, row.get(column)) for column in columns))
    console.print(table)


STATUS_STYLES = {
    "PASS": "green", "SKIP": "cyan", "WAIVED": "cyan", "WARN": "yellow", "CHECK": "yellow",
    "FAIL": "red", "TIMEOUT": "red", "PREQ_FAIL": "magenta", "DEAD": "red", "ABORT": "red",
}
STATE_STYLES = {
    "RUNNING": "blue", "LAUNCHED": "blue", "QUEUED": "cyan", "READY": "white",
    "AWAITING_PARENTS": "dim", "COMPLETED": "green", "KILLED": "red", "DEAD": "red",
    "KILLREQ": "yellow", "STALE": "yellow",
}


def style_value(column: str, value: Any) -> str:
    text = _display(column, value)
    style = None
    if column == "status":
        style = STATUS_STYLES.get(text)
    elif column == "state":
        style = STATE_STYLES.get(text)
    return f"[{style}]{text}[/{style}]" if style else text.replace("[", "\\[")


def _display(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in ("created", "started", "ended", "time") and isinstance(value, float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return _flat(value)


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool, as_csv: bool,
           title: str | None = None, empty: str = "nothing to show") -> None:
    """The one switch every listing command uses."""
    if as_json:
        print_json(list(rows))
    elif as_csv:
        print_csv(rows, columns)
    else:
        print_table(rows, columns, title, empty)


def print_mapping(data: dict[str, Any], title: str | None = None) -> None:
    """A key/value view of one object (show commands)."""
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in data.items():
        if isinstance(value, (list, dict)) and key in ("events",):
            continue
        table.add_row(key, style_value(key, value))
    console.print(table)

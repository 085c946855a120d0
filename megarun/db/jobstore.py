"""Bulk reads and writes of job rows and their events (the hot paths, in plain SQL)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from peewee import SqliteDatabase

from megarun.core.lifecycle import JobSnapshot, Transition
from megarun.core.states import JobState, JobStatus
from megarun.db.connection import execute_many

CHUNK = 500  # ids per IN (...) query

_ROW_COLUMNS = (
    "id", "state", "status", "attempt", "runs", "max_attempts", "exit_code", "message",
    "agent", "started", "ended", "workdir",
)


@dataclass
class JobRow:
    """The mutable columns of one job, with its state machine snapshot."""

    snapshot: JobSnapshot
    exit_code: int | None = None
    message: str = ""
    agent: str | None = None
    started: float | None = None
    ended: float | None = None
    workdir: str | None = None
    changed: bool = False
    transitions: list[Transition] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.snapshot.id

    def record(self, final: JobSnapshot, transitions: list[Transition]) -> None:
        self.snapshot = final
        self.transitions.extend(transitions)
        self.changed = True


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _row_from_tuple(values: tuple[Any, ...]) -> JobRow:
    (job_id, state, status, attempt, runs, max_attempts, exit_code, message, agent, started,
     ended, workdir) = values
    snap = JobSnapshot(job_id, JobState(state), JobStatus(status), attempt, runs, max_attempts)
    return JobRow(snap, exit_code, message, agent, started, ended, workdir)


def load_rows(db: SqliteDatabase, job_ids: Iterable[int]) -> dict[int, JobRow]:
    """The JobRows of the given ids (missing ids are simply absent)."""
    ids = sorted(set(job_ids))
    rows: dict[int, JobRow] = {}
    columns = ", ".join(_ROW_COLUMNS)
    for part in chunks(ids):
        marks = ",".join("?" * len(part))
        sql = f"SELECT {columns} FROM job WHERE id IN ({marks})"  # noqa: S608
        for values in db.execute_sql(sql, tuple(part)):
            row = _row_from_tuple(values)
            rows[row.id] = row
    return rows


def load_rows_where(db: SqliteDatabase, where: str, params: tuple[Any, ...]) -> list[JobRow]:
    """JobRows selected by a WHERE clause written by megarun (values always bound)."""
    columns = ", ".join(_ROW_COLUMNS)
    sql = f"SELECT {columns} FROM job WHERE {where} ORDER BY id"  # noqa: S608
    return [_row_from_tuple(values) for values in db.execute_sql(sql, params)]


def save_rows(db: SqliteDatabase, rows: Iterable[JobRow], now: float | None = None) -> int:
    """Write changed rows and their transitions as events; call inside a transaction."""
    stamp = time.time() if now is None else now
    updates: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for row in rows:
        if not row.changed:
            continue
        snap = row.snapshot
        updates.append((snap.state.value, snap.status.value, snap.attempt, snap.runs,
                        row.exit_code, row.message, row.agent, row.started, row.ended,
                        row.workdir, snap.id))
        events.extend(event_tuple(t, stamp) for t in row.transitions)
        row.transitions = []
        row.changed = False
    execute_many(
        db,
        "UPDATE job SET state=?, status=?, attempt=?, runs=?, exit_code=?, message=?, agent=?, "
        "started=?, ended=?, workdir=? WHERE id=?",
        updates,
    )
    insert_events(db, events)
    return len(updates)


def event_tuple(t: Transition, stamp: float) -> tuple[Any, ...]:
    data = json.dumps(t.data, separators=(",", ":")) if t.data else None
    return (t.job_id, stamp, t.src.value, t.dst.value, t.status.value, t.attempt, t.message, data)


def insert_events(db: SqliteDatabase, events: list[tuple[Any, ...]]) -> None:
    execute_many(
        db,
        "INSERT INTO event (job, time, from_state, to_state, status, attempt, message, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        events,
    )


def children_of(db: SqliteDatabase, parent_ids: Iterable[int]) -> set[int]:
    ids = sorted(set(parent_ids))
    found: set[int] = set()
    for part in chunks(ids):
        marks = ",".join("?" * len(part))
        sql = f"SELECT child_id FROM job_dependency WHERE parent_id IN ({marks})"  # noqa: S608
        found.update(child for (child,) in db.execute_sql(sql, tuple(part)))
    return found


def parents_of(db: SqliteDatabase, child_ids: Iterable[int]) -> dict[int, list[tuple[int, str]]]:
    """Each child's (parent id, waiton mode) links."""
    ids = sorted(set(child_ids))
    parents: dict[int, list[tuple[int, str]]] = {}
    for part in chunks(ids):
        marks = ",".join("?" * len(part))
        sql = f"SELECT child_id, parent_id, mode FROM job_dependency WHERE child_id IN ({marks})"  # noqa: S608
        for child, parent, mode in db.execute_sql(sql, tuple(part)):
            parents.setdefault(child, []).append((parent, mode or "normal"))
    return parents

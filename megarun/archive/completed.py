# ruff: noqa: S608 - SQL here interpolates only schema ("main", "arc"), table and temp-table
# names from this module's constants and column names read from PRAGMA table_info; every value
# goes in as a parameter.
"""The completed-runs archive: finished runs move out of the working database into
`<area>/.megarun/completed-runs.db` (same schema) and back, so that the working database stays
small for years of runs.

A move never loses a run and never leaves one in both places, whatever step a crash stops:
(1) an intent row per run in the working db's run_move, (2) the copy in one transaction on the
destination, (3) counts verified per run (jobs, events, tags, dependencies, run tests), (4) the
source's rows deleted and the intent dropped. `recover` runs first in every archive command and
finishes (copy verified) or undoes (copy missing or short) every move a crash cut short.

Run and job ids are kept (they are never reused, see models.Run); event and run_test rows get
fresh ids in the destination, in their old order. The site, app and batch_job rows the jobs
refer to are copied by id (INSERT OR IGNORE) and stay in the source too. Dependencies are moved
when both jobs move (a test's waiton links stay inside its run).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypedDict

from peewee import SqliteDatabase

from megarun.archive.rowmove import (
    JOBS,
    RUNS,
    copy_staged,
    counts,
    delete_staged,
    drop_intents,
    stage,
    stage_runs,
    write_intents,
)
from megarun.archive.runselect import (
    HeldBack,
    RunSelection,
    RunStore,
    held_back_runs,
    move_lock,
    run_filters,
    select_finished_runs,
)
from megarun.core.faults import fault_point
from megarun.core.rollup import rollup_status
from megarun.db.connection import prepare_database_file, write_transaction
from megarun.db.fulldb import (
    ARCHIVE_SCHEMA,
    archive_uri,
    attach,
    attached,
    detach,
)
from megarun.db.jobstore import chunks
from megarun.errors import EnvironmentProblem

REDUCE = "reduce"
RESTORE = "restore"
#: `MEGARUN_FAULT` steps (megarun.core.faults): the process dies there, like kill -9.
FAULT_POINTS = (
    "reduce:after-intent", "reduce:after-copy", "reduce:after-verify", "reduce:after-delete",
    "restore:after-intent", "restore:after-copy", "restore:after-verify", "restore:after-delete",
)
#: Runs per copy/delete transaction pair: big enough to be fast, small enough that a crash
#: repeats little work and a reader waits little.
BATCH_RUNS = 500


@dataclass(frozen=True)
class MovedRun:
    id: int
    target: str
    runname: str
    jobs: int


@dataclass
class ArchiveResult:
    """What one reduce or restore did (or, dry, would do)."""

    direction: str
    archive: str
    dry_run: bool = False
    moved: list[MovedRun] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "target/runname: reason"
    recovered: list[str] = field(default_factory=list)
    seconds: float = 0.0
    older_than: float | None = None  # the age asked for (reduce); None: any
    held_back: HeldBack = field(default_factory=HeldBack)  # matched, but too young or open

    @property
    def jobs(self) -> int:
        return sum(run.jobs for run in self.moved)


class ArchivedRun(TypedDict):
    """A run of completed-runs.db as `archive ls` lists it."""

    id: int
    target: str
    runname: str
    created: float
    jobs: int
    statuses: dict[str, int]
    status: str


@dataclass(frozen=True)
class _Move:
    """One direction: where rows come from and go to (schema names on the connection)."""

    direction: str

    @property
    def source(self) -> str:
        return "main" if self.direction == REDUCE else ARCHIVE_SCHEMA

    @property
    def target(self) -> str:
        return ARCHIVE_SCHEMA if self.direction == REDUCE else "main"

    @property
    def target_name(self) -> str:
        return "completed-runs.db" if self.direction == REDUCE else "the working database"


#: `archive reduce` moves only runs idle this long, unless an age is given or one run is named.
DEFAULT_REDUCE_AGE = 30 * 86400.0
_GLOB_CHARS = frozenset("*?[")


def reduce_age(older_than: float | None, runname: str | None) -> float | None:
    """The age a reduce asks for: the one given; else none when `runname` names one run
    exactly (the user chose that run: its age does not matter), else the 30-day default."""
    if older_than is not None:
        return older_than
    if runname and not _GLOB_CHARS & set(runname):
        return None
    return DEFAULT_REDUCE_AGE


# -- entry points ---------------------------------------------------------------------------
def reduce_runs(store: RunStore, selection: RunSelection, dry_run: bool = False) -> ArchiveResult:
    """Move the finished runs `selection` picks into completed-runs.db."""
    return _run_move(store, _Move(REDUCE), selection, dry_run)


def restore_runs(store: RunStore, selection: RunSelection,
                 dry_run: bool = False) -> ArchiveResult:
    """Move archived runs `selection` picks back into the working database."""
    return _run_move(store, _Move(RESTORE), selection, dry_run)


def apply_rule(store: RunStore) -> ArchiveResult | None:
    """The area's `[archive] auto-reduce` rule (run by sync); None when the area has none."""
    age = store.area.config.archive_auto_reduce
    if age is None:
        return None
    return reduce_runs(store, RunSelection(older_than=age))


def recover(store: RunStore) -> list[str]:
    """Finish or undo the archive moves a crash cut short; one line per run settled."""
    if store.read_only:
        return []  # the mirror host: the home host recovers
    with move_lock(store.locks):
        if not store.area.completed_db_path.exists():
            return _drop_intents_without_archive(store.db)
        with _archive_attached(store) as db:
            return _recover(db)


def list_archived(store: RunStore, selection: RunSelection) -> Iterator[ArchivedRun]:
    """The archive's runs matching target/runname, oldest first: created, jobs and their
    status roll-up, read run by run (call `recover` first, as every archive command does)."""
    path = store.area.completed_db_path
    if not path.exists():
        return
    db = store.db
    own = not attached(db)
    if own:
        attach(db, archive_uri(path, read_only=True, immutable=store.read_only))
    try:
        yield from _archived_rows(db, selection)
    finally:
        if own:
            detach(db)


# -- the move -------------------------------------------------------------------------------
def _run_move(store: RunStore, move: _Move, selection: RunSelection,
              dry_run: bool) -> ArchiveResult:
    started = time.perf_counter()
    path, db = store.area.completed_db_path, store.db
    result = ArchiveResult(move.direction, str(path), dry_run, older_than=selection.older_than)
    with move_lock(store.locks):
        if not path.exists() and (dry_run or move.direction == RESTORE):
            result.recovered = _drop_intents_without_archive(db)
            if move.direction == REDUCE:  # a dry run: what would move; no archive to create
                result.moved = _describe(db, "main", select_finished_runs(db, selection, "main"))
                result.held_back = held_back_runs(db, selection, "main")
            return result
        with _archive_attached(store) as db:
            result.recovered = _recover(db)
            result.held_back = held_back_runs(db, selection, move.source)
            ids = select_finished_runs(db, selection, move.source)
            for batch in chunks(ids, BATCH_RUNS):
                _move_batch(db, move, batch, result)
    result.seconds = time.perf_counter() - started
    return result


def _move_batch(db: SqliteDatabase, move: _Move, ids: Sequence[int],
                result: ArchiveResult) -> None:
    ids = _without_conflicts(db, move, ids, result)
    runs = _describe(db, move.source, ids)
    if result.dry_run or not ids:
        result.moved.extend(runs)
        return
    with write_transaction(db):
        _write_intents(db, move, ids)
    fault_point(f"{move.direction}:after-intent")
    stage(db, move.source, ids)
    with write_transaction(db):
        copy_staged(db, move.source, move.target)
    fault_point(f"{move.direction}:after-copy")
    short = _unverified(db, move, ids)
    if short:
        _undo(db, move, short)
        result.refused.extend(f"{r.target}/{r.runname}: the copy did not verify; left in place"
                              for r in runs if r.id in short)
        ids = [i for i in ids if i not in short]
        stage(db, move.source, ids)
    fault_point(f"{move.direction}:after-verify")
    _finish(db, move, ids)
    result.moved.extend(r for r in runs if r.id in set(ids))


def _finish(db: SqliteDatabase, move: _Move, ids: Sequence[int]) -> None:
    """Step 4: delete the source's rows (staged in temp) and drop the intents. A reduce does
    both in one transaction on the working db; a restore deletes from the archive first, and a
    crash before the intent goes is settled by recovery (the run is only in main)."""
    if move.source == "main":
        with write_transaction(db):
            delete_staged(db, "main")
            drop_intents(db, ids)
        fault_point(f"{move.direction}:after-delete")
        return
    with write_transaction(db):
        delete_staged(db, move.source)
    fault_point(f"{move.direction}:after-delete")
    with write_transaction(db):
        drop_intents(db, ids)


def _without_conflicts(db: SqliteDatabase, move: _Move, ids: Sequence[int],
                       result: ArchiveResult) -> list[int]:
    """Leave out runs whose (target, runname) the destination holds under another id, and runs
    another kind of move (a migration) is still working on."""
    if not ids:
        return []
    stage_runs(db, ids)
    clash = db.execute_sql(
        f"SELECT s.id, s.target, s.runname, t.id FROM {move.source}.run s "
        f"JOIN {move.target}.run t ON t.target = s.target AND t.runname = s.runname "
        f"WHERE s.id IN (SELECT id FROM {RUNS}) AND t.id != s.id").fetchall()
    busy = db.execute_sql(f"SELECT m.run_id, r.target, r.runname FROM main.run_move m "
                          f"JOIN {move.source}.run r ON r.id = m.run_id "
                          f"WHERE m.run_id IN (SELECT id FROM {RUNS})").fetchall()
    left_out = {row[0] for row in clash} | {row[0] for row in busy}
    result.refused.extend(f"{t}/{n}: {move.target_name} already has a run of that name (id {o})"
                          for _, t, n, o in clash)
    result.refused.extend(f"{t}/{n}: another move of this run is in progress"
                          for _, t, n in busy)
    return [i for i in ids if i not in left_out]


def _describe(db: SqliteDatabase, schema: str, ids: Sequence[int]) -> list[MovedRun]:
    if not ids:
        return []
    stage_runs(db, ids)
    rows = db.execute_sql(
        f"SELECT r.id, r.target, r.runname, (SELECT count(*) FROM {schema}.job j "
        f"WHERE j.run_id = r.id) FROM {schema}.run r WHERE r.id IN (SELECT id FROM {RUNS})"
    ).fetchall()
    by_id = {row[0]: MovedRun(*row) for row in rows}
    return [by_id[i] for i in ids if i in by_id]


def _write_intents(db: SqliteDatabase, move: _Move, ids: Sequence[int]) -> None:
    path = db.execute_sql("PRAGMA database_list").fetchall()
    where = next((row[2] for row in path if row[1] == ARCHIVE_SCHEMA), None)
    write_intents(db, move.direction, where, ids)


# -- copy, verify, delete -------------------------------------------------------------------
def _unverified(db: SqliteDatabase, move: _Move, ids: Sequence[int]) -> list[int]:
    """Step 3: the staged runs whose copy differs from the source (none, unless the disk or
    another writer got in the way)."""
    source, target = counts(db, move.source), counts(db, move.target)
    return [i for i in ids if i not in target or target[i] != source.get(i)]


def _undo(db: SqliteDatabase, move: _Move, ids: Sequence[int]) -> None:
    """Delete the destination's copy of these runs and drop their intents."""
    stage(db, move.target, ids)
    with write_transaction(db):
        delete_staged(db, move.target)
    with write_transaction(db):
        drop_intents(db, ids)


# -- recovery -------------------------------------------------------------------------------
def _recover(db: SqliteDatabase) -> list[str]:
    """Settle every reduce/restore intent, then any run found in both databases."""
    notes: list[str] = []
    intents = db.execute_sql("SELECT run_id, direction FROM main.run_move WHERE direction IN "
                             "(?, ?) ORDER BY run_id", (REDUCE, RESTORE)).fetchall()
    for direction in (REDUCE, RESTORE):
        ids = [run for run, kind in intents if kind == direction]
        if ids:
            notes.extend(_settle(db, _Move(direction), ids))
    notes.extend(_settle_duplicates(db))
    return notes


def _settle(db: SqliteDatabase, move: _Move, ids: Sequence[int]) -> list[str]:
    """Finish the moves whose copy verifies; undo the others."""
    stage(db, move.source, ids)
    source, target = counts(db, move.source), counts(db, move.target)
    done = [i for i in ids if i in target and i not in source]
    verified = [i for i in ids if i in target and target[i] == source.get(i)]
    undone = [i for i in ids if i not in target]
    short = [i for i in ids if i in target and i in source and target[i] != source[i]]
    if verified:
        stage(db, move.source, verified)
        _finish(db, move, verified)
    if short:
        _undo(db, move, short)
    with write_transaction(db):
        drop_intents(db, done + undone)
    return ([f"run {i}: {move.direction} finished after an interruption" for i in verified + done]
            + [f"run {i}: {move.direction} undone after an interruption" for i in short + undone])


def _settle_duplicates(db: SqliteDatabase) -> list[str]:
    """A run in both databases with no intent: the working db's copy is the live one."""
    ids = [row[0] for row in db.execute_sql(
        f"SELECT id FROM {ARCHIVE_SCHEMA}.run WHERE id IN (SELECT id FROM main.run) "
        "AND id NOT IN (SELECT run_id FROM main.run_move) ORDER BY id").fetchall()]
    if not ids:
        return []
    stage(db, ARCHIVE_SCHEMA, ids)
    with write_transaction(db):
        delete_staged(db, ARCHIVE_SCHEMA)
    return [f"run {i}: was in both databases; the archive's copy was removed" for i in ids]


def _drop_intents_without_archive(db: SqliteDatabase) -> list[str]:
    """No archive file: no copy was ever made, every reduce intent is undone (a restore intent
    without an archive means the archive's rows are gone: the run is wherever main has it)."""
    ids = [row[0] for row in db.execute_sql(
        "SELECT run_id FROM main.run_move WHERE direction IN (?, ?)", (REDUCE, RESTORE))]
    if ids:
        with write_transaction(db):
            drop_intents(db, ids)
    return [f"run {i}: move undone after an interruption (no archive file)" for i in ids]


# -- attaching and locking ------------------------------------------------------------------
@contextmanager
def _archive_attached(store: RunStore) -> Iterator[SqliteDatabase]:
    """The working db's connection with completed-runs.db attached read-write (created first,
    in rollback-journal mode: it lives on the shared file system)."""
    path, db = store.area.completed_db_path, store.db
    if attached(db):
        raise EnvironmentProblem("completed-runs.db is already attached to this connection "
                                 "(--full-db and an archive move in one command)")
    prepare_database_file(path, journal="delete")
    attach(db, archive_uri(path, read_only=False))
    try:
        db.execute_sql(f"PRAGMA {ARCHIVE_SCHEMA}.cache_size = -64000")
        db.execute_sql(f"PRAGMA {ARCHIVE_SCHEMA}.synchronous = normal")
        yield db
    finally:
        for table in (RUNS, JOBS):
            db.execute_sql(f"DROP TABLE IF EXISTS {table}")
        detach(db)


def _archived_rows(db: SqliteDatabase, selection: RunSelection) -> Iterator[ArchivedRun]:
    clauses, params = run_filters(selection)
    clauses.insert(0, "1")
    cursor = db.execute_sql(
        f"SELECT r.id, r.target, r.runname, r.created, j.status, count(j.id) "
        f"FROM {ARCHIVE_SCHEMA}.run r LEFT JOIN {ARCHIVE_SCHEMA}.job j ON j.run_id = r.id "
        f"WHERE {' AND '.join(clauses)} GROUP BY r.id, j.status ORDER BY r.created, r.id",
        params)
    for run_id, groups in itertools.groupby(cursor, key=lambda row: row[0]):
        rows = list(groups)  # one run's status groups
        statuses = {status: count for *_, status, count in rows if status is not None}
        yield ArchivedRun(id=run_id, target=rows[0][1], runname=rows[0][2], created=rows[0][3],
                          jobs=sum(statuses.values()), statuses=statuses,
                          status=rollup_status(statuses))  # archived jobs have all ended

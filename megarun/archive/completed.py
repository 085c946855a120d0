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

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from peewee import SqliteDatabase

from megarun.archive.runselect import (
    HeldBack,
    RunSelection,
    held_back_runs,
    move_lock,
    run_filters,
    select_finished_runs,
)
from megarun.core.faults import fault_point
from megarun.core.rollup import rollup_status
from megarun.db.connection import (
    execute_many,
    prepare_database_file,
    write_transaction,
)
from megarun.db.fulldb import (
    ARCHIVE_SCHEMA,
    archive_uri,
    attach,
    attach_full,
    attached,
    common_columns,
    detach,
)
from megarun.db.jobstore import chunks
from megarun.errors import EnvironmentProblem
from megarun.homehost.context import Context

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
#: Tables copied with their ids (rows of a run) and with fresh ids (event, run_test).
_KEEP_IDS = ("run", "job", "job_tag", "job_dependency")
_FRESH_IDS = ("run_test", "event")
_RUNS = "temp.archive_runs"  # the batch being moved: run ids
_JOBS = "temp.archive_jobs"  # and their job ids


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

    def as_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "archive": self.archive, "dry_run": self.dry_run,
                "runs": [run.__dict__ for run in self.moved], "jobs": self.jobs,
                "refused": self.refused, "recovered": self.recovered,
                "older_than": self.older_than, "matched_but_left": self.held_back.as_dict(),
                "seconds": round(self.seconds, 3)}


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
def reduce_runs(ctx: Context, selection: RunSelection, dry_run: bool = False) -> ArchiveResult:
    """Move the finished runs `selection` picks into completed-runs.db."""
    return _run_move(ctx, _Move(REDUCE), selection, dry_run)


def restore_runs(ctx: Context, selection: RunSelection, dry_run: bool = False) -> ArchiveResult:
    """Move archived runs `selection` picks back into the working database."""
    return _run_move(ctx, _Move(RESTORE), selection, dry_run)


def apply_rule(ctx: Context) -> ArchiveResult | None:
    """The area's `[archive] auto-reduce` rule (run by sync); None when the area has none."""
    age = ctx.area.config.archive_auto_reduce
    if age is None:
        return None
    return reduce_runs(ctx, RunSelection(older_than=age))


def recover(ctx: Context) -> list[str]:
    """Finish or undo the archive moves a crash cut short; one line per run settled."""
    ctx.db  # noqa: B018 - opening it tells whether this host reads the mirror
    if getattr(ctx, "read_only", False):
        return []  # the mirror host: the home host recovers
    with move_lock(ctx):
        if not ctx.area.completed_db_path.exists():
            return _drop_intents_without_archive(ctx.db)
        with _archive_attached(ctx) as db:
            return _recover(db)


def include_archive(ctx: Context) -> bool:
    """`--full-db`: the command's later reads see archived runs too (megarun.db.fulldb);
    False when there is no archive yet."""
    return attach_full(ctx)


def list_archived(ctx: Context, selection: RunSelection) -> list[dict[str, Any]]:
    """The archive's runs matching target/runname: created, jobs and their status roll-up
    (call `recover` first, as every archive command does)."""
    path = ctx.area.completed_db_path
    if not path.exists():
        return []
    db = ctx.db  # first: opening it tells whether this host reads the mirror
    read_only_host = bool(getattr(ctx, "read_only", False))
    own = not attached(db)
    if own:
        attach(db, archive_uri(path, read_only=True, immutable=read_only_host))
    try:
        return _archived_rows(db, selection)
    finally:
        if own:
            detach(db)


# -- the move -------------------------------------------------------------------------------
def _run_move(ctx: Context, move: _Move, selection: RunSelection,
              dry_run: bool) -> ArchiveResult:
    started = time.perf_counter()
    result = ArchiveResult(move.direction, str(ctx.area.completed_db_path), dry_run,
                           older_than=selection.older_than)
    with move_lock(ctx):
        if not ctx.area.completed_db_path.exists() and (dry_run or move.direction == RESTORE):
            result.recovered = _drop_intents_without_archive(ctx.db)
            if move.direction == REDUCE:  # a dry run: what would move; no archive to create
                result.moved = _describe(ctx.db, "main", select_finished_runs(
                    ctx.db, selection, "main"))
                result.held_back = held_back_runs(ctx.db, selection, "main")
            return result
        with _archive_attached(ctx) as db:
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
    _stage(db, move.source, ids)
    with write_transaction(db):
        _copy(db, move.source, move.target)
    fault_point(f"{move.direction}:after-copy")
    short = _unverified(db, move, ids)
    if short:
        _undo(db, move, short)
        result.refused.extend(f"{r.target}/{r.runname}: the copy did not verify; left in place"
                              for r in runs if r.id in short)
        ids = [i for i in ids if i not in short]
        _stage(db, move.source, ids)
    fault_point(f"{move.direction}:after-verify")
    _finish(db, move, ids)
    result.moved.extend(r for r in runs if r.id in set(ids))


def _finish(db: SqliteDatabase, move: _Move, ids: Sequence[int]) -> None:
    """Step 4: delete the source's rows (staged in temp) and drop the intents. A reduce does
    both in one transaction on the working db; a restore deletes from the archive first, and a
    crash before the intent goes is settled by recovery (the run is only in main)."""
    if move.source == "main":
        with write_transaction(db):
            _delete_staged(db, "main")
            _drop_intents(db, ids)
        fault_point(f"{move.direction}:after-delete")
        return
    with write_transaction(db):
        _delete_staged(db, move.source)
    fault_point(f"{move.direction}:after-delete")
    with write_transaction(db):
        _drop_intents(db, ids)


def _without_conflicts(db: SqliteDatabase, move: _Move, ids: Sequence[int],
                       result: ArchiveResult) -> list[int]:
    """Leave out runs whose (target, runname) the destination holds under another id, and runs
    another kind of move (a migration) is still working on."""
    if not ids:
        return []
    _stage_runs(db, ids)
    clash = db.execute_sql(
        f"SELECT s.id, s.target, s.runname, t.id FROM {move.source}.run s "
        f"JOIN {move.target}.run t ON t.target = s.target AND t.runname = s.runname "
        f"WHERE s.id IN (SELECT id FROM {_RUNS}) AND t.id != s.id").fetchall()
    busy = db.execute_sql(f"SELECT m.run_id, r.target, r.runname FROM main.run_move m "
                          f"JOIN {move.source}.run r ON r.id = m.run_id "
                          f"WHERE m.run_id IN (SELECT id FROM {_RUNS})").fetchall()
    left_out = {row[0] for row in clash} | {row[0] for row in busy}
    result.refused.extend(f"{t}/{n}: {move.target_name} already has a run of that name (id {o})"
                          for _, t, n, o in clash)
    result.refused.extend(f"{t}/{n}: another move of this run is in progress"
                          for _, t, n in busy)
    return [i for i in ids if i not in left_out]


def _describe(db: SqliteDatabase, schema: str, ids: Sequence[int]) -> list[MovedRun]:
    if not ids:
        return []
    _stage_runs(db, ids)
    rows = db.execute_sql(
        f"SELECT r.id, r.target, r.runname, (SELECT count(*) FROM {schema}.job j "
        f"WHERE j.run_id = r.id) FROM {schema}.run r WHERE r.id IN (SELECT id FROM {_RUNS})"
    ).fetchall()
    by_id = {row[0]: MovedRun(*row) for row in rows}
    return [by_id[i] for i in ids if i in by_id]


def _write_intents(db: SqliteDatabase, move: _Move, ids: Sequence[int]) -> None:
    path = db.execute_sql("PRAGMA database_list").fetchall()
    where = next((row[2] for row in path if row[1] == ARCHIVE_SCHEMA), None)
    now = time.time()
    execute_many(db, "INSERT INTO main.run_move (run_id, direction, destination, started) "
                     "VALUES (?, ?, ?, ?)", [(i, move.direction, where, now) for i in ids])


def _drop_intents(db: SqliteDatabase, ids: Sequence[int]) -> None:
    execute_many(db, "DELETE FROM main.run_move WHERE run_id = ?", [(i,) for i in ids])


# -- copy, verify, delete -------------------------------------------------------------------
def _stage_runs(db: SqliteDatabase, ids: Sequence[int]) -> None:
    db.execute_sql(f"CREATE TEMP TABLE IF NOT EXISTS {_RUNS.split('.')[1]} "
                   "(id INTEGER PRIMARY KEY)")
    db.execute_sql(f"DELETE FROM {_RUNS}")
    execute_many(db, f"INSERT INTO {_RUNS} (id) VALUES (?)", [(i,) for i in ids])


def _stage(db: SqliteDatabase, schema: str, ids: Sequence[int]) -> None:
    """The batch's runs and their jobs (in `schema`) into temp tables every step reads."""
    _stage_runs(db, ids)
    db.execute_sql(f"CREATE TEMP TABLE IF NOT EXISTS {_JOBS.split('.')[1]} "
                   "(id INTEGER PRIMARY KEY)")
    db.execute_sql(f"DELETE FROM {_JOBS}")
    db.execute_sql(f"INSERT INTO {_JOBS} (id) SELECT id FROM {schema}.job "
                   f"WHERE run_id IN (SELECT id FROM {_RUNS})")


def _copy(db: SqliteDatabase, source: str, target: str) -> None:
    """Step 2 (inside the caller's transaction): the staged runs' rows, parents first."""
    jobs = f"SELECT id FROM {_JOBS}"
    sites = (f"SELECT site_id FROM {source}.job WHERE id IN ({jobs}) UNION "
             f"SELECT site_id FROM {source}.batch_job WHERE id IN "
             f"(SELECT batch_job_id FROM {source}.job WHERE id IN ({jobs}))")
    _copy_rows(db, "site", source, target, f"id IN ({sites})", ignore=True)
    _copy_rows(db, "app", source, target,
               f"id IN (SELECT app_id FROM {source}.job WHERE id IN ({jobs}))", ignore=True)
    _copy_rows(db, "batch_job", source, target,
               f"id IN (SELECT batch_job_id FROM {source}.job WHERE id IN ({jobs}))", ignore=True)
    _copy_rows(db, "run", source, target, f"id IN (SELECT id FROM {_RUNS})")
    _copy_rows(db, "run_test", source, target, f"run_id IN (SELECT id FROM {_RUNS})")
    _copy_rows(db, "job", source, target, f"id IN ({jobs})")
    _copy_rows(db, "job_tag", source, target, f"job_id IN ({jobs})")
    # `+`: look up children by index, test parents against the set (probing the (parent,
    # child) index with every pair of the two sets would take jobs squared steps)
    _copy_rows(db, "job_dependency", source, target,
               f"child_id IN ({jobs}) AND +parent_id IN ({jobs})")
    _copy_rows(db, "event", source, target, f"job IN ({jobs})")


def _copy_rows(db: SqliteDatabase, table: str, source: str, target: str, where: str,
               ignore: bool = False) -> None:
    columns = common_columns(db, table, target, source)
    if table in _FRESH_IDS:
        columns = [c for c in columns if c != "id"]
    cols = ", ".join(f'"{c}"' for c in columns)
    order = " ORDER BY rowid" if table in ("run", "job", *_FRESH_IDS) else ""
    db.execute_sql(f"INSERT {'OR IGNORE ' if ignore else ''}INTO {target}.\"{table}\" ({cols}) "
                   f"SELECT {cols} FROM {source}.\"{table}\" WHERE {where}{order}")


def _counts(db: SqliteDatabase, schema: str) -> dict[int, tuple[int, ...]]:
    """Per staged run: (jobs, events, tags, dependencies, run tests) in `schema`. The run's
    jobs are found in `schema` itself, so that a copy missing jobs counts short."""
    in_runs = f"IN (SELECT id FROM {_RUNS})"
    queries = (
        f"SELECT run_id, count(*) FROM {schema}.job WHERE run_id {in_runs} GROUP BY run_id",
        f"SELECT j.run_id, count(*) FROM {schema}.event e JOIN {schema}.job j ON j.id = e.job "
        f"WHERE j.run_id {in_runs} GROUP BY j.run_id",
        f"SELECT j.run_id, count(*) FROM {schema}.job_tag t JOIN {schema}.job j "
        f"ON j.id = t.job_id WHERE j.run_id {in_runs} GROUP BY j.run_id",
        f"SELECT j.run_id, count(*) FROM {schema}.job_dependency d JOIN {schema}.job j "
        f"ON j.id = d.child_id WHERE j.run_id {in_runs} AND +d.parent_id IN "
        f"(SELECT id FROM {schema}.job WHERE run_id {in_runs}) GROUP BY j.run_id",
        f"SELECT run_id, count(*) FROM {schema}.run_test WHERE run_id {in_runs} GROUP BY run_id",
    )
    present = [row[0] for row in db.execute_sql(
        f"SELECT id FROM {schema}.run WHERE id {in_runs}").fetchall()]
    per_query = [dict(db.execute_sql(sql).fetchall()) for sql in queries]
    return {run: tuple(counts.get(run, 0) for counts in per_query) for run in present}


def _unverified(db: SqliteDatabase, move: _Move, ids: Sequence[int]) -> list[int]:
    """Step 3: the staged runs whose copy differs from the source (none, unless the disk or
    another writer got in the way)."""
    source, target = _counts(db, move.source), _counts(db, move.target)
    return [i for i in ids if i not in target or target[i] != source.get(i)]


def _delete_staged(db: SqliteDatabase, schema: str) -> None:
    """The staged runs' rows in `schema`, children first (inside the caller's transaction)."""
    jobs = f"SELECT id FROM {_JOBS}"
    db.execute_sql(f"DELETE FROM {schema}.event WHERE job IN ({jobs})")
    db.execute_sql(f"DELETE FROM {schema}.job_tag WHERE job_id IN ({jobs})")
    db.execute_sql(f"DELETE FROM {schema}.job_dependency WHERE child_id IN ({jobs}) "
                   f"OR parent_id IN ({jobs})")
    if schema == "main":
        db.execute_sql(f"DELETE FROM main.stage_out_due WHERE job_id IN ({jobs})")
    db.execute_sql(f"DELETE FROM {schema}.run_test WHERE run_id IN "
                   f"(SELECT id FROM {_RUNS})")
    db.execute_sql(f"DELETE FROM {schema}.job WHERE id IN ({jobs})")
    db.execute_sql(f"DELETE FROM {schema}.run WHERE id IN (SELECT id FROM {_RUNS})")


def _undo(db: SqliteDatabase, move: _Move, ids: Sequence[int]) -> None:
    """Delete the destination's copy of these runs and drop their intents."""
    _stage(db, move.target, ids)
    with write_transaction(db):
        _delete_staged(db, move.target)
    with write_transaction(db):
        _drop_intents(db, ids)


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
    _stage(db, move.source, ids)
    source, target = _counts(db, move.source), _counts(db, move.target)
    done = [i for i in ids if i in target and i not in source]
    verified = [i for i in ids if i in target and target[i] == source.get(i)]
    undone = [i for i in ids if i not in target]
    short = [i for i in ids if i in target and i in source and target[i] != source[i]]
    if verified:
        _stage(db, move.source, verified)
        _finish(db, move, verified)
    if short:
        _undo(db, move, short)
    with write_transaction(db):
        _drop_intents(db, done + undone)
    return ([f"run {i}: {move.direction} finished after an interruption" for i in verified + done]
            + [f"run {i}: {move.direction} undone after an interruption" for i in short + undone])


def _settle_duplicates(db: SqliteDatabase) -> list[str]:
    """A run in both databases with no intent: the working db's copy is the live one."""
    ids = [row[0] for row in db.execute_sql(
        f"SELECT id FROM {ARCHIVE_SCHEMA}.run WHERE id IN (SELECT id FROM main.run) "
        "AND id NOT IN (SELECT run_id FROM main.run_move) ORDER BY id").fetchall()]
    if not ids:
        return []
    _stage(db, ARCHIVE_SCHEMA, ids)
    with write_transaction(db):
        _delete_staged(db, ARCHIVE_SCHEMA)
    return [f"run {i}: was in both databases; the archive's copy was removed" for i in ids]


def _drop_intents_without_archive(db: SqliteDatabase) -> list[str]:
    """No archive file: no copy was ever made, every reduce intent is undone (a restore intent
    without an archive means the archive's rows are gone: the run is wherever main has it)."""
    ids = [row[0] for row in db.execute_sql(
        "SELECT run_id FROM main.run_move WHERE direction IN (?, ?)", (REDUCE, RESTORE))]
    if ids:
        with write_transaction(db):
            _drop_intents(db, ids)
    return [f"run {i}: move undone after an interruption (no archive file)" for i in ids]


# -- attaching and locking ------------------------------------------------------------------
@contextmanager
def _archive_attached(ctx: Context) -> Iterator[SqliteDatabase]:
    """The working db's connection with completed-runs.db attached read-write (created first,
    in rollback-journal mode: it lives on the shared file system)."""
    path = ctx.area.completed_db_path
    db = ctx.db
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
        for table in (_RUNS, _JOBS):
            db.execute_sql(f"DROP TABLE IF EXISTS {table}")
        detach(db)


def _archived_rows(db: SqliteDatabase, selection: RunSelection) -> list[dict[str, Any]]:
    clauses, params = run_filters(selection)
    clauses.insert(0, "1")
    rows = db.execute_sql(
        f"SELECT r.id, r.target, r.runname, r.created, j.status, count(j.id) "
        f"FROM {ARCHIVE_SCHEMA}.run r LEFT JOIN {ARCHIVE_SCHEMA}.job j ON j.run_id = r.id "
        f"WHERE {' AND '.join(clauses)} GROUP BY r.id, j.status ORDER BY r.created, r.id",
        params).fetchall()
    runs: dict[int, dict[str, Any]] = {}
    for run_id, target, runname, created, status, count in rows:
        entry = runs.setdefault(run_id, {"id": run_id, "target": target, "runname": runname,
                                         "created": created, "jobs": 0, "statuses": {}})
        if status is not None:
            entry["jobs"] += count
            entry["statuses"][status] = count
    for entry in runs.values():
        entry["status"] = rollup_status(entry["statuses"])  # archived jobs have all ended
    return list(runs.values())

"""Migration between areas: finished runs copied into another area's working database, with new
ids there, then marked MOVED here (their jobs, events, tags, dependencies and run tests deleted
here; their files stay where they are).

A move keeps the archive's discipline, so that a crash at any step loses no run and leaves none
in both places once the next command ran:

1. intent rows in run_move (working db, direction "migrate", the destination's root);
2. the copy, in one transaction on the destination (runs, run tests, jobs, tags, dependencies,
   events; sites and apps mapped by name);
3. the counts verified per run;
4. one transaction here: jobs, events and run tests deleted, runs marked MOVED, intents dropped.

`recover_migrations` (run first by every migrate and by sync) finishes a move whose copy is
complete and undoes one whose copy is missing. The destination's copy is recognised by its
(target, runname, created), which the copy keeps.

Sites are mapped by name but never copied: a copied site row would make the destination's sync
read the source area's spool (the same work dir) and take in events of jobs it does not know.
A job whose site the destination lacks keeps no site there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict
from urllib.parse import quote

from peewee import SqliteDatabase

from megarun.archive.runselect import RunSelection, RunStore, move_lock, select_finished_runs
from megarun.config.area import Area, locate_area
from megarun.core.faults import fault_point
from megarun.db.connection import (
    execute_many,
    prepare_database_file,
    write_transaction,
)
from megarun.db.fulldb import common_columns
from megarun.db.jobstore import chunks
from megarun.errors import EnvironmentProblem, MegarunError, UsageError
from megarun.homehost.home import working_db_path

#: Crash injection points between the steps of a move (MEGARUN_FAULT, tests).
MIGRATE_FAULTS = ("migrate:after-intent", "migrate:during-copy", "migrate:after-copy",
                  "migrate:after-verify", "migrate:after-delete")
#: Runs moved per intent/copy/verify/delete round: bounds the transactions' size.
BATCH_RUNS = 200
_COUNTED = ("jobs", "events", "tags", "deps", "run_tests")


class _Run(TypedDict):
    run: int
    target: str
    runname: str


class _RunJobs(_Run):
    jobs: int


class MigratedRun(_RunJobs, total=False):
    """A run a migration moved (or, dry, would move); `dest_run`, its id in the destination,
    once moved (the base classes hold the keys always set: Python 3.10 has no NotRequired)."""

    dest_run: int


class RefusedRun(_Run):
    """A run a migration leaves here, and why."""

    reason: str


@dataclass
class MigrateResult:
    """What one migration did; `error` set when it could not run at all (sync rules)."""

    destination: str
    selection: str
    dry_run: bool = False
    moved: list[MigratedRun] = field(default_factory=list)
    refused: list[RefusedRun] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    error: str = ""

    def summary(self) -> str:
        """One line for notes: what moved where, what was refused."""
        if self.error:
            return f"migrate to {self.destination}: {self.error}"
        verb = "would move" if self.dry_run else "moved"
        jobs = sum(m["jobs"] for m in self.moved)
        text = f"migrate to {self.destination}: {verb} {len(self.moved)} run(s), {jobs} job(s)"
        return text + (f"; {len(self.refused)} refused" if self.refused else "")


# -- the destination ---------------------------------------------------------------------------
def destination_area(here: Area, destination: str | Path) -> Area:
    """The destination area (validated: an area, and not `here`)."""
    area = locate_area(str(Path(destination).expanduser().resolve()))
    if area.root == here.root:
        raise UsageError(f"the destination {area.root} is this area itself")
    return area


@contextmanager
def attached(db: SqliteDatabase, path: Path, read_only: bool = False) -> Iterator[None]:
    """The database at `path` attached as `dest` for the duration (outside any transaction)."""
    uri = "file:" + quote(str(path)) + ("?mode=ro" if read_only else "")
    db.execute_sql("ATTACH DATABASE ? AS dest", (uri,))
    try:
        yield
    finally:
        db.execute_sql("DETACH DATABASE dest")


# -- migrate -----------------------------------------------------------------------------------
def migrate_runs(store: RunStore, destination: str | Path, selection: RunSelection,
                 dry_run: bool = False, now: float | None = None) -> MigrateResult:
    """Move the finished runs that `selection` picks into the area at `destination`."""
    dest = destination_area(store.area, destination)
    result = MigrateResult(str(dest.root), selection.describe(), dry_run)
    db, dest_db = store.db, working_db_path(dest)
    if dry_run:
        with _maybe_attached(db, dest_db):
            ids = _candidates(db, selection, now)
            result.refused = _refusals(db, ids, dest_db.exists())
            refused = {r["run"] for r in result.refused}
            result.moved = _describe(db, [i for i in ids if i not in refused])
        return result
    with move_lock(store.locks):
        result.recovered = _recover_all(db)
        prepare_database_file(dest_db)
        with attached(db, dest_db):
            ids = _candidates(db, selection, now)
            result.refused = _refusals(db, ids, True)
            refused = {r["run"] for r in result.refused}
            chosen = [i for i in ids if i not in refused]
            for batch in chunks(chosen, BATCH_RUNS):
                result.moved.extend(_move_batch(db, list(batch), str(dest.root)))
    return result


@contextmanager
def _maybe_attached(db: SqliteDatabase, path: Path) -> Iterator[None]:
    """A dry run reads the destination if it has a database, and never creates one."""
    if path.exists():
        with attached(db, path, read_only=True):
            yield
    else:
        yield


def _candidates(db: SqliteDatabase, selection: RunSelection, now: float | None) -> list[int]:
    """Finished runs picked by `selection`, leaving out runs a move is still pending for."""
    pending = {r[0] for r in db.execute_sql("SELECT run_id FROM main.run_move").fetchall()}
    return [i for i in select_finished_runs(db, selection, now=now) if i not in pending]


def _refusals(db: SqliteDatabase, ids: Sequence[int], attached_dest: bool) -> list[RefusedRun]:
    """Runs whose (target, runname) the destination already has: they stay here."""
    if not ids or not attached_dest:
        return []
    _fill_ids(db, ids)
    rows = db.execute_sql(
        "SELECT r.id, r.target, r.runname FROM main.run r JOIN temp.migrate_ids i ON i.id = r.id "
        "WHERE EXISTS (SELECT 1 FROM dest.run d WHERE d.target = r.target "
        "AND d.runname = r.runname) ORDER BY r.id").fetchall()
    return [RefusedRun(run=rid, target=t, runname=n,
                       reason=f"the destination already has a run {t}/{n}") for rid, t, n in rows]


def _describe(db: SqliteDatabase, ids: Sequence[int]) -> list[MigratedRun]:
    if not ids:
        return []
    _fill_ids(db, ids)
    rows = db.execute_sql(
        "SELECT r.id, r.target, r.runname, (SELECT count(*) FROM main.job j WHERE j.run_id = r.id)"
        " FROM main.run r JOIN temp.migrate_ids i ON i.id = r.id ORDER BY r.id").fetchall()
    return [MigratedRun(run=rid, target=t, runname=n, jobs=jobs) for rid, t, n, jobs in rows]


def _move_batch(db: SqliteDatabase, ids: list[int], dest_root: str) -> list[MigratedRun]:
    """Intent, copy, verify, delete for one batch of runs."""
    moved = _describe(db, ids)
    started = time.time()
    with write_transaction(db):
        execute_many(db, "INSERT INTO main.run_move (run_id, direction, destination, started) "
                     "VALUES (?, 'migrate', ?, ?)", [(i, dest_root, started) for i in ids])
    fault_point("migrate:after-intent")
    try:
        new_ids = _copy(db, ids)
    except BaseException:
        _drop_intents(db, ids)  # nothing was copied: the runs simply stay here
        raise
    fault_point("migrate:after-copy")
    short = _incomplete(db, new_ids)
    if short:
        _undo(db, {old: new_ids[old] for old in short})
        raise EnvironmentProblem(f"the copy of run(s) {', '.join(map(str, short))} did not "
                                 "verify; they stay here")
    fault_point("migrate:after-verify")
    _forget_here(db, ids, dest_root)
    fault_point("migrate:after-delete")
    for entry in moved:
        entry["dest_run"] = new_ids[entry["run"]]
    return moved


# -- the copy ----------------------------------------------------------------------------------
def _copy(db: SqliteDatabase, ids: list[int]) -> dict[int, int]:
    """Copy the runs into `dest` in one transaction; return old run id -> new run id."""
    _fill_ids(db, ids)
    for table in ("migrate_run_map", "migrate_job_map", "migrate_site_map", "migrate_app_map"):
        db.execute_sql(f"CREATE TEMP TABLE IF NOT EXISTS {table} "
                       "(old INTEGER PRIMARY KEY, new INTEGER)")
        db.execute_sql(f"DELETE FROM temp.{table}")  # noqa: S608 - fixed names
    with write_transaction(db):
        _map_ids(db, "run", "SELECT id FROM main.run WHERE id IN (SELECT id FROM temp.migrate_ids)",
                 "migrate_run_map")
        _map_ids(db, "job", "SELECT id FROM main.job WHERE run_id IN "
                 "(SELECT id FROM temp.migrate_ids)", "migrate_job_map")
        _map_sites(db)
        _map_apps(db)
        _copy_rows(db)
        fault_point("migrate:during-copy")
    rows = db.execute_sql("SELECT old, new FROM temp.migrate_run_map").fetchall()
    return {int(old): int(new) for old, new in rows}


def _next_id(db: SqliteDatabase, table: str) -> int:
    """The first id the destination never used for `table` (AUTOINCREMENT: never reuse)."""
    seq = db.execute_sql("SELECT coalesce(max(seq), 0) FROM dest.sqlite_sequence WHERE name = ?",
                         (table,)).fetchone()[0]
    top = db.execute_sql(f"SELECT coalesce(max(id), 0) FROM dest.{table}").fetchone()[0]  # noqa: S608
    return int(max(seq, top)) + 1


def _map_ids(db: SqliteDatabase, table: str, select_old: str, map_table: str) -> None:
    """New ids in the destination for the rows `select_old` picks, in the same order."""
    first = _next_id(db, table)
    db.execute_sql(f"INSERT INTO temp.{map_table} (old, new) "  # noqa: S608 - fixed names
                   f"SELECT id, ? + row_number() OVER (ORDER BY id) - 1 FROM ({select_old})",
                   (first,))


def _map_sites(db: SqliteDatabase) -> None:
    """Sites by name (never copied: see the module's docstring)."""
    db.execute_sql(
        "INSERT INTO temp.migrate_site_map (old, new) SELECT s.id, d.id FROM main.site s "
        "JOIN dest.site d ON d.name = s.name WHERE s.id IN (SELECT j.site_id FROM main.job j "
        "JOIN temp.migrate_job_map m ON m.old = j.id)")


def _map_apps(db: SqliteDatabase) -> None:
    """Apps by name; an app the destination lacks is copied (a definition, no I/O)."""
    used = "SELECT j.app_id FROM main.job j JOIN temp.migrate_job_map m ON m.old = j.id"
    cols = [c for c in _common_columns(db, "app") if c != "id"]
    names = ", ".join(cols)
    db.execute_sql(f"INSERT INTO dest.app ({names}) SELECT {names} FROM main.app "  # noqa: S608
                   f"WHERE id IN ({used}) AND name NOT IN (SELECT name FROM dest.app)")
    db.execute_sql("INSERT INTO temp.migrate_app_map (old, new) "  # noqa: S608
                   "SELECT a.id, d.id FROM main.app a "
                   f"JOIN dest.app d ON d.name = a.name WHERE a.id IN ({used})")


def _copy_rows(db: SqliteDatabase) -> None:
    """Runs, run tests, jobs, tags, dependencies and events, with explicit column lists (the
    column order differs between a migrated database and a fresh one)."""
    run_cols = [c for c in _common_columns(db, "run") if c not in ("id", "moved_to")]
    _insert_select(db, "run", ["id", *run_cols], ["m.new", *(f"r.{c}" for c in run_cols)],
                   "main.run r JOIN temp.migrate_run_map m ON m.old = r.id")
    test_cols = [c for c in _common_columns(db, "run_test") if c not in ("id", "run_id")]
    _insert_select(db, "run_test", ["run_id", *test_cols], ["m.new", *(f"t.{c}" for c in test_cols)],
                   "main.run_test t JOIN temp.migrate_run_map m ON m.old = t.run_id")
    job_cols = [c for c in _common_columns(db, "job")
                if c not in ("id", "run_id", "site_id", "app_id", "batch_job_id")]
    _insert_select(db, "job", ["id", "run_id", "site_id", "app_id", "batch_job_id", *job_cols],
                   ["jm.new", "rm.new", "sm.new", "am.new", "NULL", *(f"j.{c}" for c in job_cols)],
                   "main.job j JOIN temp.migrate_job_map jm ON jm.old = j.id "
                   "JOIN temp.migrate_run_map rm ON rm.old = j.run_id "
                   "LEFT JOIN temp.migrate_site_map sm ON sm.old = j.site_id "
                   "LEFT JOIN temp.migrate_app_map am ON am.old = j.app_id")
    _insert_select(db, "job_tag", ["job_id", "key", "value"], ["m.new", "t.key", "t.value"],
                   "main.job_tag t JOIN temp.migrate_job_map m ON m.old = t.job_id")
    _insert_select(db, "job_dependency", ["parent_id", "child_id", "mode"],
                   ["p.new", "c.new", "d.mode"],
                   "main.job_dependency d JOIN temp.migrate_job_map p ON p.old = d.parent_id "
                   "JOIN temp.migrate_job_map c ON c.old = d.child_id")
    event_cols = [c for c in _common_columns(db, "event") if c not in ("id", "job")]
    _insert_select(db, "event", ["job", *event_cols], ["m.new", *(f"e.{c}" for c in event_cols)],
                   "main.event e JOIN temp.migrate_job_map m ON m.old = e.job", order="e.id")


def _common_columns(db: SqliteDatabase, table: str) -> list[str]:
    """Columns `table` has both here and in the destination, in this database's order."""
    return common_columns(db, table, "main", "dest")


def _insert_select(db: SqliteDatabase, table: str, columns: Sequence[str],
                   values: Sequence[str], source: str, order: str = "") -> None:
    sql = (f"INSERT INTO dest.{table} ({', '.join(columns)}) SELECT {', '.join(values)} "  # noqa: S608
           f"FROM {source}" + (f" ORDER BY {order}" if order else ""))
    db.execute_sql(sql)


# -- verify ------------------------------------------------------------------------------------
def _counts(db: SqliteDatabase, schema: str, run_ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """Per run: jobs, events, tags, dependencies (both ends in these runs), run tests."""
    _fill_ids(db, run_ids, "migrate_count_ids")
    s = schema
    rows = db.execute_sql(
        f"SELECT i.id, "  # noqa: S608 - schema is main or dest
        f"(SELECT count(*) FROM {s}.job j WHERE j.run_id = i.id), "
        f"(SELECT count(*) FROM {s}.event e JOIN {s}.job j ON j.id = e.job WHERE j.run_id = i.id), "
        f"(SELECT count(*) FROM {s}.job_tag t JOIN {s}.job j ON j.id = t.job_id "
        f"WHERE j.run_id = i.id), "
        f"(SELECT count(*) FROM {s}.job_dependency d JOIN {s}.job c ON c.id = d.child_id "
        f"JOIN {s}.job p ON p.id = d.parent_id WHERE c.run_id = i.id "
        f"AND p.run_id IN (SELECT id FROM temp.migrate_count_ids)), "
        f"(SELECT count(*) FROM {s}.run_test t WHERE t.run_id = i.id) "
        f"FROM temp.migrate_count_ids i").fetchall()
    return {int(r[0]): tuple(int(x) for x in r[1:]) for r in rows}


def _incomplete(db: SqliteDatabase, new_ids: dict[int, int]) -> list[int]:
    """Runs (old ids) whose copy lacks some of their rows; a destination that gained rows since
    (a run continued there) is complete."""
    here = _counts(db, "main", list(new_ids))
    there = _counts(db, "dest", list(new_ids.values()))
    return [old for old, new in new_ids.items()
            if any(t < h for h, t in zip(here[old], there[new], strict=True))]


# -- here --------------------------------------------------------------------------------------
def _forget_here(db: SqliteDatabase, ids: Sequence[int], dest_root: str) -> None:
    """One transaction: the runs' records go, the runs become MOVED tombstones, intents drop."""
    _fill_ids(db, ids)
    inside = "(SELECT id FROM temp.migrate_ids)"
    with write_transaction(db):
        db.execute_sql("DELETE FROM main.event WHERE job IN (SELECT id FROM main.job "  # noqa: S608
                       f"WHERE run_id IN {inside})")
        db.execute_sql(f"DELETE FROM main.job WHERE run_id IN {inside}")  # noqa: S608 - cascades
        db.execute_sql(f"DELETE FROM main.run_test WHERE run_id IN {inside}")  # noqa: S608
        db.execute_sql(f"UPDATE main.run SET state = 'MOVED', moved_to = ? "  # noqa: S608
                       f"WHERE id IN {inside}", (dest_root,))
        db.execute_sql(f"DELETE FROM main.run_move WHERE run_id IN {inside}")  # noqa: S608


def _drop_intents(db: SqliteDatabase, ids: Sequence[int]) -> None:
    with write_transaction(db):
        execute_many(db, "DELETE FROM main.run_move WHERE run_id = ? AND direction = 'migrate'",
                     [(i,) for i in ids])


def _undo(db: SqliteDatabase, copies: dict[int, int]) -> None:
    """Delete the destination's incomplete copies (new ids), then drop the intents (old ids)."""
    if copies:
        _fill_ids(db, list(copies.values()))
        inside = "(SELECT id FROM temp.migrate_ids)"
        with write_transaction(db):
            db.execute_sql("DELETE FROM dest.event WHERE job IN (SELECT id FROM dest.job "  # noqa: S608
                           f"WHERE run_id IN {inside})")
            db.execute_sql(f"DELETE FROM dest.job WHERE run_id IN {inside}")  # noqa: S608
            db.execute_sql(f"DELETE FROM dest.run_test WHERE run_id IN {inside}")  # noqa: S608
            db.execute_sql(f"DELETE FROM dest.run WHERE id IN {inside}")  # noqa: S608
    _drop_intents(db, list(copies))


def _fill_ids(db: SqliteDatabase, ids: Sequence[int], table: str = "migrate_ids") -> None:
    db.execute_sql(f"CREATE TEMP TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY)")
    db.execute_sql(f"DELETE FROM temp.{table}")  # noqa: S608 - fixed names
    execute_many(db, f"INSERT OR IGNORE INTO temp.{table} (id) VALUES (?)",  # noqa: S608
                 [(i,) for i in ids])


# -- recovery ----------------------------------------------------------------------------------
def recover_migrations(store: RunStore) -> list[str]:
    """Finish or undo the moves a crash cut short; one line per destination that had any.

    A destination that cannot be read now keeps its intents (the runs stay whole here and are
    not picked again) and is tried at the next command.
    """
    if not store.db.execute_sql("SELECT 1 FROM main.run_move WHERE direction = 'migrate' "
                                "LIMIT 1").fetchone():
        return []  # the usual case, without taking the lock
    with move_lock(store.locks):
        return _recover_all(store.db)


def _recover_all(db: SqliteDatabase) -> list[str]:
    rows = db.execute_sql("SELECT run_id, destination FROM main.run_move "
                          "WHERE direction = 'migrate' ORDER BY run_id").fetchall()
    by_destination: dict[str, list[int]] = {}
    for run_id, destination in rows:
        by_destination.setdefault(str(destination), []).append(int(run_id))
    return [_recover_to(db, dest, ids) for dest, ids in by_destination.items()]


def _recover_to(db: SqliteDatabase, destination: str, ids: list[int]) -> str:
    try:
        dest_db = working_db_path(locate_area(destination))
    except MegarunError as exc:
        return f"{len(ids)} interrupted move(s) to {destination} left pending: {exc}"
    if not dest_db.exists():
        _drop_intents(db, ids)
        return f"{len(ids)} interrupted move(s) to {destination} undone (nothing was copied)"
    with attached(db, dest_db):
        copies = _copies_there(db, ids)
        short = set(_incomplete(db, copies)) if copies else set()
        complete = [old for old in copies if old not in short]
        partial = {old: new for old, new in copies.items() if old in short}
        if complete:
            _forget_here(db, complete, destination)
        _undo(db, partial)
        _drop_intents(db, [i for i in ids if i not in copies])
    undone = len(ids) - len(complete)
    return (f"interrupted moves to {destination}: {len(complete)} finished, {undone} undone "
            "(the runs stay here)")


def _copies_there(db: SqliteDatabase, ids: Sequence[int]) -> dict[int, int]:
    """Old run id -> the destination's copy, matched by (target, runname, created)."""
    _fill_ids(db, ids)
    rows = db.execute_sql(
        "SELECT r.id, d.id FROM main.run r JOIN temp.migrate_ids i ON i.id = r.id "
        "JOIN dest.run d ON d.target = r.target AND d.runname = r.runname "
        "AND d.created = r.created WHERE r.state != 'MOVED'").fetchall()
    return {int(old): int(new) for old, new in rows}


# -- the area's rules --------------------------------------------------------------------------
def apply_auto_migrate(store: RunStore, now: float | None = None) -> list[MigrateResult]:
    """Apply every `[[auto-migrate]]` rule of megarun.toml; a failing rule is reported in its
    result and never stops the others."""
    results = []
    for rule in store.area.config.auto_migrate:
        selection = RunSelection(target=rule.target, older_than=rule.older_than)
        try:
            results.append(migrate_runs(store, rule.destination, selection, now=now))
        except MegarunError as exc:
            results.append(MigrateResult(str(rule.destination), selection.describe(),
                                         error=str(exc)))
    return results

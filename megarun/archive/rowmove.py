# ruff: noqa: S608 - SQL here interpolates only schema names ("main", "arc", "dest") given by
# the callers, table names from this module's constants and column names read from PRAGMA
# table_info; every value goes in as a parameter.
"""The rows of a batch of runs moved between two databases on one connection (the working db
and an attached one): staged by id in temp tables, copied parents first, counted to verify the
copy, deleted children first. megarun.archive.completed sequences these steps safely."""

from __future__ import annotations

import time
from collections.abc import Sequence

from peewee import SqliteDatabase

from megarun.db.connection import execute_many
from megarun.db.fulldb import common_columns

#: Tables copied with fresh ids (the others keep theirs: run, job, job_tag, job_dependency).
FRESH_IDS = ("run_test", "event")
RUNS = "temp.archive_runs"  # the batch being moved: run ids
JOBS = "temp.archive_jobs"  # and their job ids


def write_intents(db: SqliteDatabase, direction: str, where: str | None,
                  ids: Sequence[int]) -> None:
    """Step 1: one intent row per run in the working db's run_move."""
    now = time.time()
    execute_many(db, "INSERT INTO main.run_move (run_id, direction, destination, started) "
                     "VALUES (?, ?, ?, ?)", [(i, direction, where, now) for i in ids])


def drop_intents(db: SqliteDatabase, ids: Sequence[int]) -> None:
    execute_many(db, "DELETE FROM main.run_move WHERE run_id = ?", [(i,) for i in ids])


def stage_runs(db: SqliteDatabase, ids: Sequence[int]) -> None:
    db.execute_sql(f"CREATE TEMP TABLE IF NOT EXISTS {RUNS.split('.')[1]} "
                   "(id INTEGER PRIMARY KEY)")
    db.execute_sql(f"DELETE FROM {RUNS}")
    execute_many(db, f"INSERT INTO {RUNS} (id) VALUES (?)", [(i,) for i in ids])


def stage(db: SqliteDatabase, schema: str, ids: Sequence[int]) -> None:
    """The batch's runs and their jobs (in `schema`) into temp tables every step reads."""
    stage_runs(db, ids)
    db.execute_sql(f"CREATE TEMP TABLE IF NOT EXISTS {JOBS.split('.')[1]} "
                   "(id INTEGER PRIMARY KEY)")
    db.execute_sql(f"DELETE FROM {JOBS}")
    db.execute_sql(f"INSERT INTO {JOBS} (id) SELECT id FROM {schema}.job "
                   f"WHERE run_id IN (SELECT id FROM {RUNS})")


def copy_staged(db: SqliteDatabase, source: str, target: str) -> None:
    """Step 2 (inside the caller's transaction): the staged runs' rows, parents first."""
    jobs = f"SELECT id FROM {JOBS}"
    sites = (f"SELECT site_id FROM {source}.job WHERE id IN ({jobs}) UNION "
             f"SELECT site_id FROM {source}.batch_job WHERE id IN "
             f"(SELECT batch_job_id FROM {source}.job WHERE id IN ({jobs}))")
    copy_rows(db, "site", source, target, f"id IN ({sites})", ignore=True)
    copy_rows(db, "app", source, target,
               f"id IN (SELECT app_id FROM {source}.job WHERE id IN ({jobs}))", ignore=True)
    copy_rows(db, "batch_job", source, target,
               f"id IN (SELECT batch_job_id FROM {source}.job WHERE id IN ({jobs}))", ignore=True)
    copy_rows(db, "run", source, target, f"id IN (SELECT id FROM {RUNS})")
    copy_rows(db, "run_test", source, target, f"run_id IN (SELECT id FROM {RUNS})")
    copy_rows(db, "job", source, target, f"id IN ({jobs})")
    copy_rows(db, "job_tag", source, target, f"job_id IN ({jobs})")
    # `+`: look up children by index, test parents against the set (probing the (parent,
    # child) index with every pair of the two sets would take jobs squared steps)
    copy_rows(db, "job_dependency", source, target,
               f"child_id IN ({jobs}) AND +parent_id IN ({jobs})")
    copy_rows(db, "event", source, target, f"job IN ({jobs})")


def copy_rows(db: SqliteDatabase, table: str, source: str, target: str, where: str,
               ignore: bool = False) -> None:
    columns = common_columns(db, table, target, source)
    if table in FRESH_IDS:
        columns = [c for c in columns if c != "id"]
    cols = ", ".join(f'"{c}"' for c in columns)
    order = " ORDER BY rowid" if table in ("run", "job", *FRESH_IDS) else ""
    db.execute_sql(f"INSERT {'OR IGNORE ' if ignore else ''}INTO {target}.\"{table}\" ({cols}) "
                   f"SELECT {cols} FROM {source}.\"{table}\" WHERE {where}{order}")


def counts(db: SqliteDatabase, schema: str) -> dict[int, tuple[int, ...]]:
    """Per staged run: (jobs, events, tags, dependencies, run tests) in `schema`. The run's
    jobs are found in `schema` itself, so that a copy missing jobs counts short."""
    in_runs = f"IN (SELECT id FROM {RUNS})"
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


def delete_staged(db: SqliteDatabase, schema: str) -> None:
    """The staged runs' rows in `schema`, children first (inside the caller's transaction)."""
    jobs = f"SELECT id FROM {JOBS}"
    db.execute_sql(f"DELETE FROM {schema}.event WHERE job IN ({jobs})")
    db.execute_sql(f"DELETE FROM {schema}.job_tag WHERE job_id IN ({jobs})")
    db.execute_sql(f"DELETE FROM {schema}.job_dependency WHERE child_id IN ({jobs}) "
                   f"OR parent_id IN ({jobs})")
    if schema == "main":
        db.execute_sql(f"DELETE FROM main.stage_out_due WHERE job_id IN ({jobs})")
    db.execute_sql(f"DELETE FROM {schema}.run_test WHERE run_id IN "
                   f"(SELECT id FROM {RUNS})")
    db.execute_sql(f"DELETE FROM {schema}.job WHERE id IN ({jobs})")
    db.execute_sql(f"DELETE FROM {schema}.run WHERE id IN (SELECT id FROM {RUNS})")

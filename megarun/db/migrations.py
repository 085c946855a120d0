"""Named, recorded, transactional schema steps. Append new steps; never edit applied ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from peewee import SqliteDatabase

from megarun.db import models
from megarun.db.tally import create_tally
from megarun.errors import EnvironmentProblem


def _initial(db: SqliteDatabase) -> None:
    db.create_tables(models.ALL_MODELS)


def _columns(db: SqliteDatabase, table: str) -> set[str]:
    return {row[1] for row in db.execute_sql(f"PRAGMA table_info({table})").fetchall()}


def _suites(db: SqliteDatabase) -> None:
    """Test-suite runs: job steps, rules and jobgroup; the run_test definitions."""
    have = _columns(db, "job")
    for column, kind in (("steps", "TEXT"), ("rules", "TEXT"), ("jobgroup", "VARCHAR(255)")):
        if column not in have:  # a database made by 0001 of this version has them already
            db.execute_sql(f"ALTER TABLE job ADD COLUMN {column} {kind}")
    if "mode" not in _columns(db, "job_dependency"):
        db.execute_sql("ALTER TABLE job_dependency ADD COLUMN mode VARCHAR(255) NOT NULL "
                       "DEFAULT 'normal'")
    db.create_tables([models.RunTest], safe=True)
    db.execute_sql("CREATE INDEX IF NOT EXISTS job_run_test ON job (run_id, test, item)")


def _staging(db: SqliteDatabase) -> None:
    """Apps' stage_in/stage_out, and the stage-outs owed by dispatched jobs."""
    have = _columns(db, "app")
    for column in ("stage_in", "stage_out"):
        if column not in have:  # a database made by 0001 of this version has them already
            db.execute_sql(f"ALTER TABLE app ADD COLUMN {column} TEXT")
    db.create_tables([models.StageOutDue], safe=True)


def _batch(db: SqliteDatabase) -> None:
    """Batch jobs: scheduler state word, exit code, times and extra directives; job packing."""
    have = _columns(db, "batch_job")
    for column, kind in (("native", "VARCHAR(255) NOT NULL DEFAULT ''"),
                         ("exit_code", "INTEGER"), ("submitted", "REAL"), ("started", "REAL"),
                         ("extras", "TEXT NOT NULL DEFAULT '{}'")):
        if column not in have:  # a database made by 0001 of this version has them already
            db.execute_sql(f"ALTER TABLE batch_job ADD COLUMN {column} {kind}")
    if "node_packing_count" not in _columns(db, "job"):
        db.execute_sql("ALTER TABLE job ADD COLUMN node_packing_count INTEGER NOT NULL DEFAULT 0")
    db.execute_sql("CREATE INDEX IF NOT EXISTS batch_job_state ON batch_job (site_id, state)")


def _archive(db: SqliteDatabase) -> None:
    """Run ids never reused (AUTOINCREMENT), run.moved_to, and the run_move intent table.

    A database made before this step has `run` without AUTOINCREMENT: the table is rebuilt
    (foreign keys are off while steps run, see `migrate`), keeping every id.
    """
    sql = db.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'run'"
                         ).fetchone()[0]
    if "AUTOINCREMENT" not in sql.upper():
        # the documented rebuild: make the new table under another name, copy, drop, rename
        # (renaming the old table instead would repoint job.run_id at the doomed copy)
        old = sorted(_columns(db, "run"))
        schema: Any = models.Run._schema  # type: ignore[attr-defined]
        create, _ = db.get_sql_context().sql(schema._create_table(safe=False)).query()
        db.execute_sql(create.replace('CREATE TABLE "run"', 'CREATE TABLE "run_0005"', 1))
        cols = ", ".join(f'"{name}"' for name in old if name != "moved_to")
        db.execute_sql(f"INSERT INTO run_0005 ({cols}) SELECT {cols} FROM run")  # noqa: S608
        db.execute_sql("DROP TABLE run")
        db.execute_sql("ALTER TABLE run_0005 RENAME TO run")
        schema.create_indexes(safe=True)
    elif "moved_to" not in _columns(db, "run"):
        db.execute_sql("ALTER TABLE run ADD COLUMN moved_to TEXT")
    db.create_tables([models.RunMove], safe=True)


def _app_change(db: SqliteDatabase) -> None:
    """The attempts in flight when their app changed (app_change_due)."""
    db.create_tables([models.AppChangeDue], safe=True)


def _elastic(db: SqliteDatabase) -> None:
    """batch_job.elastic: whether the elastic policy submitted the batch job; the job tally."""
    if "elastic" not in _columns(db, "batch_job"):  # a database made by 0001 of this version
        db.execute_sql("ALTER TABLE batch_job ADD COLUMN elastic INTEGER NOT NULL DEFAULT 0")
    create_tally(db)


MIGRATIONS: list[tuple[str, Callable[[SqliteDatabase], None]]] = [
    ("0001_initial", _initial),
    ("0002_suites", _suites),
    ("0003_staging", _staging),
    ("0004_batch", _batch),
    ("0005_archive", _archive),
    ("0006_app_change", _app_change),
    ("0007_elastic", _elastic),
]


def applied_migrations(db: SqliteDatabase) -> set[str]:
    """Names of the steps this database already has."""
    if not db.table_exists("schema_migration"):
        return set()
    rows = db.execute_sql("SELECT name FROM schema_migration").fetchall()
    return {name for (name,) in rows}


def migrate(db: SqliteDatabase) -> list[str]:
    """Apply every missing step in order, each in its own transaction; return their names."""
    done = applied_migrations(db)
    known = {name for name, _ in MIGRATIONS}
    unknown = done - known
    if unknown:
        raise EnvironmentProblem(
            f"the database has schema steps this megarun does not know ({', '.join(sorted(unknown))})",
            "it was written by a newer megarun: upgrade megarun",
        )
    missing = [(name, step) for name, step in MIGRATIONS if name not in done]
    if not missing:
        return []
    # A step may rebuild a table: with foreign keys on, dropping the old copy would cascade.
    # The pragma only takes effect outside a transaction; each step is checked before commit.
    db.execute_sql("PRAGMA foreign_keys = OFF")
    applied = []
    try:
        for name, step in missing:
            with db.atomic():
                # Another process opening the same new database may have applied the step
                # since we looked: the write lock this transaction holds makes the look final.
                if name in applied_migrations(db):
                    continue
                step(db)
                broken = db.execute_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise EnvironmentProblem(f"schema step {name} left broken references: "
                                             f"{broken[:3]}")
                models.SchemaMigration.insert(name=name, applied=time.time()).execute()
                applied.append(name)
    finally:
        db.execute_sql("PRAGMA foreign_keys = ON")
    return applied

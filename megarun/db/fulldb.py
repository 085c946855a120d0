"""Reading the working database and completed-runs.db as one: `--full-db`.

completed-runs.db is ATTACHed read-only AS arc and TEMP VIEWs named like the run tables hide
the working db's tables: SQLite resolves an unqualified name in the temp schema first, so every
existing read query (peewee's too) sees archived runs without a change. The views stay for the
life of the connection: attach only after the command's last write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from peewee import SqliteDatabase

from megarun.db.connection import SQLITE_ERRORS, check_header, translate_operational_error
from megarun.db.integrity import damaged, schema_problem

ARCHIVE_SCHEMA = "arc"
#: Tables whose rows belong to a run: a run lives in exactly one of the two databases.
RUN_TABLES = ("run", "run_test", "job", "job_tag", "job_dependency", "event")
#: Tables both databases may hold the same row of (kept in main when a run is archived).
SHARED_TABLES = ("site", "app", "batch_job")


class _ArchivePath(Protocol):
    @property
    def completed_db_path(self) -> Path: ...


class FullDbContext(Protocol):
    """What attach_full needs of the command's context (megarun.homehost.context.Context)."""

    @property
    def db(self) -> SqliteDatabase: ...

    @property
    def area(self) -> _ArchivePath: ...


def archive_uri(path: Path, read_only: bool, immutable: bool = False) -> str:
    """The `file:` URI ATTACH takes; `immutable` on a read-only mirror host, which must never
    take a lock on the shared file system."""
    uri = f"file:{quote(str(path))}"
    if read_only:
        uri += "?mode=ro" + ("&immutable=1" if immutable else "")
    return uri


def attached(db: SqliteDatabase, schema: str = ARCHIVE_SCHEMA) -> bool:
    return any(row[1] == schema for row in db.execute_sql("PRAGMA database_list").fetchall())


def attach(db: SqliteDatabase, uri: str, schema: str = ARCHIVE_SCHEMA) -> None:
    db.execute_sql(f"ATTACH DATABASE ? AS {schema}", (uri,))


def detach(db: SqliteDatabase, schema: str = ARCHIVE_SCHEMA) -> None:
    if attached(db, schema):
        db.execute_sql(f"DETACH DATABASE {schema}")


def table_columns(db: SqliteDatabase, schema: str, table: str) -> list[str]:
    """Column names in the table's own order (which differs between a migrated and a fresh
    database: always copy and union with explicit lists)."""
    return [row[1] for row in db.execute_sql(f"PRAGMA {schema}.table_info({table})").fetchall()]


def common_columns(db: SqliteDatabase, table: str, first: str, second: str) -> list[str]:
    """Columns both schemas' copies of `table` have, in the first one's order."""
    others = set(table_columns(db, second, table))
    return [c for c in table_columns(db, first, table) if c in others]


def attach_full(ctx: FullDbContext) -> bool:
    """`--full-db`: the command's connection reads completed-runs.db with the working db;
    False when there is no archive yet (queries read the working db alone)."""
    db = ctx.db  # first: opening it tells whether this host reads the mirror
    read_only_host = bool(getattr(ctx, "read_only", False))
    return attach_full_db(db, ctx.area.completed_db_path, read_only_host)


def attach_full_db(db: SqliteDatabase, path: Path, read_only_host: bool = False) -> bool:
    """attach_full on a given connection and archive file."""
    if not path.exists():
        return False
    if attached(db):
        return True
    check_header(path)
    try:
        attach(db, archive_uri(path, read_only=True, immutable=read_only_host))
        problem = schema_problem(db.connection(), complete=True, schema=ARCHIVE_SCHEMA)
        if problem:
            raise damaged(path, problem)
        # the mirror's connection is query_only, which refuses even TEMP objects; its files
        # are opened read-only anyway, so lifting it for the views writes nothing but temp
        query_only = db.execute_sql("PRAGMA query_only").fetchone()[0]
        if query_only:
            db.execute_sql("PRAGMA query_only = 0")
        try:
            _create_views(db)
        finally:
            if query_only:
                db.execute_sql("PRAGMA query_only = 1")
    except SQLITE_ERRORS as exc:
        raise translate_operational_error(exc, path) from exc
    return True


def _create_views(db: SqliteDatabase) -> None:
    for table in RUN_TABLES:
        cols = ", ".join(f'"{c}"' for c in common_columns(db, table, "main", ARCHIVE_SCHEMA))
        db.execute_sql(f'CREATE TEMP VIEW "{table}" AS SELECT {cols} FROM main."{table}" '  # noqa: S608
                       f'UNION ALL SELECT {cols} FROM {ARCHIVE_SCHEMA}."{table}"')
    for table in SHARED_TABLES:
        cols = ", ".join(f'"{c}"' for c in common_columns(db, table, "main", ARCHIVE_SCHEMA))
        db.execute_sql(f'CREATE TEMP VIEW "{table}" AS SELECT {cols} FROM main."{table}" '  # noqa: S608
                       f'UNION ALL SELECT {cols} FROM {ARCHIVE_SCHEMA}."{table}" '
                       f'WHERE id NOT IN (SELECT id FROM main."{table}")')

"""Opening the working database: pragmas, WAL, busy timeout, private file mode, migrations."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from peewee import OperationalError, SqliteDatabase

from megarun.agent.private import make_private_dirs
from megarun.db import migrations, models
from megarun.db.models import database_proxy
from megarun.errors import DatabaseBusy, EnvironmentProblem

#: How long a writer waits for another process's transaction (MEGARUN_DB_TIMEOUT seconds).
BUSY_TIMEOUT_ENV = "MEGARUN_DB_TIMEOUT"
DEFAULT_BUSY_SECONDS = 60.0


def busy_timeout_seconds() -> float:
    raw = os.environ.get(BUSY_TIMEOUT_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_BUSY_SECONDS
    except ValueError:
        return DEFAULT_BUSY_SECONDS


def _pragmas(busy_seconds: float, journal: str = "wal") -> tuple[tuple[str, Any], ...]:
    return (
        ("journal_mode", journal),
        ("synchronous", "normal"),
        ("foreign_keys", 1),
        ("busy_timeout", int(busy_seconds * 1000)),
        ("cache_size", -64_000),
        ("temp_store", "memory"),
    )


def _create_private(path: Path) -> None:
    """Create the database file (and its folder) readable by the owner only."""
    make_private_dirs(str(path.parent))
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


def open_database(path: Path, migrate: bool = True) -> SqliteDatabase:
    """Open (creating if needed) the database at `path` and bind the models to it."""
    if not path.exists():
        _create_private(path)
    busy = busy_timeout_seconds()
    db = SqliteDatabase(str(path), pragmas=_pragmas(busy), lock_type="IMMEDIATE", timeout=busy,
                        uri=True)  # so that ATTACH takes file: URIs (mode=ro, immutable=1)
    try:
        db.connect(reuse_if_open=True)
        database_proxy.initialize(db)
        if migrate:
            migrations.migrate(db)
    except OperationalError as exc:
        raise translate_operational_error(exc, path) from exc
    return db


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a crash after it cannot bring the old name back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def snapshot_uri(path: Path) -> str:
    """A read-only, lock-free URI for a snapshot file on a shared file system."""
    return f"file:{quote(str(path))}?mode=ro&immutable=1"


def open_snapshot(path: Path) -> SqliteDatabase:
    """Open a snapshot (the mirror) read-only, without locks, and bind the models to it.

    It must hold every schema step this megarun knows: an older home host wrote it otherwise.
    """
    db = SqliteDatabase(snapshot_uri(path), uri=True,
                        pragmas=(("query_only", 1), ("cache_size", -64_000),
                                 ("temp_store", "memory")))
    try:
        db.connect(reuse_if_open=True)
        database_proxy.initialize(db)
        missing = {name for name, _ in migrations.MIGRATIONS} - migrations.applied_migrations(db)
    except OperationalError as exc:
        raise translate_operational_error(exc, path) from exc
    if missing:
        db.close()
        raise EnvironmentProblem(f"the mirror {path} was written by an older megarun (it lacks "
                                 f"schema steps {', '.join(sorted(missing))})",
                                 "upgrade megarun on the home host and run a command there")
    return db


def prepare_database_file(path: Path, journal: str = "wal") -> None:
    """Create (private) or bring up to date the database at `path` without binding the models
    to it: for a second database such as completed-runs.db or another area's working database.

    `journal` "delete" for a file other hosts read on a shared file system (no -shm there).
    """
    if not path.exists():
        _create_private(path)
    busy = busy_timeout_seconds()
    db = SqliteDatabase(str(path), pragmas=_pragmas(busy, journal), lock_type="IMMEDIATE",
                        timeout=busy)
    try:
        db.connect()
        with db.bind_ctx(models.ALL_MODELS):
            migrations.migrate(db)
    except OperationalError as exc:
        raise translate_operational_error(exc, path) from exc
    finally:
        db.close()


def translate_operational_error(exc: Exception, path: Path | None = None) -> Exception:
    """Turn sqlite's errors into megarun errors with a message a user can act on."""
    text = str(exc)
    where = f" ({path})" if path else ""
    if "locked" in text or "busy" in text:
        return DatabaseBusy(
            f"the database stayed locked by another megarun process{where}",
            f"waited {busy_timeout_seconds():g} s; try again when it is done",
        )
    if "disk is full" in text or "disk I/O" in text:
        return EnvironmentProblem(f"cannot write the database{where}: {text}")
    return EnvironmentProblem(f"database error{where}: {text}")


@contextmanager
def write_transaction(db: SqliteDatabase) -> Iterator[None]:
    """One IMMEDIATE transaction; a lock that never frees becomes DatabaseBusy."""
    try:
        with db.atomic():
            yield
    except (OperationalError, sqlite3.OperationalError) as exc:
        raise translate_operational_error(exc) from exc


def execute_many(db: SqliteDatabase, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Run one statement over many parameter rows (the fast path for bulk work)."""
    if rows:
        db.cursor().executemany(sql, rows)

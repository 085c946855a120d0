"""Opening the working database: pragmas, WAL, busy timeout, private file mode, migrations."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from peewee import DatabaseError, OperationalError, SqliteDatabase

from megarun.agent.private import make_private_dirs
from megarun.db import integrity, migrations, models
from megarun.db.integrity import damaged
from megarun.db.models import database_proxy
from megarun.errors import DatabaseBusy, EnvironmentProblem, MegarunError

#: What SQLite (or peewee, which re-raises it as its own class) raises on a bad file or write.
SQLITE_ERRORS = (DatabaseError, sqlite3.DatabaseError)


def from_outside(exc: BaseException) -> bool:
    """Whether a SQLite error comes from outside megarun: OperationalError (locked, full,
    I/O) or a bare DatabaseError (a corrupt file). IntegrityError and its kin are bugs."""
    return isinstance(exc, (OperationalError, sqlite3.OperationalError)) or type(exc) in (
        DatabaseError, sqlite3.DatabaseError)

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
    """Open (creating if needed) the database at `path` and bind the models to it.

    A file that is not a whole megarun database is refused before anything is written.
    """
    if not path.exists():
        _create_private(path)
    check_header(path)
    busy = busy_timeout_seconds()
    db = SqliteDatabase(str(path), pragmas=_pragmas(busy), lock_type="IMMEDIATE", timeout=busy,
                        uri=True)  # so that ATTACH takes file: URIs (mode=ro, immutable=1)
    try:
        _connect(db, busy)
        database_proxy.initialize(db)
        _check_schema(db, path, complete=False)
        if migrate:
            migrations.migrate(db)
            _check_schema(db, path, complete=True)
    except SQLITE_ERRORS as exc:
        db.close()
        raise translate_operational_error(exc, path) from exc
    except MegarunError:
        db.close()
        raise
    return db


def _connect(db: SqliteDatabase, busy_seconds: float) -> None:
    """Connect, setting the pragmas; a lock met while doing so is waited out for up to
    `busy_seconds`. Turning a new database to WAL needs it alone, and SQLite answers "locked"
    at once, without its busy wait, when another process opens the same new file at that
    moment (two commands on a new area): try again shortly, as the busy wait would."""
    deadline = time.monotonic() + busy_seconds
    pause = 0.005
    while True:
        try:
            db.connect(reuse_if_open=True)
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # a lock held by another process: nothing here to wait on but time
        pause = min(pause * 2, 0.25)


def check_header(path: Path) -> None:
    """Refuse a file whose header and size disagree (truncated, overwritten, not SQLite)."""
    problem = integrity.header_problem(path)
    if problem:
        raise damaged(path, problem)


def _check_schema(db: SqliteDatabase, path: Path, complete: bool) -> None:
    problem = integrity.schema_problem(db.connection(), complete)
    if problem:
        raise damaged(path, problem)


def snapshot_uri(path: Path) -> str:
    """A read-only, lock-free URI for a snapshot file on a shared file system."""
    return f"file:{quote(str(path))}?mode=ro&immutable=1"


def open_snapshot(path: Path) -> SqliteDatabase:
    """Open a snapshot (the mirror) read-only, without locks, and bind the models to it.

    It must hold every schema step this megarun knows: an older home host wrote it otherwise.
    """
    check_header(path)
    db = SqliteDatabase(snapshot_uri(path), uri=True,
                        pragmas=(("query_only", 1), ("cache_size", -64_000),
                                 ("temp_store", "memory")))
    try:
        db.connect(reuse_if_open=True)
        database_proxy.initialize(db)
        missing = {name for name, _ in migrations.MIGRATIONS} - migrations.applied_migrations(db)
        if not missing:
            _check_schema(db, path, complete=True)
    except SQLITE_ERRORS as exc:
        db.close()
        raise translate_operational_error(exc, path) from exc
    except MegarunError:
        db.close()
        raise
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
    check_header(path)
    busy = busy_timeout_seconds()
    db = SqliteDatabase(str(path), pragmas=_pragmas(busy, journal), lock_type="IMMEDIATE",
                        timeout=busy)
    try:
        db.connect()
        _check_schema(db, path, complete=False)
        with db.bind_ctx(models.ALL_MODELS):
            migrations.migrate(db)
        _check_schema(db, path, complete=True)
    except SQLITE_ERRORS as exc:
        raise translate_operational_error(exc, path) from exc
    finally:
        db.close()


class DiskFull(EnvironmentProblem):
    """A write found no space left on the device holding the file it names."""


#: What SQLite says of a file that is not (or no longer) a whole database.
_DAMAGE_WORDS = ("file is not a database", "database disk image is malformed",
                 "malformed database schema", "database corruption")
_FULL_WORDS = ("database or disk is full", "disk is full", "no space left")


def translate_operational_error(exc: BaseException, path: Path | None = None) -> MegarunError:
    """Turn sqlite's errors into megarun errors with a message a user can act on.

    `path` defaults to the database the models are bound to (and any attached to it).
    """
    cause = _root_cause(exc)
    text = str(cause)
    where = path if path is not None else current_database_label()
    if "locked" in text or "busy" in text:
        return DatabaseBusy(
            f"the database stayed locked by another megarun process ({where})",
            f"waited {busy_timeout_seconds():g} s; try again when it is done",
        )
    if any(words in text for words in _FULL_WORDS):
        return DiskFull(f"no space left on device: cannot write the database {where}",
                        "free space on its file system; the failed write changed nothing")
    if any(words in text for words in _DAMAGE_WORDS) or _names_our_table(text):
        return damaged(where, text)
    if "disk I/O" in text:
        return EnvironmentProblem(f"cannot write the database {where}: {text}")
    return EnvironmentProblem(f"database error ({where}): {text}")


def is_disk_full(exc: BaseException) -> bool:
    """Whether SQLite's error (or one it hides) says the disk is full."""
    return any(words in str(_root_cause(exc)) for words in _FULL_WORDS)


def _root_cause(exc: BaseException) -> BaseException:
    """The error SQLite first raised: on a full disk SQLite rolls the transaction back itself,
    so the rollback that follows fails ("no transaction is active") and hides the cause."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    for candidate in seen:
        text = str(candidate)
        if any(words in text for words in (*_FULL_WORDS, *_DAMAGE_WORDS)):
            return candidate
    return exc


def _names_our_table(text: str) -> bool:
    """'no such table: job': one of megarun's own tables is gone (dropped, or the file lost
    its schema); another table is a bug, not damage."""
    prefix = "no such table: "
    if not text.startswith(prefix):
        return False
    return text[len(prefix):].split(".")[-1] in integrity.MEGARUN_TABLES


def current_database_label() -> str:
    """The file(s) the models are bound to: the working database or the mirror, and an
    attached completed-runs.db (named too: an error may come from either)."""
    db = database_proxy.obj
    if not isinstance(db, SqliteDatabase):
        return "the database"
    files = [_file_of(str(db.database))]
    try:
        rows = [] if db.is_closed() else db.connection().execute("PRAGMA database_list").fetchall()
    except sqlite3.Error:
        rows = []  # the connection may be the broken thing: name the main file alone
    files += [str(row[2]) for row in rows if row[1] not in ("main", "temp") and row[2]]
    return " or ".join(files)


def _file_of(name: str) -> str:
    if not name.startswith("file:"):
        return name
    return unquote(name[len("file:"):].split("?", 1)[0])


@contextmanager
def write_transaction(db: SqliteDatabase) -> Iterator[None]:
    """One IMMEDIATE transaction; a lock that never frees becomes DatabaseBusy."""
    try:
        with db.atomic():
            yield
    except SQLITE_ERRORS as exc:
        if not from_outside(exc):
            raise
        raise translate_operational_error(exc) from exc


def execute_many(db: SqliteDatabase, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Run one statement over many parameter rows (the fast path for bulk work)."""
    if rows:
        db.cursor().executemany(sql, rows)

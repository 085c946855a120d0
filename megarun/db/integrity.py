"""Is this file a whole megarun database?

A zero-byte, truncated or corrupt working database must never be taken for a new one, nor be
copied over the mirror. The cheap checks here run on every open (the 100-byte header against
the file's size, and the schema's tables); the full ones (`PRAGMA quick_check` or
`integrity_check`, foreign keys) run on each snapshot before it is published as the mirror, and
in `megarun db check`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from megarun.db import migrations, models
from megarun.errors import EnvironmentProblem

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_BYTES = 100
RECOVER_HINT = ("see 'megarun db check'; recover with 'megarun db restore --from-mirror', which "
                "keeps the damaged file aside")
#: Every table megarun keeps (schema_migration included).
MEGARUN_TABLES: tuple[str, ...] = tuple(m._meta.table_name for m in models.ALL_MODELS)
#: How many problems a check reports at most (a badly broken file has thousands).
MAX_PROBLEMS = 20


class DatabaseDamaged(EnvironmentProblem):
    """A database file is truncated, corrupt or lacks megarun's tables."""


def damaged(path: Path | str, reason: str) -> DatabaseDamaged:
    return DatabaseDamaged(f"the database {path} is damaged ({reason})", RECOVER_HINT)


def header_problem(path: Path) -> str | None:
    """What is wrong with the file's header and size; None when they agree (or it is empty:
    whether an empty file is acceptable is the caller's call)."""
    size = path.stat().st_size
    if size == 0:
        return None
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES:
        return f"truncated to {size} bytes"
    if head[:16] != SQLITE_MAGIC:
        return "not an SQLite database: its header is wrong"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"its header names an impossible page size ({page_size})"
    if size % page_size:
        return f"truncated: {size} bytes is not a whole number of {page_size}-byte pages"
    pages = int.from_bytes(head[28:32], "big")
    # the page count is only valid when the change counter matches "version valid for"; a
    # checkpoint cut short may leave the file short while its WAL still holds the pages
    counted = pages and head[24:28] == head[92:96]
    if counted and pages * page_size > size and not _has_wal(path):
        return f"truncated: its header counts {pages * page_size} bytes, the file has {size}"
    return None


def _has_wal(path: Path) -> bool:
    wal = path.with_name(path.name + "-wal")
    return wal.exists() and wal.stat().st_size > 0


def table_names(conn: sqlite3.Connection, schema: str = "main") -> set[str]:
    rows = conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")  # noqa: S608
    return {str(name) for (name,) in rows.fetchall()}


def schema_problem(conn: sqlite3.Connection, complete: bool, schema: str = "main") -> str | None:
    """Which of megarun's tables are missing. A database with none of them is new (fine);
    before migrations run (`complete` False) it must at least record its schema steps, after
    them every table must be there."""
    names = table_names(conn, schema)
    if not names & set(MEGARUN_TABLES):
        return None if not complete else "it holds none of megarun's tables"
    required = MEGARUN_TABLES if complete else ("schema_migration",)
    missing = [name for name in required if name not in names]
    if missing:
        return f"tables missing: {', '.join(missing)}"
    return None


def missing_steps(conn: sqlite3.Connection) -> list[str]:
    """Schema steps this megarun knows that the database lacks."""
    if "schema_migration" not in table_names(conn):
        return [name for name, _ in migrations.MIGRATIONS]
    done = {str(name) for (name,) in conn.execute("SELECT name FROM schema_migration")}
    return [name for name, _ in migrations.MIGRATIONS if name not in done]


def integrity_problems(conn: sqlite3.Connection, full: bool = False) -> list[str]:
    """`PRAGMA quick_check` (`full`: integrity_check, which also checks index contents);
    empty when the file is sound."""
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = conn.execute(f"PRAGMA {pragma}({MAX_PROBLEMS})").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    messages = [str(row[0]) for row in rows]
    if messages == ["ok"]:
        return []
    # one problem a line, without SQLite's "*** in database main ***" headings
    lines = (line.strip() for message in messages for line in message.splitlines())
    return [line for line in lines if line and not line.startswith("***")]


def foreign_key_problems(conn: sqlite3.Connection) -> list[str]:
    try:
        rows = conn.execute("PRAGMA foreign_key_check").fetchmany(MAX_PROBLEMS)
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [f"{table} row {rowid} points at a missing {parent}" for table, rowid, parent, _ in rows]


def read_only_uri(path: Path, immutable: bool) -> str:
    """A read-only URI; `immutable` for a snapshot (no journal, no locks), not for a working
    database in WAL mode, whose committed pages may still be in its WAL."""
    return f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")


def snapshot_problems(path: Path, full: bool = False) -> list[str]:
    """Everything wrong with a snapshot (a mirror or a copy about to become one): header,
    integrity, every schema step and table. Empty when it can be published or restored."""
    if not path.exists():
        return ["it does not exist"]
    if path.stat().st_size == 0:
        return ["it is empty (0 bytes)"]
    problem = header_problem(path)
    if problem:
        return [problem]
    conn = sqlite3.connect(read_only_uri(path, immutable=True), uri=True)
    try:
        return file_problems(conn, full) or [f"schema steps missing: {', '.join(steps)}"
                                             for steps in [missing_steps(conn)] if steps]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        conn.close()


def file_problems(conn: sqlite3.Connection, full: bool = False) -> list[str]:
    """Integrity, then the tables, of an open database (empty: sound)."""
    problems = integrity_problems(conn, full)
    if problems:
        return problems
    schema = schema_problem(conn, complete=True)
    return [schema] if schema else []

"""Schema steps on a database made by an older megarun."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from peewee import OperationalError, SqliteDatabase

from megarun.db.connection import BUSY_TIMEOUT_ENV, open_database
from megarun.db.migrations import MIGRATIONS
from megarun.errors import DatabaseBusy
from tests.conftest import REPO

OLD_RUN = ('CREATE TABLE "run" ("id" INTEGER NOT NULL PRIMARY KEY, "target" VARCHAR(255) NOT NULL,'
           ' "runname" VARCHAR(255) NOT NULL, "created" REAL NOT NULL, "config_hash" '
           'VARCHAR(255) NOT NULL, "state" VARCHAR(255) NOT NULL)')


def _pre_0005(path: Path) -> None:
    """A database as 0004 left it: `run` without AUTOINCREMENT or moved_to, no run_move."""
    open_database(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("DROP TABLE run")
    db.execute("DROP TABLE run_move")
    db.execute(OLD_RUN)
    db.execute('CREATE UNIQUE INDEX "run_target_runname" ON "run" ("target", "runname")')
    db.execute("DELETE FROM schema_migration WHERE name = '0005_archive'")
    now = time.time()
    for run_id in (1, 2):
        db.execute("INSERT INTO run VALUES (?, 'linux', ?, ?, '', 'open')",
                   (run_id, f"r{run_id}", now))
    db.execute("INSERT INTO job (name, run_id, command, params, tags, env, nodes, ranks_per_node,"
               " threads_per_rank, gpus_per_rank, node_packing_count, priority, state, status,"
               " attempt, runs, max_attempts, message, created) VALUES ('a', 2, 'true', '{}',"
               " '{}', '{}', 1, 1, 1, 0, 0, 0, 'COMPLETED', 'PASS', 1, 1, 1, '', ?)", (now,))
    db.close()


def test_0005_rebuilds_run_keeping_ids_and_jobs(tmp_path: Path) -> None:
    path = tmp_path / "work.db"
    _pre_0005(path)
    open_database(path).close()  # applies 0005
    db = sqlite3.connect(path)
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'run'").fetchone()[0]
    assert "AUTOINCREMENT" in sql and "moved_to" in sql
    assert db.execute("SELECT id, runname FROM run ORDER BY id").fetchall() == [(1, "r1"),
                                                                               (2, "r2")]
    assert db.execute("SELECT run_id FROM job").fetchall() == [(2,)]  # no cascade on rebuild
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "run_target_runname" in names
    # the highest id, once gone, is never handed out again
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("DELETE FROM run WHERE id = 2")
    db.execute("INSERT INTO run (target, runname, created, config_hash, state) VALUES "
               "('linux', 'r3', 0, '', 'open')")
    assert db.execute("SELECT max(id) FROM run").fetchone() == (3,)
    assert db.execute("SELECT count(*) FROM job").fetchone() == (0,)  # the cascade is back on
    db.close()


def test_fresh_and_migrated_databases_have_the_same_run_table(tmp_path: Path) -> None:
    fresh, old = tmp_path / "fresh.db", tmp_path / "old.db"
    open_database(fresh).close()
    _pre_0005(old)
    open_database(old).close()

    def columns(path: Path) -> list[tuple[str, str]]:
        with sqlite3.connect(path) as db:
            return [(row[1], row[2]) for row in db.execute("PRAGMA table_info(run)")]

    assert columns(fresh) == columns(old)


OPEN_WHEN_TOLD = """
import sys, time
from pathlib import Path
from megarun.db.connection import open_database
folder = Path(sys.argv[1])
(folder / f"ready-{sys.argv[2]}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
open_database(folder / "work.db").close()
"""


def test_processes_making_a_new_database_at_once_all_succeed(tmp_path: Path) -> None:
    """Two commands run on a new area at the same moment (a user and cron, a run and a status)
    both find the schema missing; the one that gets the write lock second must skip the steps
    the first one applied, not fail on them."""
    count = 8
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_WHEN_TOLD, str(tmp_path), str(n)],
                              stderr=subprocess.PIPE, text=True, env=env) for n in range(count)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * count, errors
    db = sqlite3.connect(tmp_path / "work.db")
    names = [name for (name,) in db.execute("SELECT name FROM schema_migration ORDER BY name")]
    db.close()
    assert names == sorted(name for name, _ in MIGRATIONS)


def test_a_lock_met_while_setting_up_a_new_database_is_waited_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite answers "locked" at once, without its busy wait, when two processes turn the same
    new file to WAL together (what the test above runs into under load): opening tries again."""
    real = SqliteDatabase.connect
    calls: list[int] = []

    def locked_twice(self: SqliteDatabase, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= 2:
            raise OperationalError("database is locked")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SqliteDatabase, "connect", locked_twice)
    open_database(tmp_path / "work.db").close()
    assert len(calls) == 3


def test_a_lock_that_stays_is_one_line_after_the_busy_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def always_locked(self: SqliteDatabase, *args: Any, **kwargs: Any) -> Any:
        raise OperationalError("database is locked")

    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "0.2")
    monkeypatch.setattr(SqliteDatabase, "connect", always_locked)
    started = time.monotonic()
    with pytest.raises(DatabaseBusy, match="stayed locked by another megarun process"):
        open_database(tmp_path / "work.db")
    assert 0.1 < time.monotonic() - started < 5

"""The mirror: whole snapshots only, fresh within seconds, safe against kill -9."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from megarun.db.connection import prepare_database_file
from megarun.homehost import mirror
from megarun.homehost.context import Context
from tests.conftest import megarun_process


def _count(path: Path, table: str = "probe") -> int:
    with sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _working(tmp_path: Path) -> Path:
    """A megarun working database (a mirror is published only with the whole schema) with a
    `probe` table to write to."""
    path = tmp_path / "work.db"
    prepare_database_file(path)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, batch INTEGER)")
    db.commit()
    db.close()
    return path


def test_snapshots_are_whole_while_a_writer_commits(tmp_path: Path) -> None:
    working, target = _working(tmp_path), tmp_path / "megarun.db"
    stop = threading.Event()

    def write() -> None:
        db = sqlite3.connect(working, isolation_level=None)
        batch = 0
        while not stop.is_set():
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO probe (batch) VALUES (?)", [(batch,)] * 100)
            db.execute("COMMIT")
            batch += 1
        db.close()

    writer = threading.Thread(target=write)
    writer.start()
    seen = []
    try:
        for _ in range(20):
            assert mirror.refresh(working, target, force=True).copied
            seen.append(_count(target))
            time.sleep(0.02)  # let the writer commit between snapshots, even on a busy machine
    finally:
        stop.set()
        writer.join()
    assert all(n % 100 == 0 for n in seen)  # never half a transaction
    assert seen == sorted(seen) and seen[-1] > seen[0]
    with sqlite3.connect(target) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert target.stat().st_mode & 0o777 == 0o600


def test_an_unchanged_database_is_not_copied_again(tmp_path: Path) -> None:
    working, target = _working(tmp_path), tmp_path / "megarun.db"
    assert mirror.refresh(working, target).copied
    assert not mirror.refresh(working, target).copied
    with sqlite3.connect(working) as db:
        db.execute("INSERT INTO probe (batch) VALUES (1)")
    assert mirror.refresh(working, target).copied
    assert _count(target) == 1
    assert mirror.refresh(working, target, force=True).copied


def test_the_keeper_follows_a_long_command_within_seconds(ctx: Context) -> None:
    ctx.db.execute_sql("INSERT INTO app (name, command, description, params, env, resources, "
                       "requirements, retries, source, created) VALUES ('a', 'true', '', '{}', "
                       "'{}', '{}', '{}', 0, 'cli', 0)")
    written = time.monotonic()
    target = ctx.area.mirror_path
    while time.monotonic() - written < 5:
        if target.exists() and _count(target, "app") == 1:
            break
        time.sleep(0.1)
    assert _count(target, "app") == 1, "the mirror stayed more than 5 s behind"


@pytest.mark.parametrize("step", mirror.FAULT_POINTS)
def test_kill_at_each_refresh_step_keeps_a_whole_mirror(area: Path, step: str) -> None:
    assert megarun_process(area, "app", "add", "one", "--command", "true").returncode == 0
    target = area / ".megarun" / "megarun.db"
    assert _count(target, "app") == 1
    crashed = megarun_process(area, "app", "add", "two", "--command", "true",
                              env={"MEGARUN_FAULT": step})
    assert crashed.returncode == -9
    after_crash = _count(target, "app")  # a whole snapshot, old or new
    published = step == "mirror:after-rename"
    assert after_crash == (2 if published else 1)
    leftovers = list(target.parent.glob(mirror.TEMP_PREFIX + "*"))
    assert bool(leftovers) == (not published)
    listed = megarun_process(area, "app", "ls", "--json")  # the next command tidies up
    assert listed.returncode == 0 and '"two"' in listed.stdout
    assert _count(target, "app") == 2
    assert not list(target.parent.glob(mirror.TEMP_PREFIX + "*"))

"""sync and the area's rules, with real processes: two syncs started together, auto-migrate
applied by sync (a failing rule reported, the cycle going on), and a sync killed -9 in the
middle of a move recovered by the next one."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from megarun.config.area import locate_area
from megarun.homehost import home as homehost
from megarun.homehost.areas import init_area
from tests.conftest import megarun_process, spawn_megarun


def _ok(area: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = megarun_process(area, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def _work_db(root: Path) -> Path:
    return homehost.working_db_path(locate_area(str(root)))


def _runs(root: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(_work_db(root)) as db:
        return db.execute("SELECT runname, state FROM run ORDER BY runname").fetchall()


@pytest.fixture
def areas(tmp_path: Path) -> tuple[Path, Path]:
    """A source area with two finished runs (made by `megarun run`) and a destination with its
    database; the source migrates every finished run to it (older-than 0s)."""
    source = init_area(tmp_path / "source", keys=["os"])
    (source / "tests" / "t1").mkdir()
    (source / "tests" / "t1" / "test.toml").write_text('steps = ["true"]\n[items]\nN = [1, 2]\n')
    for runname in ("r1", "r2"):
        _ok(source, "run", "--target", "linux", "--runname", runname, "-q")
    dest = init_area(tmp_path / "dest", keys=["os"])
    _ok(dest, "runs", "ls")  # its working database exists
    with (source / "megarun.toml").open("a") as config:
        config.write(f'\n[[auto-migrate]]\ndestination = "{dest}"\nolder-than = "0s"\n')
    return source, dest


def test_two_syncs_started_together(areas: tuple[Path, Path]) -> None:
    """One does the cycle (held up by the destination's lock in its migrate rule); the other
    says so and exits 0 at once."""
    source, dest = areas
    blocker = sqlite3.connect(_work_db(dest), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the destination busy: the cycle waits on it
    procs = [spawn_megarun(source, "sync"), spawn_megarun(source, "sync")]
    try:
        deadline = time.monotonic() + 60
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        first = next(p for p in procs if p.poll() is not None)
        cycler = next(p for p in procs if p is not first)
        _, err = first.communicate()
        assert first.returncode == 0, err
        assert "another megarun sync is running in this area; nothing to do" in err
        time.sleep(0.5)
        assert cycler.poll() is None  # still in its cycle, waiting for the destination
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    _, err = cycler.communicate(timeout=60)
    assert cycler.returncode == 0, err
    assert f"rules: auto-migrate to {dest}: moved 2 run(s), 4 job(s)" in err
    assert _runs(source) == [("r1", "MOVED"), ("r2", "MOVED")]
    assert _runs(dest) == [("r1", "open"), ("r2", "open")]


def test_a_failing_rule_is_reported_and_the_cycle_goes_on(areas: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    source, dest = areas
    with (source / "megarun.toml").open("a") as config:
        config.write(f'\n[[auto-migrate]]\ndestination = "{tmp_path / "nowhere"}"\n')
    done = megarun_process(source, "sync", "--json")
    assert done.returncode == 3, done.stderr
    assert [row["site"] for row in json.loads(done.stdout)] == ["local"]  # sites were synced
    assert f"rules: failed: auto-migrate to {tmp_path / 'nowhere'}: " in done.stderr
    assert "rules: auto-migrate to" in done.stderr  # the good rule ran as well
    assert _runs(dest) == [("r1", "open"), ("r2", "open")]


def test_sync_killed_in_a_move_is_recovered_by_the_next(areas: tuple[Path, Path]) -> None:
    source, dest = areas
    crashed = megarun_process(source, "sync", env={"MEGARUN_FAULT": "migrate:after-copy"})
    assert crashed.returncode == -signal.SIGKILL
    assert _runs(source) == [("r1", "open"), ("r2", "open")]  # copied there, not yet gone here
    again = megarun_process(source, "sync")  # the lock of the killed one is free
    assert again.returncode == 0, again.stderr
    assert f"rules: interrupted moves to {dest}: 2 finished, 0 undone" in again.stderr
    assert _runs(source) == [("r1", "MOVED"), ("r2", "MOVED")]
    assert _runs(dest) == [("r1", "open"), ("r2", "open")]
    for root in (source, dest):
        with sqlite3.connect(_work_db(root)) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    quiet = megarun_process(source, "sync")
    assert quiet.returncode == 0 and "rules:" not in quiet.stderr  # nothing left to do

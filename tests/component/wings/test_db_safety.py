"""Database safety: an empty, truncated or corrupt working database is refused (exit 3, the file
named) and never copied over the mirror; the previous mirror generation survives kill -9 at any
refresh step; `db check` and `db restore --from-mirror` find and mend the damage; a full disk
says so and stops the launcher with what it ingested kept."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from megarun.db.connection import DiskFull, prepare_database_file, write_transaction
from megarun.db.integrity import DatabaseDamaged, snapshot_problems
from megarun.homehost import mirror
from megarun.homehost.areas import init_area
from megarun.homehost.context import Context
from tests.conftest import megarun_process

JOBS = 300  # enough rows for the job table to span many pages


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _jobs_in(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM job").fetchone()[0])


def _ok(area: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = megarun_process(area, *args)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def filled(area: Path) -> Path:
    """An area whose working database holds JOBS jobs, with a mirror of them."""
    _ok(area, "app", "add", "a", "--command", "true")
    _ok(area, "job", "create", "--app", "a", "--count", str(JOBS))
    assert _jobs_in(area / ".megarun" / "megarun.db") == JOBS
    return area


def _work(area: Path) -> Path:
    return area / ".megarun" / "work.db"


def _mirror(area: Path) -> Path:
    return area / ".megarun" / "megarun.db"


def _drop_side_files(work: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)


def _garbage_in_the_middle(work: Path) -> None:
    size = work.stat().st_size
    with open(work, "r+b") as handle:
        handle.seek(size // 2 // 4096 * 4096)
        handle.write(os.urandom(3 * 4096))


def _drop_table(work: Path, table: str = "job_tag") -> None:
    db = sqlite3.connect(work, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute(f"DROP TABLE {table}")
    finally:
        db.close()  # the last connection: its WAL is checkpointed into the file


def _bad_header(work: Path) -> None:
    with open(work, "r+b") as handle:
        handle.write(b"this is no database at all")


CORRUPTIONS = {"garbage": _garbage_in_the_middle, "dropped-table": _drop_table,
               "bad-header": _bad_header}


# -- empty, truncated, corrupt: refused, nothing written ----------------------------------------
def test_an_empty_working_database_is_refused_like_a_missing_one(filled: Path) -> None:
    work, kept = _work(filled), _digest(_mirror(filled))
    _drop_side_files(work)
    work.write_bytes(b"")
    result = megarun_process(filled, "job", "ls")
    assert result.returncode == 3
    assert "is empty (0 bytes)" in result.stderr and str(work) in result.stderr
    assert "db restore --from-mirror" in result.stderr and len(result.stderr.splitlines()) == 1
    assert work.stat().st_size == 0  # never re-created empty
    assert _digest(_mirror(filled)) == kept and _jobs_in(_mirror(filled)) == JOBS


@pytest.mark.parametrize("size", [5000, 8192])  # cut mid-page, and at a page boundary
def test_a_truncated_working_database_is_refused(filled: Path, size: int) -> None:
    work, kept = _work(filled), _digest(_mirror(filled))
    _drop_side_files(work)
    os.truncate(work, size)
    result = megarun_process(filled, "job", "ls")
    assert result.returncode == 3, result.stderr
    assert f"the database {work} is damaged (truncated" in result.stderr
    assert work.stat().st_size == size
    assert _digest(_mirror(filled)) == kept


def test_a_new_area_with_no_mirror_still_starts_its_database(area: Path) -> None:
    work = _work(area)
    work.parent.mkdir(exist_ok=True)
    work.write_bytes(b"")  # a crash while the very first command created it
    _ok(area, "app", "add", "a", "--command", "true")
    assert _jobs_in(_mirror(area)) == 0 and work.stat().st_size > 0


@pytest.mark.parametrize("command", [("job", "ls"), ("launch",), ("sync",)])
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_working_database_stops_every_command(filled: Path, corruption: str,
                                                        command: tuple[str, ...]) -> None:
    work = _work(filled)
    _drop_side_files(work)
    CORRUPTIONS[corruption](work)
    before_work, before_mirror = _digest(work), _digest(_mirror(filled))
    result = megarun_process(filled, *command)
    assert result.returncode == 3, result.stderr
    assert f"the database {work} is damaged (" in result.stderr
    assert "megarun db restore --from-mirror" in result.stderr
    assert "internal error" not in result.stderr
    assert _digest(work) == before_work  # nothing written
    assert _digest(_mirror(filled)) == before_mirror  # and never copied over the mirror
    assert not (filled / ".megarun" / "megarun.db.1").exists() or snapshot_problems(
        filled / ".megarun" / "megarun.db.1") == []


def test_a_damaged_mirror_is_refused_on_another_host(filled: Path) -> None:
    os.truncate(_mirror(filled), 5000)
    result = megarun_process(filled, "job", "ls", env={"MEGARUN_HOSTNAME": "elsewhere"})
    assert result.returncode == 3
    assert f"the database {_mirror(filled)} is damaged (truncated" in result.stderr


def test_a_corrupt_completed_runs_db_is_named(filled: Path) -> None:
    archive = filled / ".megarun" / "completed-runs.db"
    archive.write_bytes(b"SQLite format 3\x00" + os.urandom(4096 * 3 - 16))
    result = megarun_process(filled, "job", "ls", "--full-db")
    assert result.returncode == 3, result.stderr
    assert f"the database {archive} is damaged" in result.stderr


# -- the mirror: verified before publishing, previous generation kept ---------------------------
def _megarun_db(tmp_path: Path, apps: int = 1) -> Path:
    work = tmp_path / "work.db"
    prepare_database_file(work)
    with sqlite3.connect(work) as db:
        for index in range(apps):
            db.execute("INSERT INTO app (name, command, description, params, env, resources, "
                       "requirements, retries, source, created) VALUES (?, 'true', '', '{}', "
                       "'{}', '{}', '{}', 0, 'cli', 0)", (f"a{index}",))
    return work


def test_a_damaged_snapshot_never_replaces_the_mirror(tmp_path: Path) -> None:
    work, target = _megarun_db(tmp_path), tmp_path / "megarun.db"
    assert mirror.refresh(work, target).copied
    kept = _digest(target)
    _drop_table(work)
    with pytest.raises(DatabaseDamaged, match="tables missing: job_tag"):
        mirror.refresh(work, target)
    assert _digest(target) == kept
    assert not list(tmp_path.glob(mirror.TEMP_PREFIX + "*"))
    assert not mirror.previous_generation(target).exists()  # nothing rotated either


def test_each_refresh_keeps_the_previous_generation_private(tmp_path: Path) -> None:
    work, target = _megarun_db(tmp_path), tmp_path / "megarun.db"
    assert mirror.refresh(work, target).copied
    first = _digest(target)
    with sqlite3.connect(work) as db:
        db.execute("UPDATE app SET description = 'changed'")
    assert mirror.refresh(work, target).copied
    previous = mirror.previous_generation(target)
    assert _digest(previous) == first and _digest(target) != first
    assert previous.stat().st_mode & 0o777 == 0o600
    assert snapshot_problems(previous) == [] and snapshot_problems(target) == []


def test_the_keeper_reports_damage_and_close_raises_it(ctx: Context) -> None:
    ctx.db.execute_sql("INSERT INTO app (name, command, description, params, env, resources, "
                       "requirements, retries, source, created) VALUES ('a', 'true', '', '{}', "
                       "'{}', '{}', '{}', 0, 'cli', 0)")
    target = ctx.area.mirror_path
    deadline = time.monotonic() + 30
    while not (target.exists() and _count_apps(target) == 1):  # the keeper published it
        assert time.monotonic() < deadline, "the keeper never refreshed the mirror"
        time.sleep(0.05)
    kept = _digest(target)
    _drop_table(ctx.home.db, "event")  # damage from outside while the command runs
    deadline = time.monotonic() + 30
    while True:
        try:
            ctx.check_still_home()
        except DatabaseDamaged as exc:
            assert "tables missing: event" in str(exc)
            break
        assert time.monotonic() < deadline, "the keeper never noticed the damage"
        time.sleep(0.05)
    with pytest.raises(DatabaseDamaged):
        ctx.close()
    assert _digest(target) == kept


def _count_apps(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM app").fetchone()[0])


@pytest.mark.parametrize("step", mirror.FAULT_POINTS)
def test_kill_during_a_refresh_always_leaves_a_good_generation(area: Path, step: str) -> None:
    _ok(area, "app", "add", "one", "--command", "true")
    _ok(area, "app", "add", "two", "--command", "true")
    generations = [_mirror(area), mirror.previous_generation(_mirror(area))]
    assert all(snapshot_problems(path) == [] for path in generations)
    crashed = megarun_process(area, "app", "add", "three", "--command", "true",
                              env={"MEGARUN_FAULT": step})
    assert crashed.returncode == -9
    for path in generations:  # both names hold a whole, verified snapshot at every step
        assert snapshot_problems(path) == [], (step, path)
        assert path.stat().st_mode & 0o777 == 0o600
    assert _count_apps(generations[0]) >= 2 and _count_apps(generations[1]) >= 1
    _ok(area, "app", "ls")  # the next refresh tidies and publishes
    assert _count_apps(generations[0]) == 3
    assert not list(generations[0].parent.glob(mirror.TEMP_PREFIX + "*"))


# -- db check and db restore ---------------------------------------------------------------------
def test_db_check_reports_every_file(filled: Path) -> None:
    _ok(filled, "app", "add", "b", "--command", "true")  # a second refresh: megarun.db.1
    report = json.loads(_ok(filled, "db", "check", "--json").stdout)
    assert report["ok"] is True
    health = {f["role"]: (f["health"], f["jobs"]) for f in report["files"]}
    assert health == {"working": ("ok", JOBS), "mirror": ("ok", JOBS),
                      "mirror.1": ("ok", JOBS), "completed-runs": ("missing", None)}
    previous = filled / ".megarun" / "megarun.db.1"
    _garbage_in_the_middle(previous)
    result = megarun_process(filled, "db", "check", "--full")
    assert result.returncode == 3
    row = next(line for line in result.stdout.splitlines() if line.startswith("mirror.1"))
    assert "damaged" in row


def test_db_check_on_another_host_reads_the_mirrors_only(filled: Path) -> None:
    result = megarun_process(filled, "db", "check", "--json", env={"MEGARUN_HOSTNAME": "other"})
    assert result.returncode == 0, result.stderr
    health = {f["role"]: f["health"] for f in json.loads(result.stdout)["files"]}
    assert health["working"] == "elsewhere" and health["mirror"] == "ok"


def test_db_restore_puts_the_mirror_back_and_keeps_the_damaged_file(filled: Path) -> None:
    work = _work(filled)
    _drop_side_files(work)
    _garbage_in_the_middle(work)
    damaged_bytes = _digest(work)
    assert megarun_process(filled, "db", "check").returncode == 3
    result = _ok(filled, "db", "restore", "--from-mirror")
    assert f"{JOBS:,} jobs" in result.stdout
    aside = list(work.parent.glob("work.db.damaged-*"))
    assert [_digest(path) for path in aside if not path.name.endswith(("-wal", "-shm"))] == [
        damaged_bytes]
    with sqlite3.connect(work) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert work.stat().st_mode & 0o777 == 0o600
    listed = _ok(filled, "job", "ls", "--json")
    assert len(json.loads(listed.stdout)) >= 1
    assert _ok(filled, "db", "check").returncode == 0
    again = megarun_process(filled, "db", "restore", "--from-mirror")  # sound now
    assert again.returncode == 2 and "is sound" in again.stderr
    forced = _ok(filled, "db", "restore", "--from-mirror", "--force")
    assert "kept the old file as" in forced.stdout
    kept = [p for p in work.parent.glob("work.db.damaged-*") if not p.name.endswith(("-wal",
                                                                                     "-shm"))]
    assert len(kept) == 2  # the forced restore kept the sound one aside too, next to the first


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_db_restore_mends_a_missing_or_empty_working_database(filled: Path, state: str) -> None:
    work = _work(filled)
    _drop_side_files(work)
    if state == "missing":
        work.unlink()
    else:
        work.write_bytes(b"")
    assert megarun_process(filled, "job", "ls").returncode == 3
    _ok(filled, "db", "restore", "--from-mirror")
    assert _jobs_in(work) == JOBS


def test_db_restore_refuses_a_damaged_generation_and_names_the_sound_one(filled: Path) -> None:
    _ok(filled, "app", "add", "b", "--command", "true")  # megarun.db.1 now exists
    work, current = _work(filled), _mirror(filled)
    _drop_side_files(work)
    _bad_header(work)
    os.truncate(current, 5000)
    refused = megarun_process(filled, "db", "restore", "--from-mirror", "--generation", "0")
    assert refused.returncode == 3
    assert "generation 1 is sound: --generation 1" in refused.stderr
    assert work.read_bytes().startswith(b"this is no database")  # left as it was
    restored = _ok(filled, "db", "restore", "--from-mirror")  # the newest sound one: 1
    assert "(generation 1)" in restored.stdout
    assert _jobs_in(work) == JOBS


def test_db_restore_refuses_while_another_process_uses_the_database(ctx: Context) -> None:
    assert ctx.db is not None  # this process holds it open (and keeps the mirror)
    result = megarun_process(ctx.area.root, "db", "restore", "--from-mirror", "--force")
    assert result.returncode == 3 and "has the working database open" in result.stderr


# -- full disk -----------------------------------------------------------------------------------
def test_a_full_database_says_so_not_cannot_rollback(tmp_path: Path) -> None:
    """SQLite rolls a transaction back itself on SQLITE_FULL: the error must not be hidden by
    the rollback that follows. max_page_count makes the same SQLITE_FULL a full disk does."""
    from megarun.db.connection import open_database

    area = tmp_path / "area"
    init_area(area, keys=[])
    db = open_database(area / "full.db")
    try:
        db.execute_sql("CREATE TABLE filler (blob BLOB)")
        pages = db.execute_sql("PRAGMA page_count").fetchone()[0]
        db.execute_sql(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(DiskFull, match=f"no space left on device: .*{area / 'full.db'}"):
            with write_transaction(db):
                db.execute_sql("INSERT INTO filler VALUES (zeroblob(100000))")
    finally:
        db.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MB tmpfs (root only)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs here ({done.stderr.strip()}): the "
                    "full-disk test did not run")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_launch_and_keeps_what_ran(small_disk: Path) -> None:
    area = small_disk / "area"
    init_area(area, keys=[])
    config = area / "megarun.toml"
    config.write_text(config.read_text().replace("heartbeat = 5", "heartbeat = 1")
                      .replace("dead_after = 60", "dead_after = 10"))
    ballast = small_disk / "ballast"
    # fill the disk, then for 10 s take back whatever frees up (a failed mirror copy's temp
    # file), so the launcher's next write surely finds it full; the hog ends by itself
    hog = (f"head -c 50M /dev/zero > {ballast}; for i in $(seq 100); do "
           f"head -c 1M /dev/zero >> {ballast}.more 2>/dev/null; sleep 0.1; done; true")
    _ok(area, "app", "add", "quick", "--command", "echo ok")
    _ok(area, "app", "add", "hog", "--command", hog)
    _ok(area, "job", "create", "--app", "quick", "--count", "10")
    after = [arg for job in range(1, 11) for arg in ("--after", str(job))]
    _ok(area, "job", "create", "--app", "hog", *after)  # fills the disk once 1..10 passed
    _ok(area, "job", "create", "--app", "quick", "--count", "5", "--after", "11")
    launched = megarun_process(area, "launch", timeout=120)
    assert launched.returncode == 3, (launched.stdout, launched.stderr)
    assert "no space left on device" in launched.stderr
    assert str(area / ".megarun") in launched.stderr  # names the file it could not write
    assert "cannot rollback" not in launched.stderr
    agents = subprocess.run(["pgrep", "-f", f"megarun.agent run --workdir {area}"],
                            capture_output=True, text=True, check=False)
    assert agents.stdout == "", "the launcher left its agent running on a full disk"
    ballast.unlink()
    Path(f"{ballast}.more").unlink(missing_ok=True)
    jobs = json.loads(_ok(area, "job", "ls", "--json").stdout)
    by_app = Counter((job["app"], job["status"]) for job in jobs)
    assert by_app[("quick", "PASS")] == 10  # everything ingested before the disk filled

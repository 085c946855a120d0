"""The homehost file, where a working database may live, and reading on another host."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from filelock import FileLock

from megarun.config.area import locate_area
from megarun.errors import EnvironmentProblem
from megarun.homehost import home as homehost
from megarun.homehost.context import Context
from tests.conftest import megarun_process

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /home rw,relatime shared:20 - nfs4 server:/home rw,vers=4.2
41 22 0:36 / /lus/grand rw - lustre 10.0.0.1@o2ib:/grand rw
42 40 0:37 / /home/user/local\\040disk rw - xfs /dev/sdb1 rw
"""


@pytest.mark.parametrize(("path", "fstype"), [
    ("/tmp/x", "ext4"), ("/home/user/area", "nfs4"), ("/lus/grand/proj", "lustre"),
    ("/home/user/local disk/a", "xfs"), ("/homework", "ext4")])
def test_filesystem_type_from_mountinfo(path: str, fstype: str) -> None:
    assert homehost.filesystem_type(Path(path), MOUNTINFO) == fstype
    assert homehost.is_network_fs(Path(path), MOUNTINFO) == (fstype in ("nfs4", "lustre"))


def test_first_command_makes_this_host_the_home(area: Path) -> None:
    assert megarun_process(area, "app", "ls").returncode == 0
    path = area / ".megarun" / "homehost"
    record = json.loads(path.read_text())
    assert record["host"] == homehost.this_host()
    assert record["db"] == str(area / ".megarun" / "work.db")  # the area is on a local disk
    assert record["area"] == str(area) and record["moving_to"] is None
    assert path.stat().st_mode & 0o777 == 0o600
    assert (area / ".megarun" / "megarun.db").exists()  # and the mirror is written


def test_db_dir_override_puts_the_working_db_there(area: Path, tmp_path: Path) -> None:
    result = megarun_process(area, "app", "add", "a", "--command", "true",
                             env={"MEGARUN_DB_DIR": str(tmp_path / "local")})
    assert result.returncode == 0, result.stderr
    db = Path(json.loads((area / ".megarun" / "homehost").read_text())["db"])
    assert db.parent.parent == tmp_path / "local" and db.exists()
    assert not (area / ".megarun" / "work.db").exists()
    listed = megarun_process(area, "app", "ls", "--json")  # the file, not the variable, decides
    assert '"a"' in listed.stdout


def test_create_only_never_overwrites_another_hosts_file(area: Path) -> None:
    found = locate_area(str(area))
    other = homehost.HomeHost("elsewhere", Path("/x/work.db"), "u@elsewhere", ("megarun",), 1.0,
                              area)
    assert homehost.write_homehost(found, other, create_only=True)
    assert homehost.establish(found).host == "elsewhere"
    assert not homehost.write_homehost(found, homehost.HomeHost(
        "me", Path("/y"), "u@me", ("megarun",), 2.0, area), create_only=True)
    assert homehost.establish(found).host == "elsewhere"
    with pytest.raises(homehost.NotHomeHost, match="elsewhere"):
        homehost.working_db_path(found)


def test_a_damaged_homehost_file_is_one_clear_error(area: Path) -> None:
    (area / ".megarun").mkdir(exist_ok=True)
    (area / ".megarun" / "homehost").write_text("{not json")
    result = megarun_process(area, "app", "ls")
    assert result.returncode == 2
    assert "not a valid homehost file" in result.stderr and result.stderr.count("\n") == 1


def test_another_host_reads_the_mirror_and_writes_nothing(area: Path) -> None:
    assert megarun_process(area, "app", "add", "a", "--command", "true").returncode == 0
    work = area / ".megarun" / "work.db"
    before = work.stat().st_mtime_ns
    other = {"MEGARUN_HOSTNAME": "node9"}
    listed = megarun_process(area, "--verbose", "app", "ls", "--json", env=other)
    assert listed.returncode == 0 and '"a"' in listed.stdout
    assert "reading the mirror of" in listed.stderr
    status = megarun_process(area, "job", "ls", env=other)
    assert status.returncode == 0
    assert work.stat().st_mtime_ns == before


def test_no_mirror_yet_is_a_clear_error(area: Path) -> None:
    found = locate_area(str(area))
    homehost.write_homehost(found, homehost.HomeHost(
        "elsewhere", Path("/x/work.db"), "u@elsewhere", ("megarun",), 1.0, area))
    result = megarun_process(area, "app", "ls")
    assert result.returncode == 3 and "no mirror" in result.stderr


def test_a_stale_moving_mark_is_cleared_and_a_live_one_refuses(area: Path) -> None:
    found = locate_area(str(area))
    context = Context(area_override=str(area))
    home = context.home
    context.close()
    homehost.write_homehost(found, homehost.HomeHost(
        home.host, home.db, home.address, home.megarun, home.since, area, moving_to="node2"))
    with FileLock(str(homehost.handoff_lock_path(home))):  # a hand-over is running
        refused = Context(area_override=str(area))
        with pytest.raises(homehost.NotHomeHost, match="being moved to node2"):
            refused.db  # noqa: B018
    fresh = Context(area_override=str(area))  # nobody holds the lock: the mark is stale
    assert fresh.db is not None
    fresh.close()
    assert homehost.establish(found).moving_to is None


def test_mirror_from_an_older_schema_is_refused(area: Path) -> None:
    assert megarun_process(area, "app", "ls").returncode == 0
    mirror = area / ".megarun" / "megarun.db"
    os.chmod(mirror, 0o600)
    with sqlite3.connect(mirror) as db:
        db.execute("DELETE FROM schema_migration WHERE name = '0005_archive'")
    result = megarun_process(area, "app", "ls", env={"MEGARUN_HOSTNAME": "node9"})
    assert result.returncode == 3 and "older megarun" in result.stderr
    with pytest.raises(EnvironmentProblem):
        Context(area_override=str(area))._open_mirror()


READ_ON_MIRROR = [("site", "presets"), ("site", "ls"), ("site", "show", "local"), ("app", "ls"),
                  ("app", "show", "a"), ("job", "ls"), ("job", "show", "1"), ("queue", "ls"),
                  ("runs", "ls"), ("homehost", "show"), ("archive", "ls"), ("cron", "show")]


@pytest.mark.parametrize("args", READ_ON_MIRROR, ids=[" ".join(a) for a in READ_ON_MIRROR])
def test_every_read_command_works_on_the_read_only_mirror(area: Path, args: tuple[str, ...]
                                                          ) -> None:
    assert megarun_process(area, "app", "add", "a", "--command", "true").returncode == 0
    assert megarun_process(area, "job", "create", "--app", "a").returncode == 0
    result = megarun_process(area, *args, env={"MEGARUN_HOSTNAME": "node9"})
    assert result.returncode == 0, result.stderr


def test_a_long_running_process_notices_the_database_moved(area: Path) -> None:
    found = locate_area(str(area))
    context = Context(area_override=str(area))
    assert context.db is not None
    context.check_still_home()  # still home: nothing happens
    home = context.home
    homehost.write_homehost(found, homehost.HomeHost(
        "node2", Path("/elsewhere/work.db"), "u@node2", home.megarun, home.since, area))
    with pytest.raises(homehost.NotHomeHost, match="moved to node2"):
        context.check_still_home()
    context.close()
    result = megarun_process(area, "sync", env={"MEGARUN_HOSTNAME": home.host})
    assert result.returncode == 3 and "cannot be reached" in result.stderr  # forwarded now


def test_a_missing_working_database_is_never_replaced_by_an_empty_one(area: Path) -> None:
    assert megarun_process(area, "app", "add", "a", "--command", "true").returncode == 0
    work = area / ".megarun" / "work.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    result = megarun_process(area, "app", "ls")
    assert result.returncode == 3 and "is missing" in result.stderr
    assert not work.exists()

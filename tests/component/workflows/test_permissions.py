"""Private files and owner checks with a real second user (see tests/users.py).

What megarun makes is 0700/0600 whatever the umask; a work dir, spool or .megarun/ that
another user owns or may write is refused (exit 3, naming the path and the fix), and a bundle
planted there never runs.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, megarun_process
from tests.users import other_user, plant_work_dir, shared_folder


@pytest.fixture(scope="session")
def other() -> pwd.struct_passwd:
    return other_user()


@pytest.fixture
def shared() -> Iterator[Path]:
    with shared_folder() as folder:
        yield folder


def run_with_umask(umask: int, area: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as its own process under `umask` (the agents it starts inherit it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "megarun", "--area", str(area), *args],
                          capture_output=True, text=True, timeout=120, env=env, check=False,
                          umask=umask)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            yield path, path.lstat()


@pytest.mark.parametrize("umask", [0o002, 0o000])
def test_everything_megarun_makes_is_private_whatever_the_umask(tmp_path: Path,
                                                                 umask: int) -> None:
    area = tmp_path / "area"
    ok(run_with_umask(umask, area, "init", str(area)))
    ok(run_with_umask(umask, area, "app", "add", "echo", "--command", "echo {{ msg }}"))
    ok(run_with_umask(umask, area, "job", "create", "--app", "echo", "-p", "msg=hi",
                      "--count", "3"))
    summary = json.loads(ok(run_with_umask(umask, area, "launch", "--json")).stdout)
    assert summary["by_status"] == {"PASS": 3}
    state = area / ".megarun"
    made = [(state, state.stat()), *walk(state)]
    folders = [p for p, info in made if stat.S_ISDIR(info.st_mode)]
    files = [p for p, info in made if stat.S_ISREG(info.st_mode)]
    # what a launch makes: the site work dir, its spool, control, job dirs, logs and locks
    names = {p.name for p in folders}
    assert {"sites", "local", "spool", "queue", "control", "kill", "jobs", "locks",
            "logs"} <= names
    assert any(p.suffix == ".lock" for p in files)
    assert any(p.name == "job.out" for p in files)
    loose = [f"{p} {stat.S_IMODE(info.st_mode):04o}" for p, info in made
             if stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) != 0o700]
    loose += [f"{p} {stat.S_IMODE(info.st_mode):04o}" for p, info in made
              if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077]
    assert loose == []
    locks = [p for p in files if p.suffix == ".lock"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in locks} == {0o600}


def test_a_work_dir_another_user_made_is_refused(area: Path, other: pwd.struct_passwd,
                                                 shared: Path) -> None:
    workdir, marker = shared / "site", shared / "marker"
    plant_work_dir(other, workdir, marker)
    result = megarun_process(area, "site", "add", "planted", "--preset", "local",
                             "--workdir", str(workdir))
    assert result.returncode == 3, result.stderr
    assert f"{workdir} belongs to user {other.pw_name}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    sites = json.loads(megarun_process(area, "site", "ls", "--json").stdout)
    assert "planted" not in {site["name"] for site in sites}
    assert not marker.exists()


def test_a_launch_into_a_work_dir_taken_over_by_another_user_runs_nothing(
        area: Path, other: pwd.struct_passwd, shared: Path) -> None:
    workdir, marker = shared / "site", shared / "marker"
    ok(megarun_process(area, "site", "add", "scratch", "--preset", "local",
                       "--workdir", str(workdir)))
    ok(megarun_process(area, "app", "add", "mine", "--command", f"touch {shared}/mine"))
    ok(megarun_process(area, "job", "create", "--app", "mine", "--site", "scratch"))
    os.rename(workdir, shared / "purged")  # a scratch purge; the other user is quick
    plant_work_dir(other, workdir, marker)
    result = megarun_process(area, "launch", "--site", "scratch", timeout=60)
    assert result.returncode == 3, result.stderr
    assert f"{workdir} belongs to user {other.pw_name}" in result.stderr
    assert not marker.exists()
    assert not (shared / "mine").exists()
    assert (workdir / "spool" / "queue" / "0001.jsonl").exists()


def test_the_agent_refuses_a_work_dir_of_another_user(other: pwd.struct_passwd,
                                                      shared: Path) -> None:
    workdir, marker = shared / "site", shared / "marker"
    plant_work_dir(other, workdir, marker)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "megarun.agent", "run", "--workdir",
                             str(workdir), "--agent-id", "a1", "--idle-exit", "0.5"],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 3
    assert f"{workdir}: belongs to user {other.pw_name}" in result.stderr
    assert not marker.exists()
    assert not (workdir / "spool" / "events" / "a1.jsonl").exists()


def test_a_group_writable_work_dir_is_refused_with_the_fix(area: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    ok(megarun_process(area, "site", "add", "mine", "--preset", "local",
                       "--workdir", str(workdir)))
    ok(megarun_process(area, "app", "add", "touch", "--command", f"touch {tmp_path}/ran"))
    ok(megarun_process(area, "job", "create", "--app", "touch", "--site", "mine"))
    os.chmod(workdir, 0o775)
    result = megarun_process(area, "launch", "--site", "mine", timeout=60)
    assert result.returncode == 3, result.stderr
    assert f"{workdir} is writable by group or others (mode 0775)" in result.stderr
    assert f"chmod go-w {workdir}" in result.stderr
    assert not (tmp_path / "ran").exists()
    os.chmod(workdir / "spool" / "queue", 0o777)
    os.chmod(workdir, 0o700)
    result = megarun_process(area, "launch", "--site", "mine", timeout=60)
    assert result.returncode == 3
    assert f"chmod go-w {workdir / 'spool' / 'queue'}" in result.stderr
    os.chmod(workdir / "spool" / "queue", 0o700)
    ok(megarun_process(area, "launch", "--site", "mine", timeout=60))
    assert (tmp_path / "ran").exists()


def test_a_group_writable_area_state_dir_is_refused(area: Path) -> None:
    ok(megarun_process(area, "job", "ls"))
    os.chmod(area / ".megarun", 0o770)
    result = megarun_process(area, "job", "ls")
    assert result.returncode == 3
    assert f"chmod go-w {area / '.megarun'}" in result.stderr

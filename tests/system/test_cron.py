"""`megarun cron show|install|rm` against a fake `crontab` keeping its table in a file, and the
real crontab of this user; the line itself is run the way cron runs it, and a real cron daemon
runs it to feed the local site."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from megarun.config.area import locate_area
from megarun.homehost import home as homehost
from megarun.homehost.areas import init_area
from tests.component.workflows.test_launch import wait_for
from tests.component.workflows.test_sync_local import running_agents
from tests.conftest import megarun_process

FAKE_CRONTAB = """#!/bin/sh
# A crontab keeping the table in $FAKE_CRONTAB_FILE: -l prints it, - replaces it from stdin.
case "$1" in
  -l) if [ -f "$FAKE_CRONTAB_FILE" ]; then cat "$FAKE_CRONTAB_FILE"
      else echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -) cat > "$FAKE_CRONTAB_FILE" ;;
  *) echo "fake crontab: unsupported $*" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def fake_cron(tmp_path: Path) -> dict[str, str]:
    """Environment with the fake crontab first on PATH; its table is tmp_path/crontab.txt."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    script = bin_dir / "crontab"
    script.write_text(FAKE_CRONTAB)
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_CRONTAB_FILE": str(tmp_path / "crontab.txt")}


def _table(env: dict[str, str]) -> list[str]:
    return Path(env["FAKE_CRONTAB_FILE"]).read_text().splitlines()


def _command_of(line: str) -> str:
    """What cron hands to /bin/sh: the line without its five time fields, % unescaped."""
    return line.split(None, 5)[5].replace("\\%", "%")


def test_show_prints_a_marked_block(area: Path) -> None:
    done = megarun_process(area, "cron", "show")
    assert done.returncode == 0, done.stderr
    begin, line, end = done.stdout.splitlines()
    assert begin == f"# >>> megarun sync: {area} >>>" and end == f"# <<< megarun sync: {area} <<<"
    assert line.startswith("*/5 * * * * ")
    words = shlex.split(_command_of(line))
    assert words[-3:] == [">>", str(area / ".megarun" / "logs" / "cron.log"), "2>&1"]
    assert words[0] == f"PATH={os.environ['PATH']}"  # what jobs the cron's sync runs find
    assert [sys.executable, "-m", "megarun", "--area", str(area), "sync"] == [
        w for w in words if not w.startswith(("PATH=", "PYTHONPATH="))][:6]


@pytest.mark.parametrize(("every", "fields"), [
    ("1", "* * * * *"), ("15", "*/15 * * * *"), ("60", "0 * * * *"), ("120", "0 */2 * * *"),
    ("15m", "*/15 * * * *"), ("1h", "0 * * * *"), ("2h", "0 */2 * * *"), ("0h15", "*/15 * * * *")])
def test_every(area: Path, every: str, fields: str) -> None:
    done = megarun_process(area, "cron", "show", "--every", every, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["lines"][1].startswith(fields + " ")


@pytest.mark.parametrize(("every", "message"), [
    ("0", "divides an hour"), ("7", "divides an hour"), ("90", "divides an hour"),
    ("1h30m", "divides an hour"), ("-5", "expected a duration"), ("90s", "whole minutes")])
def test_every_must_divide_an_hour_or_a_day(area: Path, every: str, message: str) -> None:
    done = megarun_process(area, "cron", "show", "--every", every)
    assert done.returncode == 2 and message in done.stderr


def test_install_is_idempotent_and_keeps_other_lines(area: Path, tmp_path: Path,
                                                     fake_cron: dict[str, str]) -> None:
    Path(fake_cron["FAKE_CRONTAB_FILE"]).write_text("MAILTO=me\n0 3 * * * backup.sh\n")
    other = init_area(tmp_path / "other", keys=[])
    assert megarun_process(other, "cron", "install", env=fake_cron).returncode == 0
    first = megarun_process(area, "cron", "install", env=fake_cron)
    assert first.returncode == 0 and "crontab updated" in first.stderr
    again = megarun_process(area, "cron", "install", env=fake_cron)
    assert again.returncode == 0 and "already has these lines" in again.stderr
    table = _table(fake_cron)
    assert table[:2] == ["MAILTO=me", "0 3 * * * backup.sh"]
    assert table.count(f"# >>> megarun sync: {area} >>>") == 1
    assert table.count(f"# >>> megarun sync: {other} >>>") == 1
    assert len(table) == 8
    # A new interval replaces the block in place of adding one.
    assert megarun_process(area, "cron", "install", "--every", "10", env=fake_cron).returncode == 0
    table = _table(fake_cron)
    assert len(table) == 8 and sum(line.startswith("*/10 ") for line in table) == 1
    assert (area / ".megarun" / "logs").is_dir()

    removed = megarun_process(area, "cron", "rm", env=fake_cron)
    assert removed.returncode == 0, removed.stderr
    table = _table(fake_cron)
    assert table[:2] == ["MAILTO=me", "0 3 * * * backup.sh"] and len(table) == 5
    assert not any(str(area) + " " in line or line.endswith(str(area) + " >>>") for line in table)
    assert "no lines for this area" in megarun_process(area, "cron", "rm", env=fake_cron).stderr


def test_no_crontab_command(area: Path, tmp_path: Path) -> None:
    """install says which package brings crontab and prints the lines to add by hand (exit 3);
    show needs no crontab at all."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    bare = {"PATH": str(empty)}
    done = megarun_process(area, "cron", "install", "--every", "1", env=bare)
    assert done.returncode == 3, done.stderr
    [error] = done.stderr.strip().splitlines()
    assert "no crontab command here" in error
    assert "cron on Debian and Ubuntu, cronie on RHEL" in error and "by hand" in error
    shown = megarun_process(area, "cron", "show", "--every", "1", env=bare)
    assert shown.returncode == 0, shown.stderr
    assert done.stdout == shown.stdout and shown.stdout.splitlines()[1].startswith("* * * * * ")
    as_json = megarun_process(area, "cron", "install", "--every", "1", "--json", env=bare)
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["lines"] == shown.stdout.splitlines()


def test_the_line_runs_a_sync_with_cron_s_environment(tmp_path: Path) -> None:
    """Quoting and % escaping hold for an awkward path; the command works with cron's bare
    environment (HOME, LOGNAME, SHELL, PATH=/usr/bin:/bin) and appends to cron.log."""
    area = init_area(tmp_path / "my area %d 'q'", keys=[])
    line = megarun_process(area, "cron", "show").stdout.splitlines()[1]
    assert "\\%d" in line
    env = {"HOME": os.environ.get("HOME", "/root"), "LOGNAME": "cron", "SHELL": "/bin/sh",
           "PATH": "/usr/bin:/bin"}
    log = area / ".megarun" / "logs" / "cron.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        done = subprocess.run(["/bin/sh", "-c", _command_of(line)], env=env, check=False,
                              capture_output=True, text=True, cwd="/")
        assert done.returncode == 0, (done.stdout, done.stderr, log.read_text())
    text = log.read_text()
    assert text.count("no sites yet") == 2, text


REAL_CRONTAB = Path("/usr/bin/crontab")
#: Where Debian's cron (and cronie) keep the daemon; root's PATH has it, a user's may not.
CRON_DAEMONS = (Path("/usr/sbin/cron"), Path("/usr/sbin/crond"))
CRON_PIDFILES = (Path("/run/crond.pid"), Path("/var/run/crond.pid"))


@pytest.fixture
def real_crontab() -> Iterator[dict[str, str]]:
    """This user's real crontab (the environment that finds it), put back as it was after."""
    if not REAL_CRONTAB.exists():
        pytest.skip(f"SKIPPED LOUDLY: no {REAL_CRONTAB} on this machine: the real crontab "
                    "round trip did not run (python3 -m tests.system_services installs cron)")
    saved = subprocess.run([str(REAL_CRONTAB), "-l"], capture_output=True, text=True, check=False)
    try:
        yield {"PATH": f"{REAL_CRONTAB.parent}:{os.environ['PATH']}"}
    finally:
        if saved.returncode == 0:
            subprocess.run([str(REAL_CRONTAB), "-"], input=saved.stdout, text=True, check=True)
        else:
            subprocess.run([str(REAL_CRONTAB), "-r"], capture_output=True, check=False)


def _running_cron() -> bool:
    for pidfile in CRON_PIDFILES:
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if Path(f"/proc/{pid}").exists():
            return True
    return False


@pytest.fixture
def cron_daemon(tmp_path: Path) -> Iterator[None]:
    """A real cron daemon: the one this machine runs, or one started here (as root, in the
    foreground) and stopped after."""
    if _running_cron():
        yield
        return
    daemon = next((path for path in CRON_DAEMONS if path.exists()), None)
    if daemon is None or os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: no cron daemon runs here and this test cannot start one "
                    f"({'not root' if daemon else 'none installed'}; python3 -m "
                    "tests.system_services installs cron): cron feeding a site did not run")
    with (tmp_path / "crond.log").open("wb") as log:
        process = subprocess.Popen([str(daemon), "-f"], stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=log, start_new_session=True)
    try:
        wait_for(_running_cron, 10)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_real_crontab_of_this_user(area: Path, real_crontab: dict[str, str]) -> None:
    env = real_crontab
    for _ in range(2):
        done = megarun_process(area, "cron", "install", env=env)
        assert done.returncode == 0, done.stderr
    table = subprocess.run([str(REAL_CRONTAB), "-l"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert table.count(f"# >>> megarun sync: {area} >>>") == 1
    assert sum(f"--area {area} sync" in line for line in table) == 1
    assert megarun_process(area, "cron", "rm", env=env).returncode == 0
    left = subprocess.run([str(REAL_CRONTAB), "-l"], capture_output=True, text=True,
                          check=False).stdout
    assert str(area) not in left


def _job_states(area: Path) -> list[tuple[str, str]]:
    """The jobs' state and status, read from the working database itself (no megarun command
    runs: what changes it is cron's sync alone)."""
    with sqlite3.connect(homehost.working_db_path(locate_area(str(area)))) as db:
        return db.execute("SELECT state, status FROM job ORDER BY id").fetchall()


def test_cron_alone_runs_the_local_site_s_jobs(area: Path, real_crontab: dict[str, str],
                                               cron_daemon: None, tmp_path: Path) -> None:
    """`cron install --every 1` and a real cron daemon: the jobs of the local site complete
    with no other command run (each once), and the agent cron's sync started leaves when idle."""
    ran = tmp_path / "ran.txt"
    assert megarun_process(area, "app", "add", "mark", "--command",
                           f"echo $MEGARUN_JOB_ID >> {ran}").returncode == 0
    assert megarun_process(area, "job", "create", "--app", "mark", "--count", "5").returncode == 0
    installed = megarun_process(area, "cron", "install", "--every", "1", env=real_crontab)
    assert installed.returncode == 0, installed.stderr
    log = area / ".megarun" / "logs" / "cron.log"
    try:
        # cron starts the sync at the top of a minute: the first dispatches and starts the
        # agent, the next takes in what it did
        wait_for(lambda: _job_states(area) == [("COMPLETED", "PASS")] * 5, 200)
    finally:
        removed = megarun_process(area, "cron", "rm", env=real_crontab)
    assert removed.returncode == 0, removed.stderr
    assert sorted(ran.read_text().split()) == ["1", "2", "3", "4", "5"]  # each once
    text = log.read_text()
    rows = [line.split() for line in text.splitlines() if line.startswith("local ")]
    assert rows and all(row[1] == "yes" for row in rows), text  # the site's sync rows, all ok
    assert "megarun: error" not in text, text
    wait_for(lambda: not running_agents(area), 30)  # idle: it left


"""The local launcher end to end: real agent processes, real files, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import megarun_process, spawn_megarun


def run_ok(area: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = megarun_process(area, *args)
    assert result.returncode == 0, result.stderr
    return result


def jobs(area: Path, *args: str) -> list[dict[str, Any]]:
    return json.loads(run_ok(area, "job", "ls", "--json", *args).stdout)


def job(area: Path, job_id: int) -> dict[str, Any]:
    return json.loads(run_ok(area, "job", "show", str(job_id), "--json").stdout)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def add_app(area: Path, name: str, command: str, *extra: str) -> None:
    run_ok(area, "app", "add", name, "--command", command, *extra)


def test_jobs_run_end_to_end(area: Path) -> None:
    add_app(area, "echo", "echo {{ msg }}")
    run_ok(area, "job", "create", "--app", "echo", "-p", "msg=hello", "--count", "20")
    result = megarun_process(area, "launch", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["done"] == 20 and summary["by_status"] == {"PASS": 20}
    listed = jobs(area)
    assert {(j["state"], j["status"], j["exit_code"]) for j in listed} == {("COMPLETED", "PASS", 0)}
    shown = job(area, 7)
    assert [e["to"] for e in shown["events"]] == [
        "READY", "QUEUED", "LAUNCHED", "RUNNING", "COMPLETED"]
    workdir = Path(shown["workdir"])
    assert (workdir / "job.out").read_text() == "hello\n"
    assert (workdir / "megarun.exit").read_text().strip() == "0"
    logs = json.loads(run_ok(area, "job", "logs", "7", "--json").stdout)
    assert logs == {
        "job.out": {"path": str(workdir / "job.out"), "size": 6, "truncated": False,
                    "text": "hello\n"},
        "job.err": {"path": str(workdir / "job.err"), "size": 0, "truncated": False,
                    "text": ""}}


def test_failures_exit_one_and_say_why(area: Path) -> None:
    add_app(area, "fail", "sh -c 'echo oops >&2; exit 3'")
    add_app(area, "missing", "no-such-command-anywhere --flag")
    run_ok(area, "job", "create", "--app", "fail")
    run_ok(area, "job", "create", "--app", "missing")
    result = megarun_process(area, "launch", "--json")
    assert result.returncode == 1
    failed = {j["id"]: j for j in jobs(area, "--state", "FAILED")}
    assert failed[1]["exit_code"] == 3 and failed[1]["status"] == "FAIL"
    assert failed[2]["exit_code"] == 127
    assert "command not found" in failed[2]["message"]
    assert "oops" in json.loads(run_ok(area, "job", "logs", "1", "--json").stdout)["job.err"]["text"]


def test_retries_then_gives_up(area: Path) -> None:
    add_app(area, "flaky", "false", "--retries", "2")
    run_ok(area, "job", "create", "--app", "flaky")
    assert megarun_process(area, "launch").returncode == 1
    shown = job(area, 1)
    assert (shown["state"], shown["status"], shown["runs"]) == ("COMPLETED", "FAIL", 3)
    assert [e["to"] for e in shown["events"]].count("RUNNING") == 3


def test_shell_metacharacters_never_execute(area: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    add_app(area, "echo", "printf '%s\\n' {{ msg }}")
    nasty = [f"$(touch {marker})", f"; touch {marker}", f"`touch {marker}`",
             "it's \"quoted\"", f"line1\nline2 && touch {marker}", f"| touch {marker}"]
    lines = "\n".join(json.dumps({"params": {"msg": text}}) for text in nasty)
    (tmp_path / "jobs.jsonl").write_text(lines + "\n")
    run_ok(area, "job", "create", "--app", "echo", "--from-file", str(tmp_path / "jobs.jsonl"))
    run_ok(area, "launch")
    for index, text in enumerate(nasty, start=1):
        out = json.loads(run_ok(area, "job", "logs", str(index), "--json").stdout)["job.out"]["text"]
        assert out == text + "\n"
    assert not marker.exists()


def test_dependencies(area: Path) -> None:
    add_app(area, "ok", "true")
    add_app(area, "bad", "false")
    run_ok(area, "job", "create", "--app", "ok")
    run_ok(area, "job", "create", "--app", "bad")
    run_ok(area, "job", "create", "--app", "ok", "--after", "1")
    run_ok(area, "job", "create", "--app", "ok", "--after", "2")
    run_ok(area, "job", "create", "--app", "ok", "--after", "4")
    assert megarun_process(area, "launch").returncode == 1
    states = {j["id"]: (j["state"], j["status"]) for j in jobs(area)}
    assert states == {1: ("COMPLETED", "PASS"), 2: ("COMPLETED", "FAIL"),
                      3: ("COMPLETED", "PASS"), 4: ("COMPLETED", "PREQ_FAIL"),
                      5: ("COMPLETED", "PREQ_FAIL")}
    assert job(area, 3)["started"] >= job(area, 1)["ended"]


def test_walltime_timeout_kills_the_whole_group(area: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    add_app(area, "hang", f"sh -c 'sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait'")
    run_ok(area, "job", "create", "--app", "hang", "--walltime", "0.02")
    started = time.monotonic()
    assert megarun_process(area, "launch").returncode == 1
    assert time.monotonic() - started < 20
    shown = job(area, 1)
    assert (shown["state"], shown["status"]) == ("COMPLETED", "TIMEOUT")
    for pid in map(int, pids.read_text().split()):
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_kill_running_job(area: Path) -> None:
    add_app(area, "sleep", "sleep 60")
    run_ok(area, "job", "create", "--app", "sleep", "--count", "2")
    launcher = spawn_megarun(area, "launch", "--quiet")
    try:
        wait_for(lambda: len(jobs(area, "--state", "RUNNING")) == 2)
        killed = json.loads(run_ok(area, "job", "kill", "1", "2", "--json").stdout)
        assert killed["requested"] == [1, 2]
        launcher.wait(timeout=30)
    finally:
        launcher.kill()
    assert {(j["state"], j["status"]) for j in jobs(area)} == {("KILLED", "ABORT")}


def test_ctrl_c_kills_running_and_requeues_the_rest(area: Path) -> None:
    add_app(area, "sleep", "sleep 60")
    run_ok(area, "job", "create", "--app", "sleep", "--count", "6")
    launcher = spawn_megarun(area, "launch", "--quiet")
    wait_for(lambda: len(jobs(area, "--state", "RUNNING")) >= 1)
    running = [j["id"] for j in jobs(area, "--state", "RUNNING")]
    launcher.send_signal(signal.SIGINT)
    _out, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 130, err
    states = {j["id"]: j["state"] for j in jobs(area)}
    assert set(states.values()) <= {"KILLED", "READY"}
    assert all(states[i] == "KILLED" for i in running)
    assert "READY" in states.values()
    started = _started_pids(area)
    assert started, "no job process was recorded"
    wait_for(lambda: not [pid for pid in started if _alive(pid)], timeout=5)


def _started_pids(area: Path) -> list[int]:
    """The pids of the job processes this area's agents started (from the event trail)."""
    db = sqlite3.connect(area / ".megarun" / "work.db")
    try:
        rows = db.execute("SELECT data FROM event WHERE to_state = 'RUNNING'").fetchall()
    finally:
        db.close()
    return [json.loads(data)["pid"] for (data,) in rows if data]


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def completed_events(area: Path) -> dict[int, int]:
    db = sqlite3.connect(area / ".megarun" / "work.db")
    try:
        rows = db.execute("SELECT job, count(*) FROM event WHERE to_state = 'COMPLETED' "
                          "GROUP BY job").fetchall()
    finally:
        db.close()
    return dict(rows)


def test_launcher_kill_9_then_relaunch_counts_each_job_once(area: Path) -> None:
    add_app(area, "nap", "sleep 0.05")
    run_ok(area, "job", "create", "--app", "nap", "--count", "60")
    launcher = spawn_megarun(area, "launch", "--quiet")
    wait_for(lambda: 5 <= len(jobs(area, "--state", "COMPLETED")))
    launcher.kill()
    launcher.wait()
    result = megarun_process(area, "launch", "--json")
    assert result.returncode == 0, result.stderr
    listed = jobs(area)
    assert {(j["state"], j["status"]) for j in listed} == {("COMPLETED", "PASS")}
    assert completed_events(area) == {j["id"]: 1 for j in listed}
    assert all(job(area, i)["runs"] == 1 for i in (1, 30, 60))


def test_launcher_and_agent_kill_9_recovers_orphans(area: Path) -> None:
    add_app(area, "nap", "sleep 1", "--retries", "1")
    run_ok(area, "job", "create", "--app", "nap", "--count", "6")
    launcher = spawn_megarun(area, "launch", "--quiet")
    wait_for(lambda: len(jobs(area, "--state", "RUNNING")) >= 1)
    beats = list((area / ".megarun" / "sites" / "local" / "spool" / "agents").glob("*.json"))
    agent_pid = json.loads(beats[0].read_text())["pid"]
    launcher.kill()
    os.kill(agent_pid, signal.SIGKILL)
    launcher.wait()
    result = megarun_process(area, "launch", "--json")
    assert result.returncode == 0, result.stderr
    listed = jobs(area)
    assert {(j["state"], j["status"]) for j in listed} == {("COMPLETED", "PASS")}
    assert completed_events(area) == {j["id"]: 1 for j in listed}
    dead = [i for i in range(1, 7) if "DEAD" in [e["to"] for e in job(area, i)["events"]]]
    assert dead, "the jobs running when the agent died were marked DEAD and retried"


def test_second_launcher_is_refused(area: Path, tmp_path: Path) -> None:
    release = tmp_path / "release"  # the job runs until the test has seen the refusal
    add_app(area, "hold", f"sh -c 'while [ ! -e {release} ]; do sleep 0.05; done'")
    run_ok(area, "job", "create", "--app", "hold")
    first = spawn_megarun(area, "launch", "--quiet")
    try:
        wait_for(lambda: len(jobs(area, "--state", "RUNNING")) == 1)
        second = megarun_process(area, "launch")
        assert second.returncode == 3
        assert "already running" in second.stderr
    finally:
        release.touch()
        first.wait(timeout=30)


def test_detach_returns_and_finishes(area: Path) -> None:
    add_app(area, "nap", "sleep 0.3")
    run_ok(area, "job", "create", "--app", "nap", "--count", "3")
    started = time.monotonic()
    result = run_ok(area, "launch", "--detach", "--json")
    assert time.monotonic() - started < 5
    info = json.loads(result.stdout)
    wait_for(lambda: {j["state"] for j in jobs(area)} == {"COMPLETED"})
    assert Path(info["log"]).exists()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    mount = tmp_path / "tiny"
    mount.mkdir()
    # mode 0700: megarun refuses a jobs folder others may write (a tmpfs root is 1777)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs",
                           str(mount)],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"DISK-FULL TEST NOT RUN: cannot mount a tmpfs here ({made.stderr.strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_fails_the_job_clearly_and_keeps_the_database(area: Path, tiny_disk: Path) -> None:
    workdir = area / "tiny-site"
    run_ok(area, "site", "add", "tiny", "--preset", "local", "--workdir", str(workdir))
    (workdir / "jobs").rmdir()
    (workdir / "jobs").symlink_to(tiny_disk)  # job dirs and logs on the tiny disk, spool not
    add_app(area, "flood", "head -c 1000000 /dev/zero")
    add_app(area, "ok", "echo fine")
    run_ok(area, "job", "create", "--app", "flood", "--site", "tiny")
    run_ok(area, "job", "create", "--app", "ok", "--site", "tiny", "--count", "3")
    result = megarun_process(area, "launch", "--site", "tiny", "--json")
    assert result.returncode == 1
    flooded = job(area, 1)
    assert flooded["status"] == "FAIL"
    assert "no space left" in flooded["message"].lower()
    db = sqlite3.connect(area / ".megarun" / "work.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    assert len(jobs(area)) == 4

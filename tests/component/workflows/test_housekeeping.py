"""Housekeeping: ended agents' spool files are removed once ingested, by the launcher's cycle
and by sync; never an event lost or applied twice, even after a kill -9 in the middle."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.conftest import megarun_process

#: Every job of these tests goes CREATED->READY->QUEUED->LAUNCHED->RUNNING->COMPLETED.
EVENTS_PER_JOB = 5


def run_ok(area: Path, *args: str, env: dict[str, str] | None = None) -> \
        subprocess.CompletedProcess[str]:
    result = megarun_process(area, *args, env=env)
    assert result.returncode == 0, result.stderr
    return result


def site_files(area: Path) -> list[str]:
    """Files the local site keeps beside the job dirs (the users' own output)."""
    root = area / ".megarun" / "sites" / "local"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.relative_to(root).parts[0] != "jobs")


def events_per_job(area: Path) -> dict[int, int]:
    db = sqlite3.connect(area / ".megarun" / "work.db")
    try:
        return dict(db.execute("SELECT job, count(*) FROM event GROUP BY job").fetchall())
    finally:
        db.close()


def settle(area: Path, timeout: float = 30.0) -> list[str]:
    """Sync until only the lasting files are left (the last agent may still be exiting)."""
    lasting = ["logs/ended-agents.log", "spool/control/stop/all"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_ok(area, "sync")
        if site_files(area) == lasting:
            return lasting
        time.sleep(0.2)
    raise AssertionError(f"files left after sync: {site_files(area)}")


def launch_one_job_each(area: Path, launches: int) -> list[int]:
    run_ok(area, "app", "add", "hi", "--command", "echo hi")
    most = 0
    for _ in range(launches):
        run_ok(area, "job", "create", "--app", "hi")
        run_ok(area, "launch", "--quiet")
        most = max(most, len(site_files(area)))
    return [most]


def test_many_launches_leave_a_bounded_number_of_files(area: Path) -> None:
    launches = 12  # old code: 3 files per launch (36); now a constant
    [most] = launch_one_job_each(area, launches)
    # The launcher's own cycle tidies the agents before it: at any time the files are the
    # lasting two plus the last agent's event log, heartbeat and log (36 without housekeeping).
    assert most <= 5, site_files(area)
    settle(area)
    assert events_per_job(area) == {job: EVENTS_PER_JOB for job in range(1, launches + 1)}
    listed = json.loads(run_ok(area, "job", "ls", "--json").stdout)
    assert {(j["state"], j["status"]) for j in listed} == {("COMPLETED", "PASS")}
    folded = (area / ".megarun/sites/local/logs/ended-agents.log").read_text()
    assert folded.count("==> agent ") == launches  # each agent's log kept, once, in one file


def test_a_log_that_comes_back_is_never_applied_twice(area: Path) -> None:
    launch_one_job_each(area, 2)
    wait_for_agents_to_exit(area)
    events = area / ".megarun/sites/local/spool/events"
    saved = {p.name: p.read_bytes() for p in events.glob("*.jsonl")}
    assert saved  # the last agent's log, not yet tidied
    settle(area)
    before = events_per_job(area)
    assert before == {1: EVENTS_PER_JOB, 2: EVENTS_PER_JOB}
    for name, data in saved.items():  # e.g. a backup restored over the spool
        (events / name).write_bytes(data)
    settle(area)
    assert events_per_job(area) == before
    # Even with its offset lost, a log is read again as duplicates: the last sequence number
    # of each agent stays in the database.
    db = sqlite3.connect(area / ".megarun" / "work.db")
    with db:
        db.execute("UPDATE agent SET events_offset = 0")
    db.close()
    for name, data in saved.items():
        (events / name).write_bytes(data)
    settle(area)
    assert events_per_job(area) == before


def test_kill_9_while_tidying_loses_and_repeats_nothing(area: Path) -> None:
    run_ok(area, "app", "add", "hi", "--command", "echo hi")
    for _ in range(3):
        run_ok(area, "job", "create", "--app", "hi")
        run_ok(area, "launch", "--quiet")
    wait_for_agents_to_exit(area)  # the last agent's files wait for the next cycle
    piled = site_files(area)
    crashed = megarun_process(area, "sync", env={"MEGARUN_FAULT": "housekeeping:after-event-log"})
    assert crashed.returncode == -9  # killed between removing an event log and the rest
    after_crash = site_files(area)
    assert len(after_crash) == len(piled) - 1  # exactly one event log went
    assert events_per_job(area) == {1: EVENTS_PER_JOB, 2: EVENTS_PER_JOB, 3: EVENTS_PER_JOB}
    settle(area)
    assert events_per_job(area) == {1: EVENTS_PER_JOB, 2: EVENTS_PER_JOB, 3: EVENTS_PER_JOB}
    listed = json.loads(run_ok(area, "job", "ls", "--json").stdout)
    assert [(j["state"], j["status"]) for j in listed] == [("COMPLETED", "PASS")] * 3


def wait_for_agents_to_exit(area: Path, timeout: float = 30.0) -> None:
    beats = area / ".megarun/sites/local/spool/agents"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [json.loads(p.read_text()).get("state") for p in beats.glob("*.json")]
        if states and all(s == "exited" for s in states):
            return
        time.sleep(0.1)
    raise AssertionError("agents did not exit")


def test_clean_removes_the_folders_it_emptied(area: Path) -> None:
    suite = area / "tests" / "t1"
    suite.mkdir(parents=True)
    (suite / "test.toml").write_text('steps = ["echo x"]\n[items]\nN = [1, 2]\n')
    for runname in ("r1", "r2"):
        run_ok(area, "run", "--target", "linux/x86", "--runname", runname, "--quiet")
    runs = area / "runs"
    x86 = runs / "linux" / "x86"
    notes = x86 / "r2" / "notes.txt"  # not megarun's: it stays, and so do its folders
    notes.write_text("mine\n")
    run_ok(area, "clean", "--target", "linux/x86", "--runname", "r2", "--keep-records")
    assert sorted(p.name for p in (x86 / "r2").iterdir()) == ["notes.txt"]  # t1/ emptied: gone
    run_ok(area, "clean", "--target", "linux/x86", "--runname", "r1")
    assert sorted(p.name for p in x86.iterdir()) == ["r2"]  # r1 emptied: gone; r2 kept
    notes.unlink()
    run_ok(area, "clean", "--target", "linux/x86", "--runname", "r2")
    assert runs.is_dir() and list(runs.iterdir()) == []  # up to the run root, never above

"""Agent safety end to end: no two attempts of a job overlap after the agent is killed -9, a
job that ended before its agent died keeps its real outcome, a bad job spec fails only its job,
and an agent that keeps dying ends `launch` (exit code 3) instead of being restarted for ever."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.component.workflows.test_launch import add_app, job, jobs, run_ok, wait_for
from tests.conftest import REPO, megarun_process


def spawn_launch(area: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "megarun", "--area", str(area), "launch",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=full_env)


def running_agent_pid(area: Path) -> int:
    folder = area / ".megarun" / "sites" / "local" / "spool" / "agents"
    for path in folder.glob("*.json"):
        beat = json.loads(path.read_text())
        if beat.get("state") == "running" and Path(f"/proc/{beat['pid']}").exists():
            return int(beat["pid"])
    raise AssertionError("no running agent")


def attempt_lines(log: Path) -> list[tuple[str, int, float]]:
    lines = []
    for line in log.read_text().splitlines():
        kind, attempt, when = line.split()
        lines.append((kind, int(attempt), float(when)))
    return lines


def test_a_retry_starts_only_after_the_killed_agents_attempt_is_gone(
        area: Path, tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    script = tmp_path / "work.sh"
    script.write_text(f'echo "start $MEGARUN_ATTEMPT $(date +%s.%N)" >> {log}\n'
                      "sleep 4\n"
                      f'echo "end $MEGARUN_ATTEMPT $(date +%s.%N)" >> {log}\n')
    add_app(area, "work", f"sh {script}", "--retries", "1")
    run_ok(area, "job", "create", "--app", "work")
    launcher = spawn_launch(area)
    wait_for(lambda: log.exists() and "start 1 " in log.read_text())
    agent = running_agent_pid(area)
    os.kill(agent, signal.SIGKILL)
    killed_at = time.time()
    out, err = launcher.communicate(timeout=90)
    assert launcher.returncode == 0, err
    lines = attempt_lines(log)
    starts = {attempt: when for kind, attempt, when in lines if kind == "start"}
    ends = {attempt: when for kind, attempt, when in lines if kind == "end"}
    # Attempt 2 started after the kill and slept as long as attempt 1 would have: by its end,
    # a surviving attempt 1 would have written its own.
    assert ends[2] > starts[1] + 4, lines
    assert set(starts) == {1, 2} and set(ends) == {2}, lines  # attempt 1 died with its agent
    assert starts[2] > killed_at  # and attempt 2 began only after that
    shown = job(area, 1)
    assert (shown["state"], shown["status"]) == ("COMPLETED", "PASS")
    assert [e["to"] for e in shown["events"]].count("DEAD") == 1
    assert json.loads(out)["agent_restarts"] == 1


def test_a_job_that_ended_before_its_agent_was_killed_keeps_its_outcome(area: Path) -> None:
    # The agent is SIGKILLed right after it wrote megarun.exit, before the `finished` event.
    add_app(area, "ok", "true")
    add_app(area, "bad", "false", "--retries", "1")
    faulty = {"MEGARUN_FAULT": "agent:after-exit-file"}
    run_ok(area, "job", "create", "--app", "ok")
    first = megarun_process(area, "launch", "--json", env=faulty, timeout=90)
    assert first.returncode == 0, first.stderr
    run_ok(area, "job", "create", "--app", "bad")
    second = megarun_process(area, "launch", "--json", env=faulty, timeout=90)
    assert second.returncode == 1, second.stderr
    passed, failed = job(area, 1), job(area, 2)
    assert (passed["state"], passed["status"], passed["exit_code"]) == ("COMPLETED", "PASS", 0)
    assert (failed["state"], failed["status"], failed["exit_code"]) == ("COMPLETED", "FAIL", 1)
    assert failed["runs"] == 2  # each attempt counted: the retry ran, then it failed for good
    for shown in (passed, failed):
        assert "DEAD" not in [e["to"] for e in shown["events"]]
        assert "megarun.exit" in shown["message"]


def test_a_job_spec_with_a_nul_byte_fails_that_job_only(area: Path) -> None:
    add_app(area, "hello", "echo hello")
    run_ok(area, "job", "create", "--app", "hello", "--count", "3")
    db = sqlite3.connect(area / ".megarun" / "work.db")
    try:  # past every check at creation, as a damaged database or bundle would hand it over
        db.execute("UPDATE job SET env = ? WHERE id = 2", (json.dumps({"BAD": "a\0b"}),))
        db.commit()
    finally:
        db.close()
    result = megarun_process(area, "launch", "--json", timeout=90)
    assert result.returncode == 1, result.stderr
    by_id = {j["id"]: j for j in jobs(area)}
    assert {i: (j["state"], j["status"]) for i, j in by_id.items()} == {
        1: ("COMPLETED", "PASS"), 2: ("COMPLETED", "FAIL"), 3: ("COMPLETED", "PASS")}
    assert "NUL byte" in job(area, 2)["message"]
    assert json.loads(result.stdout)["agent_restarts"] == 0


def test_an_agent_that_always_dies_at_start_ends_the_launch(area: Path) -> None:
    add_app(area, "hello", "echo hello")
    run_ok(area, "job", "create", "--app", "hello")
    started = time.monotonic()
    result = megarun_process(area, "launch", env={"MEGARUN_FAULT": "agent:start"}, timeout=120)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    message = next(line for line in lines if "agent died" in line)
    assert "site 'local': the agent died 6 times" in message
    assert "logs/agent-" in message
    assert time.monotonic() - started < 60
    assert [j["state"] for j in jobs(area)] == ["QUEUED"]  # kept for the next launch
    agents = list((area / ".megarun" / "sites" / "local" / "logs").glob("agent-*.log"))
    assert len(agents) == 6  # the first start and five restarts, then no more

"""Defunct detection: a job whose agent is gone becomes DEAD at the next run/status/sync;
a slow but living agent is never declared dead; sync is safe to start twice."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from filelock import FileLock

from tests.component.workflows.test_launch import add_app, jobs, run_ok, wait_for
from tests.conftest import megarun_process, spawn_megarun


def agent_pid(area: Path) -> int:
    beats = list((area / ".megarun" / "sites" / "local" / "spool" / "agents").glob("*.json"))
    assert len(beats) == 1
    return int(json.loads(beats[0].read_text())["pid"])


def fast_heartbeats(area: Path) -> None:
    config = area / "megarun.toml"
    text = config.read_text().replace("heartbeat = 5", "heartbeat = 0.2")
    config.write_text(text.replace("dead_after = 60", "dead_after = 1"))


def test_sync_marks_the_jobs_of_a_killed_agent_dead(area: Path) -> None:
    add_app(area, "nap", "sleep 30")
    run_ok(area, "job", "create", "--app", "nap", "--count", "2")
    launcher = spawn_megarun(area, "launch", "--quiet")
    wait_for(lambda: len(jobs(area, "--state", "RUNNING")) == 2)
    pid = agent_pid(area)
    launcher.kill()  # nothing else watches the agent any more
    launcher.wait()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or
             Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z")
    result = megarun_process(area, "sync", "--json")
    assert result.returncode == 0, result.stderr
    [local] = json.loads(result.stdout)
    assert local["site"] == "local" and local["ok"] and len(local["agents_settled"]) == 1
    assert {(j["state"], j["status"]) for j in jobs(area)} == {("DEAD", "DEAD")}
    again = json.loads(run_ok(area, "sync", "--json").stdout)
    assert again[0]["agents_settled"] == []  # settled once, never twice


def test_a_slow_but_living_agent_is_never_declared_dead(area: Path) -> None:
    fast_heartbeats(area)
    add_app(area, "nap", "sleep 1")
    run_ok(area, "job", "create", "--app", "nap")
    launcher = spawn_megarun(area, "launch", "--quiet", "--json")
    wait_for(lambda: len(jobs(area, "--state", "RUNNING")) == 1)
    pid = agent_pid(area)
    os.kill(pid, signal.SIGSTOP)  # no heartbeat for far longer than dead_after
    try:
        time.sleep(2.5)
        for command in (("sync",), ("job", "ls")):
            run_ok(area, *command)
        assert [j["state"] for j in jobs(area)] == ["RUNNING"]
    finally:
        os.kill(pid, signal.SIGCONT)
    _out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, err
    assert {(j["state"], j["status"]) for j in jobs(area)} == {("COMPLETED", "PASS")}


def test_a_second_sync_returns_at_once(area: Path) -> None:
    run_ok(area, "site", "add", "here", "--preset", "local")
    run_ok(area, "sync")  # makes the lock folder
    with FileLock(str(area / ".megarun" / "locks" / "sync.lock")):
        started = time.monotonic()
        result = megarun_process(area, "sync")
        assert result.returncode == 0, result.stderr
        assert "another megarun sync is running" in result.stderr
        assert time.monotonic() - started < 10
    assert "here" in run_ok(area, "sync").stdout  # once free, sync works again


def test_sync_of_an_unknown_site_is_a_clear_error(area: Path) -> None:
    result = megarun_process(area, "sync", "--site", "nosuch")
    assert result.returncode == 2 and "unknown site 'nosuch'" in result.stderr

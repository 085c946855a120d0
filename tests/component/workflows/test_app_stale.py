"""Plain jobs go STALE when their app changes; `job reset` reruns the app as it is now.

Real areas, the real CLI, real SQLite and, for the rerun, a real local launch.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import megarun_process, spawn_megarun


def ok(area: Path, *args: str) -> str:
    result = megarun_process(area, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def jobs(area: Path, *args: str) -> dict[int, dict[str, Any]]:
    listed = json.loads(ok(area, "job", "ls", "--json", "--limit", "0", *args))
    return {int(j["id"]): j for j in listed}


def show(area: Path, job_id: int) -> dict[str, Any]:
    return dict(json.loads(ok(area, "job", "show", str(job_id), "--json")))


def db(area: Path) -> sqlite3.Connection:
    return sqlite3.connect(area / ".megarun" / "work.db")


def completed_and_waiting(area: Path) -> None:
    """Jobs 1-2 COMPLETED (run for real), job 3 READY, job 4 AWAITING_PARENTS (after 3)."""
    ok(area, "app", "add", "say", "--command", "echo old {{ msg }}", "--param", "msg=hi")
    ok(area, "job", "create", "--app", "say", "--count", "2")
    ok(area, "launch")
    ok(area, "job", "create", "--app", "say", "-p", "msg=later")
    ok(area, "job", "create", "--app", "say", "--after", "3")
    states = {i: j["state"] for i, j in jobs(area).items()}
    assert states == {1: "COMPLETED", 2: "COMPLETED", 3: "READY", 4: "AWAITING_PARENTS"}


def test_replace_with_a_changed_command_marks_completed_jobs_stale(area: Path) -> None:
    completed_and_waiting(area)
    out = ok(area, "app", "add", "say", "--command", "echo new {{ msg }}", "--param", "msg=hi",
             "--replace")
    assert "2 COMPLETED job(s) of the app are now STALE" in out
    listed = jobs(area)
    assert {i: (j["state"], j["status"]) for i, j in listed.items()} == {
        1: ("STALE", "PASS"), 2: ("STALE", "PASS"), 3: ("READY", "n/a"),
        4: ("AWAITING_PARENTS", "n/a")}
    assert listed[1]["message"] == "app 'say' changed"
    assert sorted(jobs(area, "--state", "STALE")) == [1, 2]
    last = show(area, 1)["events"][-1]
    assert (last["from"], last["to"], last["status"], last["message"]) == (
        "COMPLETED", "STALE", "PASS", "app 'say' changed")
    # the ended jobs keep the command that ran; the waiting ones run the new definition
    assert show(area, 1)["command"] == "echo old hi"
    assert show(area, 3)["command"] == "echo new later"
    assert show(area, 4)["command"] == "echo new hi"


def test_the_same_definition_saved_again_changes_nothing(area: Path) -> None:
    completed_and_waiting(area)
    with db(area) as conn:
        events = conn.execute("SELECT count(*) FROM event").fetchone()[0]
    # the same definition, and a description (which defines no result)
    out = ok(area, "app", "add", "say", "--command", "echo old {{ msg }}", "--param", "msg=hi",
             "--replace")
    assert out.strip() == "app 'say' unchanged"
    ok(area, "app", "add", "say", "--command", "echo old {{ msg }}", "--param", "msg=hi",
       "--description", "says things", "--replace")
    assert {j["state"] for i, j in jobs(area).items() if i <= 2} == {"COMPLETED"}
    with db(area) as conn:
        assert conn.execute("SELECT count(*) FROM event").fetchone()[0] == events


def test_app_sync_of_a_changed_file_marks_stale(area: Path) -> None:
    apps = area / "apps"
    apps.mkdir(exist_ok=True)
    (apps / "sim.toml").write_text('command = "echo one {{ n }}"\n[params]\nn = "1"\n')
    ok(area, "app", "sync")
    ok(area, "job", "create", "--app", "sim", "--count", "3")
    ok(area, "launch")
    first = {row["name"]: row for row in json.loads(ok(area, "app", "sync", "--json"))}
    assert first["sim"] == {"name": "sim", "source": str(apps / "sim.toml"),
                            "result": "unchanged", "stale": 0}
    assert {j["state"] for j in jobs(area).values()} == {"COMPLETED"}
    (apps / "sim.toml").write_text('command = "echo two {{ n }}"\n[params]\nn = "1"\n')
    second = {row["name"]: row for row in json.loads(ok(area, "app", "sync", "--json"))}
    assert (second["sim"]["result"], second["sim"]["stale"]) == ("updated", 3)
    assert {j["state"] for j in jobs(area).values()} == {"STALE"}


def test_a_changed_env_is_a_changed_definition(area: Path) -> None:
    apps = area / "apps"
    apps.mkdir(exist_ok=True)
    (apps / "e.toml").write_text('command = "echo $LEVEL"\n[env]\nLEVEL = "1"\n')
    ok(area, "app", "sync")
    ok(area, "job", "create", "--app", "e")
    ok(area, "launch")
    (apps / "e.toml").write_text('command = "echo $LEVEL"\n[env]\nLEVEL = "2"\n')
    ok(area, "app", "sync")
    assert jobs(area)[1]["state"] == "STALE"
    ok(area, "job", "reset", "1")
    assert show(area, 1)["env"] == {"LEVEL": "2"}
    ok(area, "launch")
    workdir = Path(show(area, 1)["workdir"])
    assert (workdir / "job.out").read_text() == "2\n"


def test_launch_never_dispatches_stale_jobs_and_reset_reruns_the_new_command(area: Path) -> None:
    completed_and_waiting(area)
    ok(area, "app", "add", "say", "--command", "echo new {{ msg }}", "--param", "msg=hi",
       "--replace")
    ok(area, "launch")
    listed = jobs(area)
    assert {i: j["state"] for i, j in listed.items()} == {
        1: "STALE", 2: "STALE", 3: "COMPLETED", 4: "COMPLETED"}
    assert (Path(show(area, 3)["workdir"]) / "job.out").read_text() == "new later\n"
    assert (Path(show(area, 1)["workdir"]) / "job.out").read_text() == "old hi\n"
    out = ok(area, "job", "reset", "1")
    assert "reset 1 job(s)" in out
    assert show(area, 1)["command"] == "echo new hi"
    ok(area, "launch")
    after = show(area, 1)
    assert (after["state"], after["status"]) == ("COMPLETED", "PASS")
    assert (Path(after["workdir"]) / "job.out").read_text() == "new hi\n"
    assert jobs(area)[2]["state"] == "STALE"  # not reset: still STALE, never run again


def test_reset_refuses_a_job_the_new_app_cannot_render(area: Path) -> None:
    completed_and_waiting(area)
    ok(area, "job", "kill", "3", "4")  # nothing waiting: the change itself is accepted
    ok(area, "app", "add", "say", "--command", "echo {{ msg }} {{ level }}", "--param", "msg=hi",
       "--param", "level", "--replace")
    with db(area) as conn:
        before = conn.execute("SELECT id, state, command, params, max_attempts FROM job "
                              "ORDER BY id").fetchall()
        events = conn.execute("SELECT count(*) FROM event").fetchone()[0]
    result = megarun_process(area, "job", "reset", "2", "1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "job 1: app 'say' now needs parameter 'level'" in lines[0]
    with db(area) as conn:
        assert conn.execute("SELECT id, state, command, params, max_attempts FROM job "
                            "ORDER BY id").fetchall() == before
        assert conn.execute("SELECT count(*) FROM event").fetchone()[0] == events


def test_reset_refuses_a_template_error_naming_the_job(area: Path) -> None:
    ok(area, "app", "add", "div", "--command", "echo {{ n }}", "--param", "n=4")
    ok(area, "job", "create", "--app", "div")
    ok(area, "launch")
    ok(area, "app", "add", "div", "--command", "echo {{ 10 // (n | int - 4) }}", "--param",
       "n=4", "--replace")
    result = megarun_process(area, "job", "reset", "1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("megarun: error: job 1: app 'div': command template:")
    assert "ZeroDivisionError" in result.stderr
    assert jobs(area)[1]["state"] == "STALE"


def test_a_change_a_waiting_job_cannot_render_is_refused(area: Path) -> None:
    completed_and_waiting(area)
    result = megarun_process(area, "app", "add", "say", "--command", "echo {{ level }}",
                             "--param", "level", "--replace")
    assert result.returncode == 2, result.stderr
    assert "job 3: app 'say' now needs parameter 'level'" in result.stderr
    assert show(area, 3)["command"] == "echo old later"
    assert {j["state"] for i, j in jobs(area).items() if i <= 2} == {"COMPLETED"}
    assert json.loads(ok(area, "app", "show", "say", "--json"))["command"] == "echo old {{ msg }}"


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_a_job_running_when_its_app_changes_ends_stale(area: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wait = "while [ ! -e {{ gate }} ]; do sleep 0.05; done"
    ok(area, "app", "add", "slow", "--command", f"sh -c '{wait}; echo old'",
       "--param", f"gate={gate}")
    ok(area, "job", "create", "--app", "slow", "--count", "2")
    launcher = spawn_megarun(area, "launch", "--quiet")
    try:
        wait_for(lambda: sorted(jobs(area, "--state", "RUNNING")) == [1, 2])
        out = ok(area, "app", "add", "slow", "--command", f"sh -c '{wait}; echo new'",
                 "--param", f"gate={gate}", "--replace")
        assert "STALE" not in out  # nothing had completed: the running jobs are not marked
        assert {j["state"] for j in jobs(area).values()} == {"RUNNING"}
        gate.touch()
        launcher.wait(timeout=60)
    finally:
        launcher.kill()
    for job_id in (1, 2):
        shown = show(area, job_id)
        assert (shown["state"], shown["status"]) == ("STALE", "PASS")
        assert shown["message"] == "app 'slow' changed while it ran"
        assert [e["to"] for e in shown["events"]][-2:] == ["COMPLETED", "STALE"]
        assert (Path(shown["workdir"]) / "job.out").read_text() == "old\n"
    with db(area) as conn:
        assert conn.execute("SELECT count(*) FROM app_change_due").fetchone() == (0,)
    ok(area, "job", "reset", "1")
    ok(area, "launch")
    assert (Path(show(area, 1)["workdir"]) / "job.out").read_text() == "new\n"
    assert show(area, 1)["state"] == "COMPLETED"

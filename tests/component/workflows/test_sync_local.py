"""`sync` serves the local site with real processes: it dispatches READY jobs and starts one
detached agent that outlives it and leaves when idle; two syncs, a sync beside a starting agent,
or a sync beside a launch never make two agents; a kill -9 of the sync or of its agent at each
step loses no job and runs none twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from megarun.config.area import locate_area
from megarun.engine.cycle import SiteKind
from megarun.engine.scope import AreaScope
from megarun.engine.site_kinds import LocalCycle, build_cycle
from megarun.homehost import home as homehost
from megarun.homehost.context import Context
from megarun.sites.registry import ensure_default_site, site_id
from tests.component.workflows.test_agent_safety import spawn_launch
from tests.component.workflows.test_launch import add_app, jobs, run_ok, wait_for
from tests.conftest import megarun_process, spawn_megarun

#: Jobs of these tests: each waits for the file `go` (when told to), then writes its id to
#: `ran`, so that a test sees the agent hold them and counts how often each ran.
WORK = """while [ -n "$WAIT" ] && [ ! -e {go} ]; do sleep 0.05; done
echo "$MEGARUN_JOB_ID" >> {ran}
"""


def running_agents(area: Path) -> list[int]:
    """The pids of the agents of the area's local site running now (their heartbeats')."""
    folder = area / ".megarun" / "sites" / "local" / "spool" / "agents"
    pids = []
    for path in folder.glob("*.json"):
        beat = json.loads(path.read_text())
        if beat.get("state") == "running" and Path(f"/proc/{beat['pid']}").exists():
            pids.append(int(beat["pid"]))
    return pids


class Site:
    """The area's local site with jobs of the app `work`, and what the test looks at."""

    def __init__(self, area: Path, tmp_path: Path) -> None:
        self.area = area
        self.go = tmp_path / "go"
        self.ran = tmp_path / "ran"
        script = tmp_path / "work.sh"
        script.write_text(WORK.format(go=self.go, ran=self.ran))
        add_app(area, "work", f"sh {script}", "--retries", "1")
        add_app(area, "held", f"env WAIT=1 sh {script}", "--retries", "1")

    def create(self, count: int, wait: bool = False) -> None:
        """`count` jobs; with `wait`, they wait for the file `go`."""
        run_ok(self.area, "job", "create", "--app", "held" if wait else "work", "--count",
               str(count))

    def agents(self) -> list[int]:
        return running_agents(self.area)

    def agents_ever(self) -> int:
        """How many agents ever ran on the site (their rows: the logs of ended ones go)."""
        with sqlite3.connect(homehost.working_db_path(locate_area(str(self.area)))) as db:
            return int(db.execute("SELECT count(*) FROM agent").fetchone()[0])

    def sync(self, *, env: dict[str, str] | None = None) -> dict[str, Any]:
        done = megarun_process(self.area, "sync", "--json", env=env)
        assert done.returncode == 0, done.stderr
        [row] = json.loads(done.stdout)
        return dict(row)

    def ran_ids(self) -> list[int]:
        return sorted(int(n) for n in self.ran.read_text().split()) if self.ran.exists() else []

    def create_chain(self, count: int) -> None:
        """`count` jobs, each after the one before: one at a time, so that an agent killed
        after a job's end holds no other job whose end it never saw (that one would run
        again, as its outcome is unknown)."""
        self.create(1)
        for parent in range(1, count):
            run_ok(self.area, "job", "create", "--app", "work", "--after", str(parent))

    def running(self) -> bool:
        """Whether one of the jobs runs (as many as the cpus do at once)."""
        return any(j["state"] == "RUNNING" for j in jobs(self.area))

    def settled(self, count: int) -> bool:
        return [(j["state"], j["status"]) for j in jobs(self.area)] == [
            ("COMPLETED", "PASS")] * count

    def sync_until_done(self, count: int, timeout: float = 60) -> None:
        """Plain syncs, as cron would run them, until every job passed; never two agents."""
        deadline = time.monotonic() + timeout
        while not self.settled(count):
            assert time.monotonic() < deadline, jobs(self.area)
            assert len(self.agents()) <= 1
            self.sync()
            time.sleep(0.2)  # the pace of the loop, not a wait for a condition
        wait_for(lambda: not self.agents(), 30)  # idle, the agent leaves


@pytest.fixture
def site(area: Path, tmp_path: Path) -> Iterator[Site]:
    """The site; after the test (failed or not) its jobs are let go and no agent stays."""
    here = Site(area, tmp_path)
    yield here
    here.go.touch()
    deadline = time.monotonic() + 30
    while here.agents() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in here.agents():  # a stuck one: stopped, it kills its jobs
        os.kill(pid, signal.SIGTERM)


def test_sync_dispatches_and_starts_an_agent_that_outlives_it(site: Site) -> None:
    site.create(5, wait=True)
    first = site.sync()
    assert (first["dispatched"], first["left_to_launcher"], first["ok"]) == (5, False, True)
    assert first["started_agent"]
    wait_for(lambda: len(site.agents()) == 1)  # the sync has exited; its agent runs on
    [agent] = site.agents()
    again = site.sync()  # the agent serves the site: no second one, nothing left to dispatch
    assert (again["dispatched"], again["started_agent"]) == (0, "")
    site.go.touch()
    wait_for(lambda: not Path(f"/proc/{agent}").exists(), 30)  # idle, it left by itself
    last = site.sync()
    assert last["finished"] == {"PASS": 5} and last["started_agent"] == ""
    assert site.settled(5) and site.ran_ids() == [1, 2, 3, 4, 5]
    assert site.agents_ever() == 1


def test_an_agent_that_has_not_beaten_yet_holds_the_site(ctx: Context, site: Site,
                                                        tmp_path: Path) -> None:
    """The agent lock, not its heartbeat, keeps a second agent out: the first agent is
    stopped before it could write a heartbeat, and the next pass starts none."""
    site.create(2, wait=True)
    info = ensure_default_site(ctx)
    scope = AreaScope(ctx.db, ctx.area, tmp_path / "runs").on(info, site_id(ctx, info.name))
    first = build_cycle(scope, SiteKind.LOCAL)
    assert isinstance(first, LocalCycle)
    report = first.sync_pass(dispatch=True)
    assert first.process is not None and report.started_agent
    os.kill(first.process.pid, signal.SIGSTOP)  # still starting: no heartbeat yet
    try:
        assert site.agents() == []
        second = build_cycle(scope, SiteKind.LOCAL).sync_pass(dispatch=True)
        assert second.started_agent == "" and second.ok
    finally:
        os.kill(first.process.pid, signal.SIGCONT)
    site.go.touch()
    first.process.wait(timeout=30)  # it ran both jobs and left when idle
    site.sync_until_done(2)
    assert site.ran_ids() == [1, 2] and site.agents_ever() == 1


def test_two_syncs_at_once_start_one_agent(site: Site) -> None:
    site.create(4, wait=True)
    procs = [spawn_megarun(site.area, "sync", "--json") for _ in range(3)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    started = []
    for out, _ in outputs:
        document = json.loads(out)
        if isinstance(document, dict):  # it found another sync at work
            assert "another megarun sync is running" in document["skipped"]
            continue
        started += [row["started_agent"] for row in document if row["started_agent"]]
    assert len(started) == 1, outputs
    wait_for(lambda: len(site.agents()) == 1)
    site.go.touch()
    site.sync_until_done(4)
    assert site.ran_ids() == [1, 2, 3, 4] and site.agents_ever() == 1


def test_sync_leaves_the_site_to_a_running_launch(site: Site) -> None:
    site.create(3, wait=True)
    launcher = spawn_launch(site.area)
    try:
        wait_for(lambda: len(site.agents()) == 1)
        row = site.sync()
        assert (row["left_to_launcher"], row["dispatched"], row["started_agent"]) == (
            True, 0, "")
    finally:
        site.go.touch()
        out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, err
    assert json.loads(out)["by_status"] == {"PASS": 3}
    assert site.ran_ids() == [1, 2, 3] and site.agents_ever() == 1


@pytest.mark.parametrize("fault", ["sync:after-dispatch", "sync:after-agent-lock",
                                   "sync:after-agent-start", "agent:start",
                                   "agent:after-exit-file"])
def test_a_kill_9_at_each_step_loses_nothing_and_runs_nothing_twice(site: Site,
                                                                   fault: str) -> None:
    site.create_chain(5)
    crashed = megarun_process(site.area, "sync", env={"MEGARUN_FAULT": fault})
    expected = -signal.SIGKILL if fault.startswith("sync:") else 0  # else its agent is killed
    assert crashed.returncode == expected, crashed.stderr
    site.sync_until_done(5)
    assert site.ran_ids() == [1, 2, 3, 4, 5]


def test_the_agent_killed_in_a_job_is_settled_and_the_job_runs_again_once(site: Site) -> None:
    site.create(3, wait=True)
    assert site.sync()["started_agent"]
    wait_for(lambda: bool(site.sync()) and site.running())  # each sync takes in their start
    [agent] = site.agents()
    os.kill(agent, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{agent}").exists())
    settling = site.sync()  # its running jobs' processes killed, they go DEAD and run again
    assert settling["agents_settled"] == [settling["agents_settled"][0]]
    assert settling["started_agent"]
    site.go.touch()
    site.sync_until_done(3)
    assert site.ran_ids() == [1, 2, 3]  # the killed attempts never ended; their retries did
    assert sorted(j["attempt"] for j in jobs(site.area)) in ([1, 2, 2], [2, 2, 2])


def test_a_detached_run_killed_9_is_finished_by_sync(site: Site) -> None:
    """`run --detach` runs its launcher in the background; killed -9 with the agent it
    started, plain syncs (cron) settle what they held and carry the run to its end."""
    config = site.area / "megarun.toml"
    config.write_text(config.read_text().replace("retries = 0", "retries = 1"))
    suite = site.area / "tests" / "t1"
    suite.mkdir(parents=True)
    (suite / "test.toml").write_text(
        f'steps = ["env WAIT=1 sh {site.go.parent / "work.sh"}"]\n[items]\nN = [1, 2, 3]\n')
    started = json.loads(run_ok(site.area, "run", "--target", "linux/x86", "--runname", "r1",
                                "--detach", "--json").stdout)
    wait_for(lambda: len(site.agents()) == 1 and site.running())
    [agent] = site.agents()
    for pid in (started["pid"], agent):
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists())
    settling = site.sync()  # the launcher's lock went with it: the site is sync's
    assert settling["agents_settled"] == [settling["agents_settled"][0]]
    assert settling["started_agent"] and not settling["left_to_launcher"]
    site.go.touch()
    site.sync_until_done(3)
    assert site.ran_ids() == [1, 2, 3] and site.agents_ever() == 2
    status = megarun_process(site.area, "status", "--target", "linux/x86", "--runname", "r1")
    assert status.returncode == 0, status.stderr

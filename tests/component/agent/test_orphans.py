"""A killed agent's jobs: found, killed and confirmed gone by the settler; ends it could not
report kept from megarun.exit; a bad job spec ends that job only. Real agents, real kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.component.agent.harness import Site, of, process_gone, wait_until
from tests.conftest import REPO


def settle(site: Site, agent_id: str = "a1") -> int:
    """Run the dead-agent settler under the site's Python, as the home host or exchange does."""
    code = ("import sys; from megarun.agent.orphans import settle_dead_agent; "
            "sys.exit(0 if settle_dead_agent(sys.argv[1], sys.argv[2]) else 1)")
    done = subprocess.run([site.python, "-c", code, str(site.workdir), agent_id],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          timeout=60, check=False)
    return done.returncode


def session_members(leader: int) -> list[int]:
    """Living processes whose session is `leader`'s (a step and everything it started)."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[3]) == leader and fields[0] not in "ZX":
            members.append(int(name))
    return members


@pytest.mark.parametrize("command, rc", [("true", 0), ("false", 1)])
def test_a_killed_agents_jobs_are_killed_and_an_ended_one_keeps_its_exit_code(
        site: Site, command: str, rc: int) -> None:
    # Job 1 runs on (with a child in the background); job 2 ends, the agent writes its
    # megarun.exit and is SIGKILLed right there, before its `finished` event is written.
    site.queue(site.job(1, "sh -c 'sleep 60 & sleep 60'"), site.job(2, command))
    agent = site.start(env={"MEGARUN_FAULT": "agent:after-exit-file"})
    agent.wait(timeout=30)
    assert agent.returncode == -signal.SIGKILL
    events = site.events()
    assert 2 not in of(events, "finished")  # the agent died before it could say
    leader = of(events, "started")[1]["pid"]
    assert session_members(leader), "job 1 outlived its agent, as a SIGKILLed agent leaves it"
    assert settle(site) == 0
    assert session_members(leader) == []
    assert process_gone(leader)
    finished = of(site.events(), "finished")
    assert set(finished) == {2}  # job 1 ended with the agent: the home host makes it DEAD
    assert finished[2]["reason"] == "exit" and finished[2]["rc"] == rc
    assert "megarun.exit" in finished[2]["message"]
    beat = site.heartbeat()
    assert beat["state"] == "dead" and beat["jobs_gone"] is True


def test_a_step_started_just_before_the_agent_died_is_found_by_its_environment(
        site: Site) -> None:
    # The agent dies before the `started` event of a step reaches the log: the step is found
    # through MEGARUN_JOB_ID / MEGARUN_ATTEMPT / MEGARUN_WORKDIR in its environment.
    site.queue(site.job(1, "sh -c 'sleep 60 & sleep 60'"))
    agent = site.start()
    wait_until(lambda: 1 in of(site.events(), "started"))
    leader = of(site.events(), "started")[1]["pid"]
    wait_until(lambda: len(session_members(leader)) >= 2)
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()
    log = site.spool / "events" / "a1.jsonl"
    kept = [line for line in log.read_text().splitlines()
            if json.loads(line)["ev"] != "started"]
    log.write_text("".join(line + "\n" for line in kept))
    assert session_members(leader)
    assert settle(site) == 0
    assert session_members(leader) == []
    assert of(site.events(), "finished") == {}  # never reported started: READY again, not DEAD


def test_without_posix_spawn_a_step_dies_with_its_agent(site: Site) -> None:
    # Pythons before 3.8 start steps through Popen, whose preexec hook sets the step's
    # parent-death signal: the step leader dies with the agent, before anyone settles it.
    probe = subprocess.run([site.python, "-c", "import os; print(hasattr(os, 'posix_spawn'))"],
                           capture_output=True, text=True, check=True)
    if probe.stdout.strip() == "True":
        pytest.skip("this Python starts steps with posix_spawn (no parent-death signal)")
    site.queue(site.job(1, "sleep 60"))
    agent = site.start()
    wait_until(lambda: 1 in of(site.events(), "started"))
    leader = of(site.events(), "started")[1]["pid"]
    assert not process_gone(leader)
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()
    wait_until(lambda: process_gone(leader), timeout=10)


def test_a_job_whose_spawn_fails_ends_alone_and_the_agent_goes_on(site: Site) -> None:
    good = site.job(1, "echo ok")
    bad = [
        site.job(2, "echo ok", env={"BAD": "a\0b"}),
        site.job(3, "echo a\0b"),
        site.job(4, "echo ok", workdir=str(site.job_dir(4)) + "\0x"),
        site.job(5, "echo ok", cpus="x"),
        site.job(6, "echo ok", env={"A=B": "c"}),
        site.job(7, "echo ok", steps="echo ok"),
    ]
    bundle = site.queue(good, *bad)
    with open(bundle, "ab") as handle:  # lines the home host never writes: not JSON at all
        handle.write(b'{"id":8,"attempt":1,"workdir":"/x","steps":[{"cmd":"\xff"}]}\n')
        handle.write(b'{"id":9,"attempt":1,"workdir":"/x","ste\n')
    site.queue(site.job(10, "echo ok"))
    events = site.run()
    finished = of(events, "finished")
    assert set(finished) == set(range(1, 11))
    assert finished[1]["rc"] == 0 and finished[10]["rc"] == 0
    for job_id in range(2, 10):
        assert finished[job_id]["reason"] == "error", finished[job_id]
        assert finished[job_id]["message"].startswith("bad job spec: ")
    assert "NUL byte" in finished[2]["message"] and "env value of BAD" in finished[2]["message"]
    assert "NUL byte" in finished[3]["message"] and "NUL byte" in finished[4]["message"]
    assert "cpus is not an integer" in finished[5]["message"]
    assert "not valid JSON" in finished[8]["message"]
    assert "not valid JSON" in finished[9]["message"]
    assert (site.job_dir(1) / "job.out").read_text() == "ok\n"


def test_an_agent_restarted_under_its_id_kills_what_its_earlier_life_left_running(
        site: Site) -> None:
    site.queue(site.job(1, "sh -c 'sleep 60 & sleep 60'"))
    agent = site.start()
    wait_until(lambda: 1 in of(site.events(), "started"))
    leader = of(site.events(), "started")[1]["pid"]
    wait_until(lambda: len(session_members(leader)) >= 2)
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()
    assert session_members(leader)
    finished = of(site.run(), "finished")  # the same agent id, as a restarted pilot has
    assert session_members(leader) == []
    assert finished[1]["reason"] == "error"
    assert finished[1]["message"] == "the agent restarted while the job ran"

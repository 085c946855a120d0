"""Pilots own what their agent uses, on the real Slurm over the real sshd: a pilot with a node
shape of one CPU gets one CPU and never runs two jobs at once; a default pilot gets the whole
node (--exclusive) and runs at most the node's CPUs at once; an agent in a one-CPU job counts
one CPU whatever --cpus says. Each job records its own start and end; `scontrol show job` says
what Slurm allocated; the agent's log says what it counted."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.component.agent.harness import Site
from tests.conftest import REPO
from tests.slurmd import SlurmCluster
from tests.sshd import SshServer
from tests.system.test_remote_jobs import jobs, new_area, ok

pytestmark = pytest.mark.slow

#: Each job writes "<start> <end>" (seconds) into its work dir, around a sleep that is long
#: next to the agent's start-up of a job, so jobs running at the same time surely overlap.
SPAN_APP = ('start=$(date +%s.%N); sleep {{ s }}; '
            'printf "%s %s\\n" "$start" "$(date +%s.%N)" > span.txt')


@pytest.fixture
def slurm_area(tmp_path: Path, sshd: SshServer, home: Path, known_hosts: Path,
               slurm: SlurmCluster) -> Path:
    """An area with the Slurm site `hpc` (generic-slurm: whole nodes) over the loopback sshd."""
    root = new_area(tmp_path)
    ok(root, home, "site", "add", "hpc", "--preset", "generic-slurm", "--host", sshd.spec,
       "--workdir", str(tmp_path / "hpc-work"), "--identity", str(sshd.client_key.path),
       "--known-hosts", str(known_hosts))
    return root


def spans(area: Path, home: Path) -> list[tuple[float, float]]:
    found = []
    for row in jobs(area, home):
        assert row["status"] == "PASS", row
        shown = json.loads(ok(area, home, "job", "show", str(row["id"]), "--json").stdout)
        start, end = Path(str(shown["workdir"]), "span.txt").read_text().split()
        found.append((float(start), float(end)))
    return found


def most_at_once(found: list[tuple[float, float]]) -> int:
    """The largest number of spans that overlap at one instant (an end before a start)."""
    edges = sorted([(s, 1) for s, _ in found] + [(e, -1) for _, e in found])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def agent_cpus(workdir: Path, batch_id: object) -> int:
    """The cpus the pilot's agent logged at its start (the batch job's output file)."""
    text = (workdir / "batch" / f"{batch_id}.out").read_text()
    match = re.search(r"started: 1 node\(s\) of (\d+) cpus", text)
    assert match, text
    return int(match.group(1))


def run_pilot(area: Path, home: Path, site: str, jobs_count: int,
              seconds: float) -> dict[str, object]:
    ok(area, home, "app", "add", "span", "--command", SPAN_APP, "--param", f"s={seconds:g}")
    ok(area, home, "job", "create", "--app", "span", "--site", site,
       "--count", str(jobs_count))
    # The pilot waits long enough for `launch` to hand it the jobs; it is cancelled after.
    [pilot] = json.loads(ok(area, home, "queue", "submit", "--site", site, "--nodes", "1",
                            "--walltime", "5", "--idle-exit", "60", "--json").stdout)
    assert pilot["state"] == "queued", pilot
    summary = json.loads(ok(area, home, "launch", "--site", site, "--json",
                            timeout=300).stdout)
    assert summary["by_status"] == {"PASS": jobs_count}, summary
    return dict(pilot)


def cancel(area: Path, home: Path, slurm: SlurmCluster, pilot: dict[str, object]) -> None:
    """Give the node back for the next test (the pilot would idle for a minute)."""
    ok(area, home, "queue", "rm", str(pilot["id"]))
    slurm.wait_gone(str(pilot["scheduler_id"]))


def test_a_pilot_with_a_one_cpu_shape_runs_one_job_at_a_time(
        slurm_area: Path, home: Path, tmp_path: Path, sshd: SshServer, known_hosts: Path,
        slurm: SlurmCluster) -> None:
    if slurm.cpus < 2:
        pytest.skip("the node has one CPU: a pilot could not run more than one job anyway")
    workdir = tmp_path / "shaped-work"
    ok(slurm_area, home, "site", "add", "shaped", "--preset", "generic-slurm", "--host",
       sshd.spec, "--workdir", str(workdir), "--identity", str(sshd.client_key.path),
       "--known-hosts", str(known_hosts),
       "--set", "pilot.exclusive=false", "--set", "pilot.cpus_per_node=1")
    shown = json.loads(ok(slurm_area, home, "site", "show", "shaped", "--json").stdout)
    assert shown["allocation"] == "1 cpu(s) per node"
    pilot = run_pilot(slurm_area, home, "shaped", 4, 1.5)
    allocated = slurm.job(str(pilot["scheduler_id"]))
    cancel(slurm_area, home, slurm, pilot)
    script = (workdir / "batch" / f"{pilot['id']}.sh").read_text()
    assert "#SBATCH --cpus-per-task=1" in script and "--exclusive" not in script
    assert allocated["NumCPUs"] == "1", allocated
    assert agent_cpus(workdir, pilot["id"]) == 1  # what the agent counted is what Slurm gave
    assert most_at_once(spans(slurm_area, home)) == 1


def test_a_default_pilot_owns_the_whole_node_and_runs_at_most_its_cpus(
        slurm_area: Path, home: Path, tmp_path: Path, slurm: SlurmCluster) -> None:
    shown = json.loads(ok(slurm_area, home, "site", "show", "hpc", "--json").stdout)
    assert shown["allocation"] == "whole nodes (exclusive)"
    pilot = run_pilot(slurm_area, home, "hpc", 2 * slurm.cpus, 2)
    allocated = slurm.job(str(pilot["scheduler_id"]))
    cancel(slurm_area, home, slurm, pilot)
    assert allocated["NumCPUs"] == str(slurm.cpus), allocated
    assert allocated.get("OverSubscribe") == "NO", allocated  # --exclusive: nobody else's jobs
    assert agent_cpus(tmp_path / "hpc-work", pilot["id"]) == slurm.cpus
    # Never more than the node's CPUs at once, and it does use them all.
    assert most_at_once(spans(slurm_area, home)) == slurm.cpus


def test_the_agent_counts_what_slurm_allocated_whatever_cpus_says(
        tmp_path: Path, slurm: SlurmCluster) -> None:
    # The agent itself, in a plain one-CPU Slurm job (what `--nodes=1` alone gets), started
    # with --cpus as large as the node, as pilots were: it must count its allocation.
    if slurm.cpus < 2:
        pytest.skip("the node has one CPU: --cpus could not exceed the allocation")
    site = Site(tmp_path / "site", sys.executable)
    record = "sh -c 'date +%s.%N; echo; sleep 1.5; date +%s.%N'"
    site.queue(*[site.job(i, record) for i in range(1, 4)])
    script = tmp_path / "agent.sh"
    script.write_text(
        f"#!/bin/sh\nexport PYTHONPATH={shlex.quote(str(REPO))}\n"
        f"exec {shlex.quote(sys.executable)} -m megarun.agent run --workdir "
        f"{shlex.quote(str(site.workdir))} --agent-id s1 --cpus {slurm.cpus} "
        "--nodes-from slurm --idle-exit 1 --heartbeat 0.2\n")
    job_id = slurm.sbatch(script, "-n", "1", "-o", str(tmp_path / "agent.out"), cwd=tmp_path)
    info = slurm.wait_finished(job_id, timeout=120)
    assert info["JobState"] == "COMPLETED" and info["NumCPUs"] == "1", info
    log = (tmp_path / "agent.out").read_text()
    assert f"--cpus {slurm.cpus} is more than the allocation holds: using 1" in log, log
    assert "started: 1 node(s) of 1 cpus" in log, log
    found = []
    for job in range(1, 4):
        first, _, last = (site.job_dir(job) / "job.out").read_text().split("\n")[:3]
        found.append((float(first), float(last)))
    assert most_at_once(found) == 1

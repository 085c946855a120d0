"""The whole batch path (queue submit, pilot, launch, poll, queue rm) for PBS (PBS Pro and
Torque), LSF, Cobalt and the local scheduler, through megarun's CLI.

PBS, LSF and Cobalt cannot run here: tests/fakes/bin has qsub/qstat/qdel and bsub/bjobs/bkill
that keep a real queue in a file, run the scripts for real and print the real formats.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from megarun.homehost.areas import init_area
from tests.conftest import megarun_process

FAKES = Path(__file__).resolve().parents[2] / "fakes" / "bin"
#: mpirun that runs the ranks on this host: a Cobalt pilot (like one on a MOM node) starts
#: every job through the MPI launcher, as its node list holds no name of its own host.
LAUNCHERS = Path(__file__).resolve().parent / "fakes"

#: preset, fake dialect, the variable a job finds its allocation's nodes in
CASES = {
    "pbspro": ("generic-pbs", "pbspro", "PBS_NODEFILE"),
    "torque": ("generic-pbs", "torque", "PBS_NODEFILE"),
    "lsf": ("generic-lsf", "", "LSB_HOSTS"),
    "cobalt": ("generic-cobalt", "cobalt", "COBALT_PARTNAME"),
}

pytestmark = pytest.mark.slow


class Area:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env

    def cli(self, *args: str, timeout: float = 120) -> tuple[int, str, str]:
        done = megarun_process(self.root, *args, env=self.env, timeout=timeout)
        return done.returncode, done.stdout, done.stderr

    def ok(self, *args: str) -> str:
        code, out, err = self.cli(*args)
        assert code == 0, (args, out, err)
        return out

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args, "--json"))


def make_area(tmp_path: Path, case: str) -> Area:
    preset, flavor, variable = CASES[case]
    root = tmp_path / "area"
    init_area(root, keys=["os"])
    env = {"PATH": os.pathsep.join((str(FAKES), str(LAUNCHERS), os.environ["PATH"])),
           "MEGARUN_FAKE_QUEUE": str(tmp_path / "queue.json"),
           "MEGARUN_FAKE_FLAVOR": flavor, "MEGARUN_FAKE_START_DELAY": "0.2"}
    area = Area(root, env)
    area.ok("site", "add", "hpc", "--preset", preset)
    area.ok("app", "add", "probe", "--command",
            f'printf "%s\\n" "${{{variable}:-none}}" > nodes.txt')
    area.ok("app", "add", "nap", "--command", "sleep 300")
    return area


@pytest.mark.parametrize("case", sorted(CASES))
def test_pilot_runs_jobs_and_queue_rm_cancels(tmp_path: Path, case: str) -> None:
    area = make_area(tmp_path, case)
    area.ok("job", "create", "--app", "probe", "--site", "hpc", "--count", "6")
    [pilot] = area.json("queue", "submit", "--site", "hpc", "--nodes", "1", "--walltime",
                        "10", "--idle-exit", "2")
    assert pilot["state"] == "queued" and pilot["scheduler_id"], pilot
    summary = area.json("launch", "--site", "hpc")
    assert summary["by_status"] == {"PASS": 6}, summary
    for job in area.json("job", "ls"):
        shown = area.json("job", "show", str(job["id"]))
        # the job ran inside the allocation: the scheduler's node-list variable is set
        assert Path(shown["workdir"], "nodes.txt").read_text().strip() not in ("", "none")
    # The first pilot goes idle and ends (--idle-exit 2): the long job must not land in it.
    for _ in range(200):
        area.ok("sync")
        if not area.json("queue", "ls"):
            break
    else:
        pytest.fail("the first pilot never ended after going idle")
    # A second pilot holding a long job is cancelled: the job does not stay RUNNING.
    area.ok("job", "create", "--app", "nap", "--site", "hpc")
    [second] = area.json("queue", "submit", "--site", "hpc", "--nodes", "1", "--walltime", "10")
    for _ in range(200):
        area.ok("sync")
        if any(j["state"] == "RUNNING" for j in area.json("job", "ls", "--app", "nap")):
            break
    else:
        pytest.fail("the long job never started in the second pilot")
    cancelled = area.json("queue", "rm", str(second["id"]))
    assert cancelled["state"] == "cancelled"
    for _ in range(200):
        area.ok("sync")
        [nap] = area.json("job", "ls", "--app", "nap")
        if nap["state"] not in ("RUNNING", "KILLREQ", "LAUNCHED", "QUEUED"):
            break
    else:
        pytest.fail("the long job still runs after its pilot was cancelled")
    assert nap["state"] in ("KILLED", "DEAD"), nap
    history = {row["id"]: row for row in area.json("queue", "ls", "--history")}
    assert history[second["id"]]["state"] == "cancelled"
    assert history[pilot["id"]]["state"] == "finished"
    assert history[pilot["id"]]["exit_code"] == 0


def test_one_status_command_per_cycle_whatever_the_number_of_batch_jobs(tmp_path: Path) -> None:
    """Counted on the real command: a qstat wrapper first on the PATH logs each call."""
    area = make_area(tmp_path, "pbspro")
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    calls = tmp_path / "qstat-calls"
    qstat = wrappers / "qstat"
    qstat.write_text(f'#!/bin/sh\necho call >> "{calls}"\nexec "{FAKES / "qstat"}" "$@"\n')
    qstat.chmod(0o755)
    area.env["PATH"] = f"{wrappers}{os.pathsep}{area.env['PATH']}"
    area.env["MEGARUN_FAKE_START_DELAY"] = "3600"  # they stay queued while we count
    for _ in range(7):
        area.ok("queue", "submit", "--site", "hpc", "--nodes", "1", "--walltime", "10")
    for cycle in range(1, 4):
        [row] = area.json("sync")
        assert row["status_commands"] == 1, row
        assert len(calls.read_text().splitlines()) == cycle
    assert len(area.json("queue", "ls")) == 7


def test_launch_without_a_batch_job_says_how_to_submit_one(tmp_path: Path) -> None:
    """Issue 14, item 10: the message said "free some space, then launch again"."""
    area = make_area(tmp_path, "pbspro")
    area.ok("job", "create", "--app", "probe", "--site", "hpc", "--count", "2")
    code, out, err = area.cli("launch", "--site", "hpc")
    assert code == 3, (out, err)
    [line] = [line for line in err.splitlines() if line.startswith("megarun: error:")]
    assert "no batch job is open on site 'hpc' to run its 2 READY job(s)" in line
    assert "megarun queue submit --site hpc --nodes N --walltime MINUTES" in line
    assert "megarun queue submit --site hpc --mode direct" in line
    assert "space" not in line
    assert {job["state"] for job in area.json("job", "ls")} == {"READY"}

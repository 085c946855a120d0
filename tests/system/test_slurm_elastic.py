"""Elastic pilots on the real Slurm, reached over the real sshd: `sync` cycles alone (no
`queue submit`) run a backlog of 200 jobs to COMPLETED, never with more than max_batch_jobs of
the area's pilots in Slurm's queue, and the pilots leave once idle."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.slurmd import SlurmCluster
from tests.system.test_remote_jobs import cli, db_rows, ok
from tests.system.test_slurm_batch import slurm_area

pytestmark = pytest.mark.slow

__all__ = ["slurm_area"]  # the fixture, shared with test_slurm_batch

MAX_BATCH_JOBS = 2


def ours_in_squeue(area: Path) -> set[str]:
    """The area's pilots that Slurm's queue holds (other sessions share the Slurm)."""
    mine = {str(row[0]) for row in db_rows(area, "SELECT scheduler_id FROM batch_job WHERE "
                                                 "scheduler_id IS NOT NULL")}
    listed = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                            check=True, timeout=60).stdout.split()
    return mine & set(listed)


def test_sync_cycles_alone_run_200_jobs_within_max_batch_jobs(slurm_area: Path, home: Path,
                                                               slurm: SlurmCluster) -> None:
    ok(slurm_area, home, "site", "set", "hpc", f"elastic.max_batch_jobs={MAX_BATCH_JOBS}",
       "elastic.walltime=5", "elastic.idle_exit=8")
    ok(slurm_area, home, "job", "create", "--app", "where", "--site", "hpc", "--count", "200")
    most, submitted = 0, 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        result = cli(slurm_area, home, "sync", "--json")
        [row] = json.loads(result.stdout)
        submitted += len((row["elastic"] or {}).get("submitted", []))
        queued = ours_in_squeue(slurm_area)
        most = max(most, len(queued))
        assert len(queued) <= MAX_BATCH_JOBS, queued
        open_rows = db_rows(slurm_area, "SELECT count(*) FROM batch_job WHERE state IN "
                                        "('pending_submission', 'queued', 'running')")
        assert int(str(open_rows[0][0])) <= MAX_BATCH_JOBS
        left = db_rows(slurm_area, "SELECT count(*) FROM job WHERE state != 'COMPLETED'")
        if int(str(left[0][0])) == 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the 200 jobs did not complete by sync cycles alone")
    assert submitted >= 1 and most >= 1
    statuses = db_rows(slurm_area, "SELECT status, count(*) FROM job GROUP BY status")
    assert [(str(s), int(str(n))) for s, n in statuses] == [("PASS", 200)]
    # Nothing left to do: the pilots leave by themselves (idle_exit), and no new one comes.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        cli(slurm_area, home, "sync")
        if not ours_in_squeue(slurm_area) and not db_rows(
                slurm_area, "SELECT 1 FROM batch_job WHERE state IN ('pending_submission', "
                            "'queued', 'running')"):
            break
        time.sleep(1)
    else:
        pytest.fail("the elastic pilots did not leave once idle")
    ended = db_rows(slurm_area, "SELECT state, elastic FROM batch_job")
    assert ended and all(int(str(elastic)) == 1 for _state, elastic in ended)
    assert {str(state) for state, _e in ended} <= {"finished", "cancelled"}

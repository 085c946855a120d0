"""Issue 17: a pilot whose `queue submit` was killed between sbatch's answer and the database
write is found again on the real Slurm by its job name (squeue), adopted by the next sync, and
runs the jobs, each once; nothing is submitted a second time."""

from __future__ import annotations

from pathlib import Path

import pytest

from megarun.engine.submissions import batch_job_name
from tests.conftest import megarun_process
from tests.slurmd import SlurmCluster
from tests.system import test_slurm_batch
from tests.system.test_remote_jobs import completions_per_job, db_rows, jobs, ok
from tests.system.test_slurm_batch import batch_rows, count_is, sync_until, where_of

slurm_area = test_slurm_batch.slurm_area  # the fixture: an area with a Slurm site over SSH

pytestmark = pytest.mark.slow


def test_a_pilot_lost_between_sbatch_and_record_is_adopted_by_sync(
        slurm_area: Path, home: Path, slurm: SlurmCluster) -> None:
    ok(slurm_area, home, "job", "create", "--app", "where", "--site", "hpc", "--count", "10")
    crashed = megarun_process(slurm_area, "queue", "submit", "--site", "hpc", "--nodes", "1",
                              "--walltime", "5", "--idle-exit", "20",
                              env={"HOME": str(home), "MEGARUN_FAULT": "batch:after-submit"})
    assert crashed.returncode == -9, (crashed.stdout, crashed.stderr)
    assert db_rows(slurm_area, "SELECT state, scheduler_id FROM batch_job") == [
        ("pending_submission", None)]
    [(workdir,)] = db_rows(slurm_area, "SELECT workdir FROM site WHERE name = 'hpc'")
    cycles = sync_until(slurm_area, home, count_is("job", "state = 'COMPLETED'", 10))
    assert cycles[0]["batch_jobs"], cycles[0]  # the first sync adopted it
    [row] = batch_rows(slurm_area, home)
    slurm_id = str(row["scheduler_id"])
    assert slurm_id.isdigit()
    # every job ran once, inside the adopted allocation
    assert {where_of(slurm_area, home, j["id"]) for j in jobs(slurm_area, home)} == {
        (slurm_id, slurm.hostname)}
    assert set(completions_per_job(slurm_area).values()) == {1}
    named = slurm.local.run(["squeue", "-h", "-t", "all", "-o", "%i %j"]).text.splitlines()
    assert f"{slurm_id} {batch_job_name(str(workdir), 1)}" in named
    sync_until(slurm_area, home, "SELECT 1 FROM batch_job WHERE state = 'finished'")
    [row] = batch_rows(slurm_area, home)
    assert row["exit_code"] == 0 and len(batch_rows(slurm_area, home)) == 1, row

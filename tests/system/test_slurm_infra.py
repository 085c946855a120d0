"""The real single-node Slurm of tests/slurmd.py: jobs submitted locally and over the real sshd
run on this node, srun works inside an allocation, and the fixture reuses or repairs what runs."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from megarun.transport.ssh.transport import SshTransport
from tests.slurmd import (
    DAEMONS,
    SLURM_CONF,
    SLURMCTLD,
    SlurmCluster,
    daemon_pid,
    desired_config,
    live_users,
    start_slurm,
)

MakeTransport = Callable[..., SshTransport]


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_batch_job_submitted_over_ssh_runs_on_the_node(slurm: SlurmCluster,
                                                       make_transport: MakeTransport,
                                                       tmp_path: Path) -> None:
    transport = make_transport()
    record = tmp_path / "record"
    script = write_script(tmp_path / "job.sh", 'echo "$SLURM_JOB_ID $(hostname -s) '
                          f'$SLURM_JOB_NODELIST" > {shlex.quote(str(record))}\n')
    job = slurm.sbatch(script, "-o", str(tmp_path / "%j.out"), cwd=tmp_path, via=transport)
    assert job.isdigit()
    slurm.wait_gone(job, via=transport)
    assert record.read_text().split() == [job, slurm.hostname, slurm.hostname]
    assert (tmp_path / f"{job}.out").exists()
    info = slurm.job(job, via=transport)
    assert (info["JobState"], info["ExitCode"], info["Partition"]) == ("COMPLETED", "0:0",
                                                                       slurm.partition)


def test_commands_over_ssh_read_the_same_config(slurm: SlurmCluster,
                                                make_transport: MakeTransport) -> None:
    result = make_transport().run(["scontrol", "show", "config"])
    assert result.code == 0, result.stderr_text
    assert f"SLURM_CONF              = {SLURM_CONF}" in result.text
    assert f"SlurmctldHost[0]        = {slurm.hostname}" in result.text


def test_srun_inside_an_allocation_starts_every_task(slurm: SlurmCluster, tmp_path: Path) -> None:
    ranks = min(2, slurm.cpus)
    script = write_script(tmp_path / "mpi.sh", f"srun -n {ranks} sh -c "
                          "'echo rank $SLURM_PROCID of $SLURM_NTASKS on $(hostname -s)'\n")
    job = slurm.sbatch(script, "-n", str(ranks), "-o", str(tmp_path / "out"), cwd=tmp_path)
    info = slurm.wait_finished(job)
    assert info["JobState"] == "COMPLETED", (tmp_path / "out").read_text()
    lines = sorted((tmp_path / "out").read_text().splitlines())
    assert lines == [f"rank {rank} of {ranks} on {slurm.hostname}" for rank in range(ranks)]


def test_a_failing_job_shows_its_exit_code(slurm: SlurmCluster, tmp_path: Path) -> None:
    script = write_script(tmp_path / "fail.sh", "exit 3\n")
    job = slurm.sbatch(script, "-o", str(tmp_path / "out"), cwd=tmp_path)
    info = slurm.wait_finished(job)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "3:0")
    assert slurm.squeue([job]) == {}
    assert slurm.squeue([job], all_states=True) == {job: "FAILED"}


def test_a_request_larger_than_the_node_pends_with_partition_config(slurm: SlurmCluster,
                                                                    tmp_path: Path) -> None:
    script = write_script(tmp_path / "big.sh", "true\n")
    job = slurm.sbatch(script, "-n", str(slurm.cpus * 32), "-o", str(tmp_path / "out"),
                       cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while slurm.job(job).get("Reason") != "PartitionConfig" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (slurm.job(job)["JobState"], slurm.job(job)["Reason"]) == ("PENDING",
                                                                          "PartitionConfig")
    finally:
        slurm.cancel(job)
    assert slurm.wait_finished(job)["JobState"] == "CANCELLED"


def test_a_second_start_reuses_the_running_daemons(slurm: SlurmCluster) -> None:
    before = {daemon.name: daemon_pid(daemon) for daemon in DAEMONS}
    began = time.monotonic()
    again = start_slurm()
    assert time.monotonic() - began < 2
    assert again == slurm
    assert {daemon.name: daemon_pid(daemon) for daemon in DAEMONS} == before


def test_a_stale_config_is_rewritten_and_slurm_restarted(slurm: SlurmCluster,
                                                         tmp_path: Path) -> None:
    if os.geteuid() != 0 or SLURM_CONF.read_text() != desired_config():
        pytest.skip("this Slurm is not the one the tests configure")
    if set(live_users()) != {os.getpid()}:
        pytest.skip("another test session uses this Slurm: not restarting it under its jobs")
    old_controller = daemon_pid(SLURMCTLD)
    SLURM_CONF.write_text(desired_config().replace("KillWait=2", "KillWait=30"))
    cluster = start_slurm()
    assert SLURM_CONF.read_text() == desired_config()
    assert daemon_pid(SLURMCTLD) not in (None, old_controller)
    assert cluster == slurm
    job = slurm.sbatch(write_script(tmp_path / "ok.sh", "true\n"), "-o", str(tmp_path / "out"),
                       cwd=tmp_path)
    assert slurm.wait_finished(job)["JobState"] == "COMPLETED"

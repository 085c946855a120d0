"""Scheduler parsers against golden outputs of the real commands (tests/schedulers/golden)."""

from __future__ import annotations

from pathlib import Path

import pytest

from megarun.schedulers import BatchState, SchedulerError, get_scheduler

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str) -> str:
    return (GOLDEN / name).read_text()


# -- slurm --------------------------------------------------------------------------------------

def test_squeue_states_reasons_and_never_runs() -> None:
    entries = get_scheduler("slurm").parse_status(golden("slurm_squeue.txt"))
    assert len(entries) == 15
    assert entries["424918"].state is BatchState.RUNNING
    assert entries["403035"].state is BatchState.QUEUED
    assert entries["403035"].reason == "Resources" and not entries["403035"].never_runs
    assert entries["403040"].reason == "ReqNodeNotAvail, UnavailableNodes:hbnode-40"
    assert not entries["403040"].never_runs  # maintenance reservations clear by themselves
    assert entries["403046"].never_runs and entries["403046"].reason == "PartitionConfig"
    assert entries["424905"].never_runs
    assert entries["424936"].state is BatchState.RUNNING  # COMPLETING
    assert entries["424901"].state is BatchState.FINISHED
    assert entries["424902"].state is BatchState.FINISHED
    assert entries["424903"].native == "TIMEOUT"
    assert entries["424904"].state is BatchState.CANCELLED
    assert entries["424906"].state is BatchState.QUEUED  # CONFIGURING: nodes booting
    assert entries["424918"].reason == ""  # "None" means no reason
    assert entries["1234577_[4-9]"].state is BatchState.QUEUED


def test_sbatch_parsable_ids() -> None:
    slurm = get_scheduler("slurm")
    assert slurm.parse_submit(golden("slurm_sbatch.txt")) == "424936"
    assert slurm.parse_submit(golden("slurm_sbatch_cluster.txt")) == "424937"
    with pytest.raises(SchedulerError, match="no job id"):
        slurm.parse_submit("sbatch: error: Batch job submission failed: Invalid account\n")


def test_squeue_junk_is_an_error() -> None:
    with pytest.raises(SchedulerError):
        get_scheduler("slurm").parse_status("garbage\n")


def test_slurm_argv() -> None:
    slurm = get_scheduler("slurm")
    assert slurm.status_argv("alice", ["1", "2"]) == [
        "squeue", "-h", "-t", "all", "-o", "%i %T %r", "-u", "alice"]
    assert slurm.status_argv(None, []) == ["squeue", "-h", "-t", "all", "-o", "%i %T %r", "--me"]
    assert slurm.submit_argv("/w/batch/3.sh") == ["sbatch", "--parsable", "/w/batch/3.sh"]
    assert slurm.cancel_argv(["5", "6"]) == ["scancel", "5", "6"]
    with pytest.raises(SchedulerError):
        slurm.cancel_argv(["--me"])  # never an option
    with pytest.raises(SchedulerError):
        slurm.cancel_argv(["1; rm -rf /"])


# -- pbs ----------------------------------------------------------------------------------------

def test_pbspro_qstat_f() -> None:
    entries = get_scheduler("pbs").parse_status(golden("pbspro_qstat_f.txt"))
    assert set(entries) == {"68350.mycluster", "69301.mycluster", "69302.mycluster",
                            "69310.mycluster", "1384183.mmaster02", "1390830.mmaster02",
                            "1390900.mmaster02"}
    queued = entries["68350.mycluster"]
    assert queued.state is BatchState.QUEUED and not queued.never_runs
    assert queued.reason == "Not Running: Node is in an ineligible state: offline"
    running = entries["69301.mycluster"]
    assert running.state is BatchState.RUNNING
    assert running.reason.endswith("+(b143:ncpus=16)+(b144:ncpus=16)")  # continuation joined
    assert entries["69302.mycluster"].state is BatchState.QUEUED  # H
    never = entries["69310.mycluster"]
    assert never.never_runs and "(R: 512 A: 128 T: 128)" in never.reason
    assert entries["1384183.mmaster02"].state is BatchState.FINISHED
    assert entries["1384183.mmaster02"].exit_code == 0
    assert entries["1390830.mmaster02"].exit_code == 126
    deleted = entries["1390900.mmaster02"]
    assert deleted.state is BatchState.CANCELLED and deleted.exit_code == 271


def test_torque_qstat_f_text() -> None:
    entries = get_scheduler("pbs").parse_status(golden("torque_qstat_f.txt"))
    assert entries["549159"].state is BatchState.QUEUED
    assert entries["555716"].state is BatchState.RUNNING
    done = entries["4564045.pbsserver"]
    assert done.state is BatchState.FINISHED and done.native == "C" and done.exit_code == 0


def test_torque_qstat_xml() -> None:
    entries = get_scheduler("pbs").parse_status(golden("torque_qstat_fx.xml"))
    assert entries["4499334.pbsserver"].state is BatchState.QUEUED
    assert entries["4564045.pbsserver"].state is BatchState.FINISHED
    assert entries["4564045.pbsserver"].exit_code == 0
    assert entries["665199.superserver.stanford.edu"].state is BatchState.RUNNING
    assert get_scheduler("pbs").parse_status("") == {}


def test_pbs_status_failed_only_on_real_errors() -> None:
    pbs = get_scheduler("pbs")
    assert not pbs.status_failed(153, "qstat: Unknown Job Id 1234.server\n")
    assert not pbs.status_failed(153, "qstat: Unknown Job Id Error 12345.mgt.example.org\n")
    assert pbs.status_failed(2, "Connection refused\nqstat: cannot connect to server pbs01\n")
    assert pbs.status_failed(1, "")
    assert not pbs.status_failed(0, "")


def test_pbs_submit_and_argv() -> None:
    pbs = get_scheduler("pbs")
    assert pbs.parse_submit(golden("pbs_qsub.txt")) == "8765.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"
    assert pbs.parse_submit("4564045.pbsserver\n") == "4564045.pbsserver"
    with pytest.raises(SchedulerError):
        pbs.parse_submit("qsub: Job exceeds queue resource limits MSG=cannot satisfy queue max walltime\n")
    assert pbs.status_argv("bob", ["1.s", "2.s"]) == ["qstat", "-f", "-x", "1.s", "2.s"]
    with pytest.raises(SchedulerError):
        pbs.status_argv("bob", [])


def test_pbs_unknown_state_is_an_error() -> None:
    with pytest.raises(SchedulerError, match="unknown to megarun"):
        get_scheduler("pbs").parse_status("Job Id: 1.s\n    job_state = Z\n")


# -- lsf ----------------------------------------------------------------------------------------

def test_bjobs_custom_format() -> None:
    entries = get_scheduler("lsf").parse_status(golden("lsf_bjobs.txt"))
    assert len(entries) == 8
    assert entries["764213236"].state is BatchState.FINISHED
    assert entries["764213236"].exit_code == 140
    assert entries["764220165"].state is BatchState.QUEUED
    assert entries["764220165"].reason == "New job is waiting for scheduling;"
    assert "(Resource: mem)" in entries["764220167"].reason
    assert entries["764254593"].state is BatchState.RUNNING and entries["764254593"].reason == ""
    assert entries["764399747"].exit_code == 0  # DONE
    assert entries["764400001"].state is BatchState.QUEUED  # PSUSP
    assert entries["764400002"].state is BatchState.RUNNING  # USUSP keeps its hosts


def test_bsub_and_lsf_argv() -> None:
    lsf = get_scheduler("lsf")
    assert lsf.submit_stdin
    assert lsf.parse_submit(golden("lsf_bsub.txt")) == "764254593"
    with pytest.raises(SchedulerError):
        lsf.parse_submit("Project <x> is not valid. Job not submitted.\n")
    assert lsf.status_argv("carol", []) == [
        "bjobs", "-a", "-noheader", "-o", "jobid stat exit_code pend_reason delimiter='|'",
        "-u", "carol"]
    assert lsf.status_argv(None, ["7"])[-1] == "7"
    assert lsf.status_argv(None, [])[-1] == "jobid stat exit_code pend_reason delimiter='|'"
    assert not lsf.status_failed(255, "Job <864220165> is not found\n")
    assert not lsf.status_failed(255, "No job found\n")
    assert lsf.status_failed(255, "LSF is down. Please wait ...\n")


# -- cobalt -------------------------------------------------------------------------------------

def test_cobalt_qstat() -> None:
    entries = get_scheduler("cobalt").parse_status(golden("cobalt_qstat.txt"))
    assert entries["233384"].state is BatchState.RUNNING
    assert entries["233390"].state is BatchState.QUEUED
    assert entries["233391"].state is BatchState.QUEUED
    assert entries["233392"].never_runs
    assert entries["233393"].state is BatchState.RUNNING
    assert len(entries) == 5


def test_cobalt_submit_and_argv() -> None:
    cobalt = get_scheduler("cobalt")
    assert cobalt.parse_submit(golden("cobalt_qsub.txt")) == "233384"
    assert cobalt.submit_argv("/w/b/1.sh") == ["qsub", "--mode", "script", "/w/b/1.sh"]
    assert cobalt.status_argv(None, ["1", "2"]) == ["qstat", "--header", "JobID:State", "1", "2"]
    assert not cobalt.status_failed(1, "")
    assert cobalt.status_failed(1, "Failed to connect to queue manager\n")


# -- local --------------------------------------------------------------------------------------

def test_local_ps_parse() -> None:
    text = "    1     1 Ss\n  812   812 S\n  813   812 S\n  900   900 Z\n"
    entries = get_scheduler("local").parse_status(text)
    assert set(entries) == {"1", "812", "813", "900"}
    assert entries["812"].state is BatchState.RUNNING
    assert entries["900"].state is BatchState.FINISHED


def test_local_cancel_refuses_odd_pids() -> None:
    local = get_scheduler("local")
    with pytest.raises(SchedulerError):
        local.cancel_argv(["1"])
    with pytest.raises(SchedulerError):
        local.cancel_argv(["abc"])
    argv = local.cancel_argv(["812"])
    assert argv[:2] == ["/bin/sh", "-c"] and argv[-1] == "812"


# -- jobs by name (adoption after an interrupted submission) --------------------------------------

def names(scheduler: str, text: str, user: str | None = None) -> dict[str, str]:
    return {job.scheduler_id: job.name
            for job in get_scheduler(scheduler).parse_names(text, user)}


def test_squeue_names() -> None:
    slurm = get_scheduler("slurm")
    assert slurm.names_argv("ann") == ["squeue", "-h", "-t", "all", "-o", "%i %j", "-u", "ann"]
    assert slurm.names_argv(None)[-1] == "--me"
    assert names("slurm", golden("slurm_squeue_names.txt")) == {
        "424930": "megarun-3f9a2c41d0-17", "424931": "relax wat box",
        "424936": "megarun-3f9a2c41d0-18", "424940": "megarun-0b51e9c2aa-17"}
    with pytest.raises(SchedulerError):
        names("slurm", "slurm_load_jobs error: Unable to contact slurm controller\n")


def test_pbs_qstat_f_names_of_the_user_only() -> None:
    pbs = get_scheduler("pbs")
    assert pbs.names_argv("ann") == ["qstat", "-f"]
    text = golden("pbspro_qstat_f.txt")
    assert sorted(names("pbs", text, "user02")) == [
        "69301.mycluster", "69302.mycluster", "69310.mycluster"]
    assert names("pbs", text, "user02")["69301.mycluster"] == "Cu-dbp"
    assert names("pbs", text)["68350.mycluster"] == "cell-Qnormal"
    assert "68350.mycluster" not in names("pbs", text, "user02")


def test_bjobs_names() -> None:
    lsf = get_scheduler("lsf")
    assert lsf.names_argv("ann") == ["bjobs", "-a", "-noheader", "-o",
                                     "jobid job_name delimiter='|'", "-u", "ann"]
    assert names("lsf", golden("lsf_bjobs_names.txt") + "No job found\n") == {
        "764213236": "megarun-3f9a2c41d0-17", "764220165": "cp2k|run 4",
        "764254593": "megarun-0b51e9c2aa-17"}


def test_cobalt_qstat_names() -> None:
    cobalt = get_scheduler("cobalt")
    assert cobalt.names_argv("ann") == ["qstat", "--header", "JobID:JobName", "-u", "ann"]
    assert names("cobalt", golden("cobalt_qstat_names.txt")) == {
        "233384": "megarun-3f9a2c41d0-17", "233390": "lammps bench", "233391": "-"}


def test_local_scheduler_lists_no_names() -> None:
    assert get_scheduler("local").names_argv("ann") is None

"""The agent counts the CPUs and GPUs of its allocation, never more: every scheduler variable,
Slurm's "N(xM)" lists, the affinity cap, an explicit --cpus/--gpus above the allocation, and the
start log line naming where the count came from (a real agent process under Python 3.6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from megarun.agent.allocation import (
    AllocationError,
    count_cpus,
    count_gpus,
    parse_cpus_per_node,
    visible_gpus,
)
from tests.component.agent.harness import Site

HOST = "n1"


def cpus(kind: str, env: dict[str, str], given: int | None = None, affinity: int | None = 64,
         whole: bool = False) -> tuple[int, str, list[str]]:
    return count_cpus(kind, env, HOST, whole, given, affinity, cpu_count=lambda: 128)


@pytest.mark.parametrize(("text", "expected"), [
    ("2", [2]), ("2(x3)", [2, 2, 2]), ("2(x3),1", [2, 2, 2, 1]), ("36(x2),72", [36, 36, 72])])
def test_slurm_cpus_per_node_lists(text: str, expected: list[int]) -> None:
    assert parse_cpus_per_node(text) == expected


@pytest.mark.parametrize("text", ["", "2(x)", "two", "2(x3", "-1"])
def test_unreadable_cpus_per_node_is_an_error(text: str) -> None:
    with pytest.raises(AllocationError, match="SLURM_JOB_CPUS_PER_NODE"):
        parse_cpus_per_node(text)


def test_slurm_counts_this_node_and_the_smallest_of_all() -> None:
    assert cpus("slurm", {"SLURM_CPUS_ON_NODE": "1"})[:2] == (1, "SLURM_CPUS_ON_NODE=1")
    counted, source, _ = cpus("slurm", {"SLURM_CPUS_ON_NODE": "4",
                                        "SLURM_JOB_CPUS_PER_NODE": "4(x3),2"})
    assert (counted, source) == (2, "SLURM_JOB_CPUS_PER_NODE=4(x3),2")
    # --exclusive changes nothing: Slurm itself reports the whole node.
    assert cpus("slurm", {"SLURM_CPUS_ON_NODE": "2"}, whole=True)[0] == 2
    with pytest.raises(AllocationError, match="SLURM_CPUS_ON_NODE 'x'"):
        cpus("slurm", {"SLURM_CPUS_ON_NODE": "x"})


def test_pbs_counts_the_chunk_or_torques_ppn_or_the_nodefile(tmp_path: Path) -> None:
    assert cpus("pbs", {"PBS_NCPUS": "8", "NCPUS": "16"})[:2] == (8, "PBS_NCPUS=8")
    assert cpus("pbs", {"NCPUS": "16"})[:2] == (16, "NCPUS=16")
    assert cpus("pbs", {"PBS_NUM_PPN": "12"})[:2] == (12, "PBS_NUM_PPN=12")
    nodefile = tmp_path / "nodes"
    nodefile.write_text("n1.cluster\nn1.cluster\nn1.cluster\nn2\nn2\nn2\n")
    assert cpus("pbs", {"PBS_NODEFILE": str(nodefile)})[0] == 3  # Torque: a line per core


def test_lsf_counts_the_slots_of_each_host() -> None:
    counted, source, _ = cpus("lsf", {"LSB_MCPU_HOSTS": "n1 4 n2 4 n3 2"})
    assert (counted, source) == (2, "LSB_MCPU_HOSTS=n1 4 n2 4 n3 2")
    assert cpus("lsf", {"LSB_DJOB_NUMPROC": "8", "LSB_HOSTS": "n1 n1 n1 n1 n2 n2 n2 n2"})[0] == 4
    with pytest.raises(AllocationError, match="LSB_MCPU_HOSTS"):
        cpus("lsf", {"LSB_MCPU_HOSTS": "n1 four"})


def test_whole_nodes_count_the_node_where_pbs_and_lsf_list_one_slot() -> None:
    # An exclusive PBS chunk still says ncpus=1 and LSF one slot per host with -x: the whole
    # node (its affinity mask) is what the batch job holds.
    assert cpus("pbs", {"NCPUS": "1"}, whole=True)[:2] == (64, "CPU affinity mask")
    assert cpus("lsf", {"LSB_MCPU_HOSTS": "n1 1"}, whole=True)[0] == 64
    assert cpus("cobalt", {}, whole=True)[0] == 64
    assert cpus("pbs", {"NCPUS": "1"})[0] == 1  # a shape: what the chunk holds


def test_the_affinity_mask_caps_the_allocation() -> None:
    counted, source, notes = cpus("slurm", {"SLURM_CPUS_ON_NODE": "8"}, affinity=2)
    assert counted == 2 and source.startswith("CPU affinity mask")
    assert "lists 8 cpus" in notes[0] and "only 2" in notes[0]
    assert cpus("none", {}, affinity=None)[:2] == (128, "os.cpu_count()")


def test_an_explicit_cpus_above_the_allocation_is_capped_with_a_note() -> None:
    counted, source, notes = cpus("slurm", {"SLURM_CPUS_ON_NODE": "1"}, given=2)
    assert (counted, source) == (1, "SLURM_CPUS_ON_NODE=1")
    assert notes == ["--cpus 2 is more than the allocation holds: using 1 (SLURM_CPUS_ON_NODE=1)"]
    assert cpus("pbs", {"NCPUS": "4"}, given=64, affinity=128)[0] == 4
    assert cpus("cobalt", {}, given=64, affinity=32)[0] == 32
    counted, source, notes = cpus("slurm", {"SLURM_CPUS_ON_NODE": "8"}, given=4)
    assert (counted, source, notes) == (4, "--cpus 4 of 8 (SLURM_CPUS_ON_NODE=8)", [])


def test_outside_a_batch_job_an_explicit_cpus_is_the_sites_choice() -> None:
    # The site's node.cpus may share cores on purpose (jobs that mostly wait): kept, with a note.
    counted, _, notes = cpus("none", {"SLURM_CPUS_ON_NODE": "1"}, given=8, affinity=2)
    assert counted == 8 and "jobs will share cores" in notes[0]
    assert cpus("none", {}, affinity=2)[:2] == (2, "CPU affinity mask")


def test_gpus_come_from_the_visible_devices_never_more() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == (["2", "3"],
                                                             "CUDA_VISIBLE_DEVICES=2,3")
    assert visible_gpus({"ROCR_VISIBLE_DEVICES": "0"})[0] == ["0"]  # type: ignore[index]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "NoDevFiles"})[0] == []  # type: ignore[index]
    assert visible_gpus({}) is None
    ids, source, notes = count_gpus("slurm", {"CUDA_VISIBLE_DEVICES": "2,3"}, ["0", "1", "2", "3"])
    assert ids == ["2", "3"] and source == "CUDA_VISIBLE_DEVICES=2,3" and "using 2,3" in notes[0]
    assert count_gpus("pbs", {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, ["0"])[0] == ["0"]
    assert count_gpus("pbs", {"CUDA_VISIBLE_DEVICES": "0,1"}, [])[0] == ["0", "1"]
    assert count_gpus("slurm", {"SLURM_GPUS_ON_NODE": "2"}, [])[0] == ["0", "1"]
    assert count_gpus("slurm", {"SLURM_GPUS_ON_NODE": "1"}, ["0", "1"])[0] == ["0"]
    # Nothing said by the scheduler, or no batch job: --gpus as given.
    assert count_gpus("pbs", {}, ["0", "1"])[:2] == (["0", "1"], "--gpus")
    assert count_gpus("none", {"CUDA_VISIBLE_DEVICES": "0"}, ["0", "1"])[0] == ["0", "1"]


def test_a_real_agent_in_a_slurm_allocation_logs_its_count(site: Site) -> None:
    site.queue(site.job(1, "true"))
    env = {"SLURM_JOB_NODELIST": os.uname().nodename, "SLURMD_NODENAME": os.uname().nodename,
           "SLURM_CPUS_ON_NODE": "1", "SLURM_JOB_CPUS_PER_NODE": "1"}
    process = site.start("a1", "--nodes-from", "slurm", cpus=2, env=env)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    log = err.decode()
    assert "--cpus 2 is more than the allocation holds: using 1 (SLURM_CPUS_ON_NODE=1)" in log
    assert ("1 node(s) of 1 cpus, gpus none; counted: 1 cpus from SLURM_CPUS_ON_NODE=1, "
            "no gpus (none given)") in log
    [started] = [e for e in site.events() if e["ev"] == "agent_started"]
    assert started["cpus"] == 1 and "SLURM_CPUS_ON_NODE=1" in started["slots_from"]


def test_a_real_agent_refuses_an_unreadable_allocation(site: Site) -> None:
    env = {"SLURM_JOB_NODELIST": os.uname().nodename, "SLURM_CPUS_ON_NODE": "lots"}
    process = site.start("a1", "--nodes-from", "slurm", cpus=2, env=env)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 3
    assert "SLURM_CPUS_ON_NODE 'lots' is not a positive count" in err.decode()

"""Queue limits parsed from golden captures of `scontrol show partition -o`, `sacctmgr show
qos`, `qstat -Qf` (PBS Pro, Torque), `bqueues -l` and Cobalt's `qstat -Q`."""

from __future__ import annotations

import pytest

from megarun.schedulers.base import SchedulerError
from megarun.schedulers.limits import (
    ObservedQueue,
    limits_argv,
    minutes,
    parse_limits,
    parse_sacctmgr_qos,
)
from tests.component.schedulers.test_parsers import golden

SCONTROL = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL "
    "Default=YES QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 "
    "Hidden=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED "
    "Nodes=node1 PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO "
    "OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE "
    "JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED\n"
    "PartitionName=long AllowGroups=ALL MaxNodes=4 MaxTime=2-00:00:00 MinNodes=2 Nodes=node[1-8] "
    "State=DOWN TotalCPUs=16 TotalNodes=8\n"
    "PartitionName=short MaxNodes=1 MaxTime=30:00 MinNodes=1 State=UP TotalNodes=8\n")


def test_minutes_of_every_layout() -> None:
    assert minutes("01:00:00") == 60 and minutes("2-00:00:00") == 2880
    assert minutes("1:00:00:00") == 1440 and minutes("90") == 90
    assert minutes("30:00") == 30 and minutes("30:01") == 31
    assert minutes("INFINITE") is None and minutes("UNLIMITED") is None
    with pytest.raises(SchedulerError):
        minutes("soon")


def test_scontrol_partitions() -> None:
    found = {queue.name: queue for queue in parse_limits("slurm", SCONTROL)}
    assert found["debug"] == ObservedQueue("debug", None, None, None, 1, True)
    assert found["long"] == ObservedQueue("long", 4, 2880, 2, 8, False)
    assert found["short"] == ObservedQueue("short", 1, 30, None, 8, True)
    assert limits_argv("slurm") == ["scontrol", "show", "partition", "-o"]
    with pytest.raises(SchedulerError):
        parse_limits("slurm", "slurm_load_partitions error: Unable to contact slurm controller")


def test_sacctmgr_qos() -> None:
    text = "normal|||\nregular|2-00:00:00|node=1792|\ndebug|00:30:00|node=8|node=1\n"
    found = {queue.name: queue for queue in parse_sacctmgr_qos(text)}
    assert found["normal"] == ObservedQueue("normal")
    assert found["regular"] == ObservedQueue("regular", 1792, 2880)
    assert found["debug"].max_nodes == 8 and found["debug"].max_walltime == 30


def test_pbspro_qstat_qf() -> None:
    found = {queue.name: queue for queue in parse_limits("pbs", golden("pbspro_qstat_qf.txt"))}
    assert list(found) == ["debug", "prod", "preemptable", "debug-scaling"]
    assert found["debug"] == ObservedQueue("debug", 2, 60, None, None, True)
    assert found["prod"] == ObservedQueue("prod", 496, 1440, 10, None, True)
    assert found["preemptable"].max_walltime == 72 * 60
    assert not found["debug-scaling"].enabled and found["debug-scaling"].min_nodes == 2


def test_torque_qstat_qf() -> None:
    [batch] = parse_limits("pbs", golden("torque_qstat_qf.txt"))
    assert batch == ObservedQueue("batch", 64, 2 * 1440, None, None, True)


def test_bqueues_l() -> None:
    found = {queue.name: queue for queue in parse_limits("lsf", golden("lsf_bqueues_l.txt"))}
    assert found["batch"] == ObservedQueue("batch", 4608, 1440, None, None, True)
    assert found["debug"] == ObservedQueue("debug", 16, 120, None, None, True)
    assert found["killable"] == ObservedQueue("killable", None, None, None, None, False)


def test_cobalt_qstat_q() -> None:
    found = {queue.name: queue for queue in parse_limits("cobalt", golden("cobalt_qstat_q.txt"))}
    assert found["default"] == ObservedQueue("default", 4392, 1440, None, 4392, True)
    assert found["debug-flat-quad"] == ObservedQueue("debug-flat-quad", 8, 60, None, 16, True)
    assert not found["maintenance"].enabled
    with pytest.raises(SchedulerError):
        parse_limits("cobalt", "Name  MaxTime\n=====\nshort\n")


def test_local_has_no_queues() -> None:
    assert limits_argv("local") is None

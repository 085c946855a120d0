"""Issue 18, live check: `site check` reads the real Slurm's partition limits (a partition
this test creates with MaxNodes/MaxTime, and changes, and removes afterwards: the Slurm is
shared), reports where the site disagrees, and `--fix` writes the observed limits. A site whose
queues are QOSes asks sacctmgr, which fails without accounting: reported, not fatal."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurmd import SlurmCluster
from tests.system.test_remote_jobs import new_area, ok

pytestmark = pytest.mark.slow


@pytest.fixture
def partition(slurm: SlurmCluster) -> Iterator[str]:
    name = f"mrchk{os.getpid()}{uuid.uuid4().hex[:6]}"
    created = slurm.local.run(["scontrol", "create", f"PartitionName={name}",
                               f"Nodes={slurm.hostname}", "MaxNodes=1", "MaxTime=30",
                               "State=UP"], timeout=60)
    if created.code != 0:
        pytest.fail(f"cannot create partition {name}: {created.stderr_text.strip()}")
    try:
        yield name
    finally:
        slurm.local.run(["scontrol", "delete", f"PartitionName={name}"], timeout=60)


def check(area: Path, home: Path, *args: str) -> dict[str, object]:
    return dict(json.loads(ok(area, home, "site", "check", "chk", *args, "--json").stdout))


def queue_of(report: dict[str, object], name: str) -> dict[str, object]:
    [queue] = [q for q in report["queues"] if q["name"] == name]  # type: ignore[attr-defined]
    return dict(queue)


def test_site_check_reads_the_partition_limits_and_fix_writes_them(
        tmp_path: Path, home: Path, slurm: SlurmCluster, partition: str) -> None:
    area = new_area(tmp_path)
    ok(area, home, "site", "add", "chk", "--preset", "generic-slurm",
       "--set", f"queues.{partition}.max_nodes=4", "--set", f"queues.{partition}.max_walltime=60")
    report = check(area, home)
    assert report["limits_source"] == "scontrol show partition -o", report
    queue = queue_of(report, partition)
    assert (queue["scheduler_max_nodes"], queue["scheduler_max_walltime"]) == (1, 30)
    assert queue["problems"] == ["max_nodes: the site says 4, the scheduler 1",
                                 "max_walltime: the site says 60 min, the scheduler 30 min"]
    assert check(area, home, "--fix")["fixed"] == [f"{partition}.max_nodes",
                                                   f"{partition}.max_walltime"]
    assert queue_of(check(area, home), partition)["problems"] == []
    # The scheduler changes: the next check sees it.
    slurm.local.run(["scontrol", "update", f"PartitionName={partition}", "MaxTime=45"],
                    timeout=60)
    assert queue_of(check(area, home), partition)["problems"] == [
        "max_walltime: the site says 30 min, the scheduler 45 min"]


def test_qos_limits_without_accounting_are_reported_cleanly(
        tmp_path: Path, home: Path, slurm: SlurmCluster) -> None:
    area = new_area(tmp_path)
    ok(area, home, "site", "add", "chk", "--preset", "generic-slurm", "--set", "queue_kind=qos",
       "--set", "queues.regular.max_nodes=4", "--set", "queues.regular.max_walltime=60")
    report = check(area, home)
    assert report["limits_source"].startswith("sacctmgr")  # type: ignore[attr-defined]
    assert "slurmdbd" in str(report["limits_error"]) and report["queues"] == [], report

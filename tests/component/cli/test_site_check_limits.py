"""`site check` asks the scheduler for its queues' limits and reports, per queue, where the
site's settings disagree; `--fix` writes the observed limits into the site (the preset file
is untouched). The fake PBS Pro, Torque, LSF and Cobalt of tests/fakes answer `qstat -Qf`,
`bqueues -l` and `qstat -Q` with the golden captures of tests/component/schedulers/golden."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from megarun.config.presets import presets_dir
from megarun.homehost.areas import init_area
from tests.component.workflows.test_batch_fakes import FAKES, Area

#: case -> (preset, fake flavor, settings that disagree with the capture, what the check says)
CASES: dict[str, tuple[str, str, list[str], dict[str, list[str]]]] = {
    "pbspro": ("generic-pbs", "pbspro",
               ["queues.debug.max_nodes=4", "queues.debug.max_walltime=60",
                "queues.prod.max_nodes=496", "queues.prod.max_walltime=360",
                "queues.tiny.max_nodes=1", "queues.tiny.max_walltime=10"],
               {"debug": ["max_nodes: the site says 4, the scheduler 2"],
                "prod": ["max_walltime: the site says 360 min, the scheduler 1440 min",
                         "min_nodes: the site says 1, the scheduler 10"],
                "tiny": ["the scheduler has no such queue"]}),
    "torque": ("generic-pbs", "torque",
               ["queues.batch.max_nodes=128", "queues.batch.max_walltime=2880"],
               {"batch": ["max_nodes: the site says 128, the scheduler 64"]}),
    "lsf": ("generic-lsf", "",
            ["queues.batch.max_nodes=4608", "queues.batch.max_walltime=720",
             "queues.debug.max_nodes=16", "queues.debug.max_walltime=120"],
            {"batch": ["max_walltime: the site says 720 min, the scheduler 1440 min"],
             "debug": []}),
    "cobalt": ("generic-cobalt", "cobalt",
               ["queues.default.max_nodes=4392", "queues.default.max_walltime=1440",
                "queues.default.min_nodes=128", "queues.maintenance.max_nodes=8",
                "queues.maintenance.max_walltime=60"],
               {"default": ["min_nodes: the site says 128, the scheduler 1"],
                "maintenance": ["the scheduler has it disabled or stopped"]}),
}


def make_site(tmp_path: Path, case: str) -> Area:
    preset, flavor, settings, _ = CASES[case]
    root = tmp_path / "area"
    init_area(root, keys=["os"])
    area = Area(root, {"PATH": os.pathsep.join((str(FAKES), os.environ["PATH"])),
                       "MEGARUN_FAKE_QUEUE": str(tmp_path / "queue.json"),
                       "MEGARUN_FAKE_FLAVOR": flavor})
    area.ok("site", "add", "hpc", "--preset", preset,
            *[word for setting in settings for word in ("--set", setting)])
    return area


def problems(report: Any) -> dict[str, list[str]]:
    return {queue["name"]: queue["problems"] for queue in report["queues"] if queue["in_site"]}


def preset_digest(name: str) -> str:
    return hashlib.sha256((presets_dir() / f"{name}.toml").read_bytes()).hexdigest()


@pytest.mark.parametrize("case", sorted(CASES))
def test_site_check_reports_each_disagreeing_queue_and_fix_writes_the_limits(
        tmp_path: Path, case: str) -> None:
    area = make_site(tmp_path, case)
    preset, _, _, expected = CASES[case]
    before = preset_digest(preset)
    report = area.json("site", "check", "hpc")
    assert report["limits_error"] == "" and report["limits_source"], report
    assert problems(report) == expected
    assert report["disagreements"] == sum(map(len, expected.values()))
    assert report["fixed"] == []

    fixed = area.json("site", "check", "hpc", "--fix")
    assert fixed["fixed"], fixed
    after = area.json("site", "check", "hpc")
    left = {name: found for name, found in problems(after).items() if found}
    # what --fix cannot change: a queue the scheduler lacks or has closed stays reported
    assert left == {name: found for name, found in expected.items()
                    if found and found[0].startswith("the scheduler has")}
    settings = area.json("site", "show", "hpc")["settings"]
    for queue in after["queues"]:
        if queue["in_site"] and queue["in_scheduler"] and queue["enabled"]:
            stored = settings["queues"][queue["name"]]
            assert stored["max_walltime"] == queue["scheduler_max_walltime"]
            assert stored.get("min_nodes", 1) == queue["scheduler_min_nodes"]
    assert preset_digest(preset) == before  # the shipped preset is untouched


def test_site_check_text_names_the_queue_and_the_limits(tmp_path: Path) -> None:
    area = make_site(tmp_path, "pbspro")
    out = area.ok("site", "check", "hpc")
    assert "queue limits (qstat -Qf)" in out
    [debug] = [line for line in out.splitlines() if line.startswith("debug ")]
    assert "1-4 nodes, 60 min" in debug and "1-2 nodes, 60 min" in debug
    assert "max_nodes: the site says 4, the scheduler 2" in debug


def test_a_scheduler_that_cannot_list_its_queues_is_reported_not_fatal(tmp_path: Path) -> None:
    area = make_site(tmp_path, "pbspro")
    broken = tmp_path / "limits.txt"
    broken.write_text("qstat: cannot connect to server pbs01 (errno=15010)\n")
    area.env["MEGARUN_FAKE_LIMITS"] = str(broken)
    report = area.json("site", "check", "hpc")
    assert "cannot read" in report["limits_error"] and report["queues"] == [], report
    code, _, err = area.cli("site", "check", "hpc", "--fix")
    assert code == 3 and "nothing to fix" in err, err
    json.loads(area.ok("site", "show", "hpc", "--json"))  # the site is as it was


def test_site_init_reports_where_the_preset_disagrees_with_the_scheduler(
        tmp_path: Path) -> None:
    area = make_site(tmp_path, "pbspro")
    code, out, err = area.cli("site", "init", "--preset", "polaris", "--name", "p1", "--host",
                              "local", "--account", "proj", "--workdir", str(tmp_path / "w"), "--no-input",
                              "--json")
    assert code == 0, err
    result = json.loads(out)
    queues = set(area.json("site", "show", "p1")["settings"]["queues"])
    lines = result["queue_problems"]
    assert lines and all(line.split(":", 1)[0] in queues for line in lines), lines
    assert "megarun site check p1 --fix" in err
    report = area.json("site", "check", "p1")  # the same disagreements, per queue
    assert sorted(f"{q['name']}: {p}" for q in report["queues"] for p in q["problems"]) == sorted(
        lines)

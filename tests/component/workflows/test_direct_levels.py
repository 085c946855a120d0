"""Direct mode for a suite with waiton: one `queue submit --mode direct` for the first level,
then the launcher (or sync) submits each later level as it becomes READY, never a job twice.

Runs the real CLI against the fake PBS of tests/fakes (queue state in a file, scripts run for
real), as tests/integration/test_batch_fakes.py does.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from megarun.config.area import locate_area
from megarun.engine.submissions import batch_job_name
from megarun.homehost.home import working_db_path
from tests.component.workflows.test_batch_fakes import FAKES, Area, make_area

pytestmark = pytest.mark.slow

#: build -> unit (2 items) -> report: three dependency levels.
SUITE = {
    "build": 'steps = [{ name = "build", cmd = "echo built" }]\n',
    "unit": ('waiton = ["build"]\nruntimelim = "1m"\n'
             'steps = [{ name = "check", cmd = "sh -c \'echo unit $SIZE\'" }]\n'
             '[items]\nSIZE = [1, 2]\n'),
    "report": ('waiton = ["unit"]\nwaiton_mode = "toplevel"\n'
               'steps = [{ name = "report", cmd = "echo report" }]\n'),
}
T = TypeVar("T")
RUN = ("--target", "linux", "--runname", "r1")


def suite_area(tmp_path: Path) -> Area:
    area = make_area(tmp_path, "pbspro")
    for test, text in SUITE.items():
        folder = area.root / "tests" / test
        folder.mkdir(parents=True)
        (folder / "test.toml").write_text(text)
    return area


def start_run(area: Area) -> None:
    """`run` on a batch site without a batch job: the jobs wait, the first level READY."""
    code, out, err = area.cli("run", *RUN, "--site", "hpc", "--quiet")
    assert code == 3 and "no batch job is open" in err, (out, err)
    [first] = area.json("queue", "submit", "--site", "hpc", "--mode", "direct",
                        "--walltime", "5")
    assert first["state"] == "queued", first


def site_workdir(area: Area) -> str:
    return str(rows(area, "SELECT workdir FROM site WHERE name = 'hpc'")[0][0])


def rows(area: Area, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(working_db_path(locate_area(str(area.root)))) as db:
        return db.execute(sql).fetchall()


def fake_queue(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads((tmp_path / "queue.json").read_text())["jobs"])


def assert_one_batch_job_per_job(area: Area, tmp_path: Path) -> None:
    jobs = rows(area, "SELECT j.test, j.status, b.mode, b.walltime FROM job j "
                      "JOIN batch_job b ON b.id = j.batch_job_id ORDER BY j.id")
    assert [(t, s, m) for t, s, m, _ in jobs] == [
        ("build", "PASS", "direct"), ("unit", "PASS", "direct"), ("unit", "PASS", "direct"),
        ("report", "PASS", "direct")]
    # walltime: build from --walltime, unit from its runtimelim (+1), report from its parent's
    assert [w for *_, w in jobs] == [5.0, 2.0, 2.0, 2.0]
    batch = rows(area, "SELECT id, mode FROM batch_job WHERE state != 'submit_failed'")
    assert len(batch) == 4 and {m for _, m in batch} == {"direct"}
    assert len({r[0] for r in rows(area, "SELECT batch_job_id FROM job")}) == 4
    names = sorted(job["name"] for job in fake_queue(tmp_path).values())
    assert names == sorted(batch_job_name(site_workdir(area), i) for i, _ in batch)  # once


def test_launch_submits_each_level_as_it_becomes_ready(tmp_path: Path) -> None:
    area = suite_area(tmp_path)
    start_run(area)
    summary = area.json("launch", "--site", "hpc")
    assert summary["by_status"] == {"PASS": 4}, summary
    assert summary["blocked"] == "", summary
    assert_one_batch_job_per_job(area, tmp_path)


def test_sync_submits_each_level_and_a_kill_during_a_submission_submits_nothing_twice(
        tmp_path: Path) -> None:
    area = suite_area(tmp_path)
    start_run(area)
    # The first sync that submits (the unit level, two batch jobs) dies right after the
    # scheduler took the first one, before the database learnt its id: kill -9.
    faulty = Area(area.root, {**area.env, "MEGARUN_FAULT": "batch:after-submit"})
    code = wait_for(lambda: faulty.cli("sync")[0], lambda code: code != 0)
    assert code == -9
    assert sorted(job["name"] for job in fake_queue(tmp_path).values()) == [
        batch_job_name(site_workdir(area), i) for i in (1, 2)]  # the second unit's never went
    wait_for(lambda: area.cli("sync"), lambda _: bool(rows(
        area, "SELECT 1 FROM job WHERE test = 'report' AND state = 'COMPLETED'")))
    assert_one_batch_job_per_job(area, tmp_path)
    states = dict(rows(area, "SELECT id, state FROM batch_job"))
    messages = dict(rows(area, "SELECT id, message FROM batch_job"))
    # the first unit's batch job was found by its name and adopted (its id recorded)
    assert states[2] == "finished" and messages[2] == ""
    assert rows(area, "SELECT scheduler_id FROM batch_job WHERE id = 2")[0][0] in fake_queue(
        tmp_path)
    assert states[3] == "submit_failed" and "before submitting" in messages[3]


def wait_for(step: Callable[[], T], done: Callable[[T], bool], limit: float = 120) -> T:
    """Repeat `step` until `done` holds for its result (at most `limit` seconds)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        result = step()
        if done(result):
            return result
        time.sleep(0.2)
    pytest.fail(f"not done in {limit} s: {step}")


def test_a_refused_level_is_reported_and_never_submitted_again_by_itself(
        tmp_path: Path) -> None:
    area = suite_area(tmp_path)
    wrappers, refuse, calls = tmp_path / "wrappers", tmp_path / "refuse", tmp_path / "qsub-calls"
    wrappers.mkdir()
    qsub = wrappers / "qsub"
    qsub.write_text(f'#!/bin/sh\necho call >> "{calls}"\nif [ -e "{refuse}" ]; then\n'
                    '  echo "qsub: Job violates queue and/or server resource limits" >&2\n'
                    f'  exit 1\nfi\nexec "{FAKES / "qsub"}" "$@"\n')
    qsub.chmod(0o755)
    area.env["PATH"] = f"{wrappers}:{area.env['PATH']}"
    start_run(area)
    refuse.touch()
    code, _, err = area.cli("launch", "--site", "hpc")
    assert code == 3
    assert ("no batch job is open on site 'hpc' to run its 2 READY job(s) (batch job 2 was "
            "refused: qsub refused the batch job: qsub: Job violates queue") in err, err
    assert len(calls.read_text().splitlines()) == 3  # build, then the two unit jobs once
    refuse.unlink()
    code, _, err = area.cli("launch", "--site", "hpc")  # no retry by itself: the user decides
    assert code == 3 and "was refused" not in err and "2 READY job(s)" in err, err
    assert len(calls.read_text().splitlines()) == 3
    area.ok("queue", "submit", "--site", "hpc", "--mode", "direct")
    summary = area.json("launch", "--site", "hpc")  # the report level follows by itself
    assert summary["by_status"] == {"PASS": 3}, summary
    assert len(calls.read_text().splitlines()) == 6

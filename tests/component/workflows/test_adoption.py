"""A pilot whose submitter was killed between the scheduler's answer and the database write is
found again by its name in the scheduler's listing and adopted: polled, counted and closed like
any other, its jobs run once, and the same crash in another area sharing the scheduler never
makes one area take the other's allocation.

Runs the real CLI against the fake PBS Pro, Torque, LSF and Cobalt of tests/fakes (queue in a
file, scripts run for real); the crash is MEGARUN_FAULT=batch:after-submit (core/faults.py), a
SIGKILL of the submitting process.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from megarun.config.area import locate_area
from megarun.engine.submissions import batch_job_name
from megarun.homehost.home import working_db_path
from tests.component.workflows.test_batch_fakes import CASES, Area, make_area

pytestmark = pytest.mark.slow

JOBS = 4


def rows(area: Area, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(working_db_path(locate_area(str(area.root)))) as db:
        return db.execute(sql).fetchall()


def fake_jobs(queue: Path) -> dict[str, Any]:
    return dict(json.loads(queue.read_text())["jobs"])


def crashed_area(tmp_path: Path, case: str, queue: Path, log: Path, nodes: int = 1) -> Area:
    """An area with JOBS jobs whose one pilot reached the scheduler, its id never recorded.
    The fake scheduler never starts a job of more than one node (it stays queued)."""
    area = make_area(tmp_path, case)
    area.env.update(MEGARUN_FAKE_QUEUE=str(queue), MEGARUN_FAKE_MAX_NODES="1")
    area.ok("app", "add", "mark", "--command", f'echo "$PWD" >> "{log}"')
    area.ok("job", "create", "--app", "mark", "--site", "hpc", "--count", str(JOBS))
    faulty = Area(area.root, {**area.env, "MEGARUN_FAULT": "batch:after-submit"})
    code, out, err = faulty.cli("queue", "submit", "--site", "hpc", "--nodes", str(nodes),
                                "--walltime", "10", "--idle-exit", "2")
    assert code == -9, (out, err)
    [(state, scheduler_id)] = rows(area, "SELECT state, scheduler_id FROM batch_job")
    assert (state, scheduler_id) == ("pending_submission", None)
    return area


def workdir(area: Area) -> str:
    [(path,)] = rows(area, "SELECT workdir FROM site WHERE name = 'hpc'")
    return str(path)


def sync_until_done(area: Area, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        area.ok("sync")
        done = rows(area, "SELECT count(*) FROM job WHERE state = 'COMPLETED'")[0][0]
        if done == JOBS and not area.json("queue", "ls"):
            return
        open_rows = rows(area, "SELECT count(*) FROM batch_job WHERE state IN "
                               "('pending_submission', 'queued', 'running')")[0][0]
        assert open_rows <= 1  # never a second pilot: nothing was submitted again
        time.sleep(0.2)
    pytest.fail(f"the jobs of {area.root} did not complete in {limit} s")


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_pilot_lost_between_submit_and_record_is_adopted_by_the_next_sync(
        tmp_path: Path, case: str) -> None:
    queue, log = tmp_path / "queue.json", tmp_path / "ran.log"
    mine = crashed_area(tmp_path / "a", case, queue, log)
    other = crashed_area(tmp_path / "b", case, queue, log, nodes=2)  # held queued for ever
    names = {job["name"]: job_id for job_id, job in fake_jobs(queue).items()}
    assert sorted(names) == sorted([batch_job_name(workdir(mine), 1),
                                    batch_job_name(workdir(other), 1)])

    # The other area's allocation is never taken: its row stays unknown and its jobs READY
    # while this area's sync adopts its own pilot and runs its jobs in it.
    [report] = mine.json("sync")
    assert report["batch_jobs"].get("1") in ("queued", "running", "finished"), report
    [(scheduler_id,)] = rows(mine, "SELECT scheduler_id FROM batch_job")
    assert scheduler_id == names[batch_job_name(workdir(mine), 1)]
    sync_until_done(mine)
    [(state, code)] = rows(mine, "SELECT state, exit_code FROM batch_job")
    assert (state, code) == ("finished", 0)
    assert rows(other, "SELECT state, scheduler_id FROM batch_job") == [
        ("pending_submission", None)]

    ran = log.read_text().splitlines()
    assert len(ran) == JOBS and len(set(ran)) == JOBS  # each job once

    # Then the other area adopts its own, and can cancel it through the adopted id.
    other.ok("sync")
    [pilot] = other.json("queue", "ls")
    assert pilot["state"] == "queued", pilot
    assert pilot["scheduler_id"] == names[batch_job_name(workdir(other), 1)] != scheduler_id
    other.ok("queue", "rm", str(pilot["id"]))
    assert fake_jobs(queue)[pilot["scheduler_id"]]["state"] == "cancelled"
    assert len(fake_jobs(queue)) == 2  # no pilot was submitted a second time


def test_queue_ls_tells_an_adopted_pilot_while_it_is_open(tmp_path: Path) -> None:
    queue, log = tmp_path / "queue.json", tmp_path / "ran.log"
    area = crashed_area(tmp_path, "pbspro", queue, log)
    area.env["MEGARUN_FAKE_START_DELAY"] = "3600"  # it stays queued while we look
    area.ok("sync")
    [pilot] = area.json("queue", "ls")
    assert pilot["state"] == "queued" and pilot["scheduler_id"] in fake_jobs(queue)
    assert pilot["message"].startswith("adopted"), pilot
    area.ok("queue", "rm", str(pilot["id"]))  # cancelled through its adopted id
    assert [job["state"] for job in fake_jobs(queue).values()] == ["cancelled"]


def test_queue_rm_of_a_lost_submission_cancels_the_schedulers_job(tmp_path: Path) -> None:
    queue, log = tmp_path / "queue.json", tmp_path / "ran.log"
    area = crashed_area(tmp_path, "lsf", queue, log, nodes=2)  # stays queued
    [scheduler_id] = fake_jobs(queue)
    cancelled = area.json("queue", "rm", "1")
    assert cancelled["state"] == "cancelled" and cancelled["scheduler_id"] == scheduler_id
    assert fake_jobs(queue)[scheduler_id]["state"] == "cancelled"

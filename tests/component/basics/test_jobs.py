"""Job creation, selection, dependencies, kill/rm/reset against a real SQLite file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from megarun.campaign import app_registry as app_service
from megarun.campaign.control import kill_jobs, remove_jobs, reset_jobs
from megarun.campaign.create import JobRequest, create_jobs, requests_from_file
from megarun.campaign.query import JobFilter, count_by_state, get_job, list_jobs
from megarun.core.states import JobState, JobStatus
from megarun.db.models import Event, Job
from megarun.errors import NotFoundError, UsageError
from megarun.homehost.context import Context


@pytest.fixture
def echo_app(ctx: Context) -> str:
    app_service.add_app(ctx.db, "echo", "echo {{ msg }}", {"msg": "hi"})
    return "echo"


def test_database_is_private(ctx: Context, echo_app: str) -> None:
    mode = stat.S_IMODE(os.stat(ctx.area.db_path).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(ctx.area.state_dir).st_mode) == 0o700


def test_bulk_create_ids_events_and_tags(ctx: Context, echo_app: str) -> None:
    created = create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app, count=50,
                                                       tags={"a": "1", "b": "x"})])
    assert (created.first_id, created.last_id, created.count) == (1, 50, 50)
    assert Job.select().count() == 50
    assert Event.select().where(Event.to_state == "READY").count() == 50
    selected = list_jobs(ctx.db, ctx.area, JobFilter(tags={"a": "1", "b": "x"}))
    assert len(selected) == 50
    assert list_jobs(ctx.db, ctx.area, JobFilter(tags={"a": "1", "b": "y"})) == []
    assert len(list_jobs(ctx.db, ctx.area, JobFilter(), limit=7)) == 7


def test_ids_are_never_reused(ctx: Context, echo_app: str) -> None:
    create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app, count=3)])
    remove_jobs(ctx.db, [3])
    again = create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app)])
    assert again.first_id == 4


def test_validation_happens_before_anything_is_created(ctx: Context, echo_app: str) -> None:
    with pytest.raises(NotFoundError, match="unknown app 'nope'"):
        create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app), JobRequest(app="nope")])
    with pytest.raises(NotFoundError, match="unknown site 'mars'; valid sites: local"):
        create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app), JobRequest(app=echo_app,
                                                                           site="mars")])
    with pytest.raises(NotFoundError, match="--after: no job 99"):
        create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app, after=[99])])
    assert Job.select().count() == 0


def test_dependencies_wait_and_fail(ctx: Context, echo_app: str) -> None:
    create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app)])
    child = create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app, after=[1])])
    assert child.states == {"AWAITING_PARENTS": 1}
    grandchild = create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app, after=[2])])
    result = kill_jobs(ctx.db, ctx.area, [1])
    assert result.killed == [1]
    states = {j["id"]: (j["state"], j["status"]) for j in list_jobs(ctx.db, ctx.area, JobFilter())}
    assert states[1] == ("KILLED", "ABORT")
    assert states[2] == ("COMPLETED", "PREQ_FAIL")
    assert states[grandchild.first_id] == ("COMPLETED", "PREQ_FAIL")
    late = create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app, after=[1])])
    assert late.states == {"COMPLETED": 1}
    assert get_job(ctx.db, late.first_id)["status"] == "PREQ_FAIL"


def test_failed_alias_and_by_state(ctx: Context, echo_app: str) -> None:
    create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app, count=4)])
    kill_jobs(ctx.db, ctx.area, [2, 3])
    failed = list_jobs(ctx.db, ctx.area, JobFilter(state="FAILED"))
    assert [j["id"] for j in failed] == [2, 3]
    counts = {(c["state"], c["status"]): c["count"]
              for c in count_by_state(ctx.db, ctx.area, JobFilter())}
    assert counts == {("READY", "n/a"): 2, ("KILLED", "ABORT"): 2}
    with pytest.raises(UsageError, match="valid states"):
        list_jobs(ctx.db, ctx.area, JobFilter(state="BOGUS"))


def test_reset_and_rm(ctx: Context, echo_app: str) -> None:
    create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app, count=2)])
    kill_jobs(ctx.db, ctx.area, [1])
    reset_jobs(ctx.db, [1], ctx.area.config.launcher.retries)
    job = get_job(ctx.db, 1)
    assert (job["state"], job["status"]) == ("READY", "n/a")
    assert [e["to"] for e in job["events"]] == ["READY", "KILLED", "READY"]
    remove_jobs(ctx.db, [1])
    with pytest.raises(NotFoundError):
        get_job(ctx.db, 1)
    assert Event.select().where(Event.job == 1, Event.to_state == "DELETED").count() == 1


def test_active_jobs_cannot_be_removed(ctx: Context, echo_app: str) -> None:
    create_jobs(ctx.db, ctx.area, [JobRequest(app=echo_app)])
    Job.update(state=JobState.RUNNING.value, status=JobStatus.NA.value).execute()
    with pytest.raises(UsageError, match="kill it first"):
        remove_jobs(ctx.db, [1])
    with pytest.raises(UsageError, match="kill it first"):
        reset_jobs(ctx.db, [1], ctx.area.config.launcher.retries)
    assert Job.select().count() == 1


def test_from_file(ctx: Context, echo_app: str, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"params": {"msg": "a"}, "tags": {"n": "1"}}\n\n'
                    '{"params": {"msg": "b"}, "count": 3}\n')
    requests = list(requests_from_file(path, JobRequest(app=echo_app)))
    created = create_jobs(ctx.db, ctx.area, requests)
    assert created.count == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"params": {"msg": "a"}}\n{"colour": 1}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:2: unknown field 'colour'"):
        list(requests_from_file(bad, JobRequest(app=echo_app)))
    bad.write_text('{"params": \n')
    with pytest.raises(UsageError, match=r"bad.jsonl:1: not valid JSON"):
        list(requests_from_file(bad, JobRequest(app=echo_app)))


def test_from_file_walltime_is_a_duration_or_minutes(echo_app: str, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"walltime": "1h30"}\n{"walltime": 45}\n{"walltime": "soon"}\n')
    requests = requests_from_file(path, JobRequest(app=echo_app))
    assert [next(requests).walltime, next(requests).walltime] == [90, 45]
    with pytest.raises(UsageError, match=r"jobs.jsonl:3: field 'walltime' 'soon': expected a "
                                         "duration"):
        next(requests)


def test_resources_come_from_app_and_options(ctx: Context) -> None:
    app_service.add_app(ctx.db, "mpi", "true", {})
    created = create_jobs(ctx.db, ctx.area, [JobRequest(app="mpi", ranks_per_node=2,
                                                       threads_per_rank=3, walltime=1.5)])
    job = get_job(ctx.db, created.first_id)
    assert (job["ranks_per_node"], job["threads_per_rank"], job["walltime"]) == (2, 3, 1.5)
    with pytest.raises(UsageError, match="--walltime must be positive"):
        create_jobs(ctx.db, ctx.area, [JobRequest(app="mpi", walltime=0)])

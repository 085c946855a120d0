"""Event ingestion: idempotent (a duplicated or re-read event changes nothing) and batched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from megarun.campaign import app_registry as app_service
from megarun.campaign.create import JobRequest, create_jobs
from megarun.db.models import Agent, Event, Job
from megarun.engine.dispatch import dispatch_ready_jobs
from megarun.engine.ingest import ingest_site_events
from megarun.homehost.context import Context
from megarun.sites.registry import ensure_default_site, site_id


@pytest.fixture
def queued(ctx: Context) -> int:
    """Three jobs dispatched into the local site's spool; returns the site id."""
    app_service.add_app(ctx.db, "noop", "true", {})
    create_jobs(ctx.db, ctx.area, [JobRequest(app="noop", count=3)])
    site = ensure_default_site(ctx)
    site.spool().ensure()
    sid = site_id(ctx, site.name)
    assert dispatch_ready_jobs(ctx.db, sid, site) == 3
    return sid


def _log(ctx: Context, agent: str) -> Path:
    return Path(ensure_default_site(ctx).workdir) / "spool" / "events" / f"{agent}.jsonl"


def _write(path: Path, events: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event) + "\n")


def _life(job: int, first_seq: int, rc: int = 0) -> list[dict[str, Any]]:
    return [{"seq": first_seq, "t": 1.0, "ev": "claimed", "job": job, "attempt": 1},
            {"seq": first_seq + 1, "t": 2.0, "ev": "started", "job": job, "attempt": 1,
             "pid": 10, "host": "h"},
            {"seq": first_seq + 2, "t": 3.0, "ev": "finished", "job": job, "attempt": 1,
             "reason": "exit", "rc": rc, "signal": None, "message": "", "runtime": 1.0}]


def _snapshot() -> list[tuple[Any, ...]]:
    return [(j.id, j.state, j.status, j.runs, j.exit_code) for j in Job.select().order_by(Job.id)]


def test_events_apply_once_even_when_written_twice(ctx: Context, queued: int) -> None:
    log = _log(ctx, "a1")
    events = _life(1, 1) + _life(2, 4, rc=5)
    _write(log, events + events)  # an agent that wrote its batch twice
    result = ingest_site_events(ctx.db, queued, ensure_default_site(ctx).spool())
    assert (result.events, result.duplicates) == (6, 6)
    assert _snapshot()[:2] == [(1, "COMPLETED", "PASS", 1, 0), (2, "COMPLETED", "FAIL", 1, 5)]
    assert Event.select().where(Event.job == 1).count() == 5  # READY, QUEUED, LAUNCHED, RUNNING, COMPLETED


def test_rereading_the_whole_log_changes_nothing(ctx: Context, queued: int) -> None:
    log = _log(ctx, "a1")
    _write(log, _life(1, 1))
    spool = ensure_default_site(ctx).spool()
    ingest_site_events(ctx.db, queued, spool)
    before, events_before = _snapshot(), Event.select().count()
    Agent.update(events_offset=0).where(Agent.id == "a1").execute()  # as if the offset was lost
    again = ingest_site_events(ctx.db, queued, spool)
    assert again.events == 0 and again.duplicates == 3
    assert _snapshot() == before and Event.select().count() == events_before


def test_an_event_of_an_older_attempt_is_ignored(ctx: Context, queued: int) -> None:
    stale = [dict(e, attempt=0) for e in _life(3, 1, rc=1)]
    _write(_log(ctx, "a1"), stale)
    result = ingest_site_events(ctx.db, queued, ensure_default_site(ctx).spool())
    assert result.ignored == 3
    assert _snapshot()[2] == (3, "QUEUED", "n/a", 0, None)


def test_a_cut_line_waits_for_its_end(ctx: Context, queued: int) -> None:
    log = _log(ctx, "a1")
    line = json.dumps(_life(1, 1)[0])
    log.write_text(line[:10])
    spool = ensure_default_site(ctx).spool()
    assert ingest_site_events(ctx.db, queued, spool).events == 0
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(line[10:] + "\n")
    assert ingest_site_events(ctx.db, queued, spool).events == 1
    assert _snapshot()[0][1] == "LAUNCHED"


def test_one_cycle_is_one_transaction(ctx: Context, queued: int) -> None:
    _write(_log(ctx, "a1"), _life(1, 1))
    _write(_log(ctx, "a2"), _life(2, 1))
    statements: list[str] = []
    ctx.db.connection().set_trace_callback(statements.append)
    try:
        ingest_site_events(ctx.db, queued, ensure_default_site(ctx).spool())
    finally:
        ctx.db.connection().set_trace_callback(None)
    begins = [s for s in statements if s.upper().startswith("BEGIN")]
    commits = [s for s in statements if s.upper().startswith("COMMIT")]
    assert len(begins) == 1 and len(commits) == 1, statements


def test_a_job_handed_back_at_the_allocation_end_is_ready_without_using_an_attempt(
        ctx: Context, queued: int) -> None:
    """A pilot that reaches its walltime returns its running job: READY, `runs` unchanged."""
    log = _log(ctx, "pilot")
    started = _life(1, 1)[:2]
    _write(log, [*started, {"seq": 3, "t": 4.0, "ev": "returned", "job": 1, "attempt": 1,
                            "message": "allocation walltime reached"}])
    ingest_site_events(ctx.db, queued, ensure_default_site(ctx).spool())
    job = Job.get_by_id(1)
    assert (job.state, job.status, job.runs, job.agent) == ("READY", "n/a", 0, None)
    assert job.message == "allocation walltime reached"
    trail = [(e.from_state, e.to_state) for e in Event.select().where(Event.job == 1)
             .order_by(Event.id)]
    assert trail[-1] == ("RUNNING", "READY")
    # Dispatched again, it runs as attempt 2 and still has its one run to use.
    site = ensure_default_site(ctx)
    assert dispatch_ready_jobs(ctx.db, queued, site) == 1
    assert Job.get_by_id(1).attempt == 2

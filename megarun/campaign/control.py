"""Job control: kill, remove and reset jobs the user names (test-suite runs use them too)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from peewee import SqliteDatabase

from megarun.campaign import app_registry as app_service
from megarun.campaign.app_stale import rerender_ended
from megarun.campaign.rerun_step import set_first_step
from megarun.config.apps import AppSpec
from megarun.config.area import Area
from megarun.config.inputs import INT64_MAX
from megarun.core.lifecycle import Chain
from megarun.core.states import ACTIVE_STATES, JobState
from megarun.db.connection import execute_many, write_transaction
from megarun.db.jobstore import JobRow, chunks, load_rows, save_rows
from megarun.db.models import App
from megarun.db.transitions import apply_chain, ended_ids, settle_children
from megarun.errors import MegarunError, NotFoundError, UsageError
from megarun.sites import registry as site_service


@dataclass
class KillResult:
    """What `job kill` did, by job id."""

    killed: list[int] = field(default_factory=list)  # waiting: killed at once
    requested: list[int] = field(default_factory=list)  # active: their agent kills them
    skipped: list[int] = field(default_factory=list)  # ended already
    undelivered: list[int] = field(default_factory=list)  # the site was unreachable


def _existing_rows(db: SqliteDatabase, job_ids: list[int]) -> dict[int, JobRow]:
    rows = load_rows(db, [job_id for job_id in job_ids if abs(job_id) <= INT64_MAX])
    missing = sorted(set(job_ids) - rows.keys())
    if missing:
        raise NotFoundError(f"no job {missing[0]}")
    return rows


def _inactive_rows(db: SqliteDatabase, job_ids: list[int]) -> dict[int, JobRow]:
    """The jobs, none of them active (remove and reset refuse those: kill them first)."""
    rows = _existing_rows(db, job_ids)
    active = [row.id for row in rows.values() if row.snapshot.state in ACTIVE_STATES]
    if active:
        raise UsageError(f"job {active[0]} is {rows[active[0]].snapshot.state.value}; "
                         "kill it first (megarun job kill)")
    return rows


def kill_jobs(db: SqliteDatabase, area: Area, job_ids: list[int]) -> KillResult:
    """Kill jobs: waiting ones at once, active ones through the agent's spool (KILLREQ; the
    spools of the area's sites)."""
    result = KillResult()
    to_signal: list[tuple[int, int]] = []
    with write_transaction(db):
        rows = _existing_rows(db, job_ids)
        for row in rows.values():
            state = row.snapshot.state
            if state in (JobState.READY, JobState.AWAITING_PARENTS, JobState.CREATED):
                apply_chain(row, Chain(row.snapshot).to(JobState.KILLED, message="killed by user"))
                row.message = "killed by user"
                result.killed.append(row.id)
            elif state in ACTIVE_STATES and state is not JobState.KILLREQ:
                apply_chain(row, Chain(row.snapshot).to(JobState.KILLREQ, message="kill requested"))
                result.requested.append(row.id)
                to_signal.append((row.id, _site_of(db, row.id)))
            elif state is JobState.KILLREQ:
                result.requested.append(row.id)
                to_signal.append((row.id, _site_of(db, row.id)))
            else:
                result.skipped.append(row.id)
        settle_children(db, rows, ended_ids(rows.values()))
        save_rows(db, rows.values())
    result.undelivered = _signal_kills(db, area, to_signal)
    return result


def _site_of(db: SqliteDatabase, job_id: int) -> int:
    return int(db.execute_sql("SELECT site_id FROM job WHERE id = ?", (job_id,)).fetchone()[0])


def _signal_kills(db: SqliteDatabase, area: Area, kills: list[tuple[int, int]]) -> list[int]:
    """Write the kill requests; deliver those for SSH sites now. Returns undelivered job ids."""
    names = {int(i): str(n) for i, n in db.execute_sql("SELECT id, name FROM site")}
    opened = site_service.OpenArea(area, db)
    by_site: dict[int, list[int]] = {}
    for job_id, site_id in kills:
        by_site.setdefault(site_id, []).append(job_id)
    undelivered: list[int] = []
    for site_id, job_ids in by_site.items():
        spool = site_service.get_site(opened, names[site_id]).spool()
        for job_id in job_ids:
            spool.request_kill(job_id)
        if not spool.delivers_later:
            continue
        try:
            spool.deliver()
        except MegarunError:
            undelivered.extend(job_ids)  # the next launch or sync cycle delivers them
    return undelivered


def remove_jobs(db: SqliteDatabase, job_ids: list[int]) -> list[int]:
    """Delete finished or waiting jobs (their event trail stays); active jobs are refused."""
    with write_transaction(db):
        rows = _inactive_rows(db, job_ids)
        for row in rows.values():
            if row.snapshot.state is not JobState.DELETED:
                apply_chain(row, Chain(row.snapshot).to(JobState.DELETED, message="removed"))
        settle_children(db, rows, set(rows))
        save_rows(db, rows.values())
        for part in chunks(sorted(rows)):
            marks = ",".join("?" * len(part))
            db.execute_sql(f"DELETE FROM job WHERE id IN ({marks})", tuple(part))  # noqa: S608
    return sorted(rows)


def reset_jobs(db: SqliteDatabase, job_ids: list[int], retries: int,
               from_step: str | None = None) -> list[int]:
    """Send ended jobs back to READY with a fresh set of attempts, each plain job with the
    command its app renders now (megarun.campaign.app_stale: a job the app cannot render
    refuses the whole reset, naming it).

    The set is granted, not restarted: `runs` goes on counting every start and
    `max_attempts` grows to runs + 1 + retries (its app's, or `retries`: the area's as now
    configured), so that a job's attempt numbers never pass its max_attempts after a rerun.
    `from_step` (rerun --step) makes the next attempts start at that step; None runs every
    step (megarun.campaign.rerun_step).
    """
    with write_transaction(db):
        rows = _inactive_rows(db, job_ids)
        rerender_ended(db, _app_specs(db), sorted(row.id for row in rows.values()
                                                if row.snapshot.state not in _NOT_RESET))
        set_first_step(db, sorted(rows), from_step)
        grants = _attempt_grants(db, sorted(rows), retries)
        granted = []
        for row in rows.values():
            if row.snapshot.state in _NOT_RESET:
                continue
            chain = Chain(row.snapshot).to(JobState.READY, message="reset by user")
            apply_chain(row, chain)
            total = min(INT64_MAX, row.snapshot.runs + grants[row.id])
            row.snapshot = replace(row.snapshot, max_attempts=total)
            granted.append((total, row.id))
            row.exit_code = None
            row.message = ""
        save_rows(db, rows.values())
        execute_many(db, "UPDATE job SET max_attempts = ? WHERE id = ?", granted)
    return sorted(rows)


#: Jobs `job reset` leaves as they are: they wait to run already (and an app change gave them
#: its new command when it was saved).
_NOT_RESET = (JobState.READY, JobState.AWAITING_PARENTS)


def _app_specs(db: SqliteDatabase) -> dict[int, AppSpec]:
    """Every app by id, as it is now (the app table is small)."""
    return {int(app.id): app_service.spec_from_row(app) for app in App.select().execute(db)}


def _attempt_grants(db: SqliteDatabase, job_ids: list[int], retries: int) -> dict[int, int]:
    """1 + retries per job, as a new job would get now: its app's or the area's retries."""
    grants: dict[int, int] = {}
    for part in chunks(job_ids):
        marks = ",".join("?" * len(part))
        sql = (f"SELECT job.id, app.retries FROM job LEFT JOIN app ON app.id = job.app_id "  # noqa: S608
               f"WHERE job.id IN ({marks})")
        for job_id, app_retries in db.execute_sql(sql, tuple(part)):
            grants[job_id] = 1 + max(app_retries or 0, retries)
    return grants

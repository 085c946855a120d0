"""Batch jobs a killed megarun left half-submitted: found and settled, never submitted twice.

Submitting a batch job is: a row (pending_submission); in direct mode its job dispatched into
the batch job's pool; the row marked `submitting`; the scheduler's submit command; the
scheduler's id recorded. A kill -9 in between leaves a pending_submission row. Submissions of
a site take turns (a file lock), so a pending_submission row seen while holding the lock
belongs to a process that is gone:

- not yet handed to the scheduler: it becomes submit_failed, and its jobs go back to READY as
  jobs that never had a batch job (the next direct level picks them up again);
- handed to the scheduler, its answer lost: the scheduler may well run it, so it is never
  submitted again. Its scheduler job carries a name only this site's row can have
  (`batch_job_name`: the site work dir's digest and the row id), so the user's jobs listed
  by name find it: it is *adopted* (its scheduler id recorded, then polled, counted and
  closed like any other). Not listed but its exit-code file written: it ran and ended.
  Otherwise, once its jobs ended (the allocation ran them) it is finished; while they still
  wait in its pool it stays open, saying how to cancel it if the scheduler has none.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

from peewee import SqliteDatabase

from megarun.agent.private import make_private_dirs
from megarun.config.area import Area
from megarun.core.filelocks import hold_lock
from megarun.core.states import ACTIVE_STATES, WAITING_STATES, JobState
from megarun.db.connection import busy_timeout_seconds, write_transaction
from megarun.db.models import BatchJob
from megarun.engine.batch_poll import (
    ADOPTED,
    STATUS_TIMEOUT,
    after_end,
    batch_dir,
    batch_user,
    read_exit_code,
    return_to_ready,
)
from megarun.engine.scope import SiteScope
from megarun.errors import AlreadyRunning
from megarun.schedulers import get_scheduler
from megarun.schedulers.base import BatchState
from megarun.sites.connect import transport_for

#: The message of a row whose submit command is being run (set just before it runs).
SUBMITTING = "submitting"
#: The message of such a row once its submitter is known to be gone.
_CUT_SHORT = "megarun was stopped while submitting it"
_OPEN_JOB_STATES = tuple(sorted(s.value for s in ACTIVE_STATES | WAITING_STATES))


@contextmanager
def submit_lock(area: Area, site: str, wait: bool) -> Iterator[bool]:
    """Hold the site's submission lock; yields whether it is held (`wait`: up to the
    database busy timeout, then AlreadyRunning; else at once or not at all)."""
    folder = area.state_dir / "locks"
    make_private_dirs(str(folder))
    with hold_lock(folder / f"submit-{site}.lock", busy_timeout_seconds() if wait else 0) as held:
        if not held and wait:
            raise AlreadyRunning(f"another megarun is submitting batch jobs to site {site!r}",
                                 "try again when it is done")
        yield held


def batch_job_name(workdir: str, batch_id: int) -> str:
    """The scheduler job name of batch job `batch_id` of the site whose work dir is `workdir`:
    another area (another work dir) never has the same, so adoption never takes its jobs."""
    digest = hashlib.sha256(workdir.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"megarun-{digest}-{batch_id}"


def settle_orphans(scope: SiteScope) -> dict[int, str]:
    """Settle (adopt first) what a killed submitter left, unless a submitter is at work now;
    the new state of each row that left pending_submission. Cheap when there is none."""
    if not has_pending(scope):
        return {}
    with submit_lock(scope.area, scope.name, wait=False) as held:
        if not held:
            return {}
        ids = [row.id for row in _pending(scope)]
        settle_interrupted(scope)
    return {row.id: str(row.state) for row in BatchJob.select().where(BatchJob.id.in_(ids))
            if row.state != BatchState.PENDING_SUBMISSION.value}


def settle_interrupted(scope: SiteScope) -> list[str]:
    """Settle the site's pending_submission rows (call holding `submit_lock`); one line each."""
    db = scope.db
    lines = adopt_submitted(scope)
    for row in _pending(scope):
        if not _handed_over(row):
            _end(db, row, BatchState.SUBMIT_FAILED, "megarun was stopped before submitting it")
            return_to_ready(scope, [f"bj{row.id}"], "its batch job was never submitted")
            with write_transaction(db):  # they never had a batch job
                db.execute_sql("UPDATE job SET batch_job_id = NULL WHERE batch_job_id = ? "
                                   "AND state = ?", (row.id, JobState.READY.value))
            lines.append(f"batch job {row.id}: never submitted; its jobs are READY again")
        elif row.mode == "direct" and not _has_open_jobs(db, row.id):
            _end(db, row, BatchState.FINISHED, f"{_CUT_SHORT}; the scheduler ran it, its id "
                 "was never recorded")
            lines.append(f"batch job {row.id}: ran, though its submission was cut short")
        else:
            name = batch_job_name(scope.site.workdir, row.id)
            message = (f"{_CUT_SHORT}: if the scheduler has no job {name}, cancel "
                       f"it with: megarun queue rm {row.id}")
            if row.message != message:
                with write_transaction(db):
                    BatchJob.update(message=message).where(BatchJob.id == row.id).execute()
    return lines


def settled_row(scope: SiteScope, batch_id: int) -> BatchJob:
    """Batch job `batch_id`; one still pending_submission is settled first (adopted when the
    scheduler lists it by name), so that cancelling it reaches the scheduler's job."""
    row: BatchJob = BatchJob.get_by_id(batch_id)
    if row.state == BatchState.PENDING_SUBMISSION.value:
        with submit_lock(scope.area, scope.name, wait=True):
            settle_interrupted(scope)
        row = BatchJob.get_by_id(batch_id)
    return row


def adopt_submitted(scope: SiteScope) -> list[str]:
    """The handed-over rows the scheduler lists by name get their scheduler id (then the poll
    judges them); those it no longer lists but whose exit-code file exists have ended. Call
    holding `submit_lock`. A scheduler that cannot list names, or fails to, leaves them."""
    rows = [row for row in _pending(scope) if _handed_over(row)]
    if not rows:
        return []
    site = scope.site
    scheduler, transport, user = get_scheduler(site.scheduler), transport_for(site), \
        batch_user(site)
    argv = scheduler.names_argv(user)
    if argv is None:
        return []
    answer = transport.run(argv, timeout=STATUS_TIMEOUT)
    if scheduler.status_failed(answer.code, answer.stderr_text):
        return [f"cannot list the batch jobs by name ({argv[0]} exited {answer.code}): "
                "the interrupted submissions are looked for again at the next sync"]
    listed = {job.name: job.scheduler_id
              for job in scheduler.parse_names(answer.stdout_text, user)}
    lines, ended = [], []
    for row in rows:
        scheduler_id = listed.get(batch_job_name(site.workdir, row.id))
        if scheduler_id is not None:
            with write_transaction(scope.db):
                BatchJob.update(state=BatchState.QUEUED.value, scheduler_id=scheduler_id,
                                submitted=time.time(), message=ADOPTED).where(
                    BatchJob.id == row.id).execute()
            lines.append(f"batch job {row.id}: adopted as {scheduler_id}")
            continue
        code = read_exit_code(transport, f"{batch_dir(site)}/{row.id}.exit")
        if code is not None:
            with write_transaction(scope.db):
                BatchJob.update(state=BatchState.FINISHED.value, exit_code=code, native="gone",
                                ended=time.time(), message=f"{_CUT_SHORT}; it ran and its "
                                f"script exited with code {code}").where(
                    BatchJob.id == row.id).execute()
            ended.append(BatchJob.get_by_id(row.id))
            lines.append(f"batch job {row.id}: ran, though its submission was cut short")
    if ended:
        after_end(scope, ended)
    return lines


def _pending(scope: SiteScope) -> list[BatchJob]:
    return list(BatchJob.select().where(
        (BatchJob.site == scope.sid)
        & (BatchJob.state == BatchState.PENDING_SUBMISSION.value)).order_by(BatchJob.id))


def has_pending(scope: SiteScope) -> bool:
    """Whether the site has a batch job row in pending_submission (cheap: one indexed row)."""
    return bool(BatchJob.select(BatchJob.id).where(
        (BatchJob.site == scope.sid)
        & (BatchJob.state == BatchState.PENDING_SUBMISSION.value)).limit(1).count())


def _handed_over(row: BatchJob) -> bool:
    """Whether the submit command of `row` may have run."""
    return bool(row.message == SUBMITTING or row.message.startswith(_CUT_SHORT))


def _has_open_jobs(db: SqliteDatabase, batch_id: int) -> bool:
    marks = ",".join("?" * len(_OPEN_JOB_STATES))
    return bool(db.execute_sql(
        f"SELECT 1 FROM job WHERE batch_job_id = ? AND state IN ({marks}) LIMIT 1",  # noqa: S608
        (batch_id, *_OPEN_JOB_STATES)).fetchone())


def _end(db: SqliteDatabase, row: BatchJob, state: BatchState, message: str) -> None:
    with write_transaction(db):
        BatchJob.update(state=state.value, message=message, ended=time.time()).where(
            BatchJob.id == row.id).execute()

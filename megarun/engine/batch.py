"""Batch jobs: scheduler allocations on a site, submitted and cancelled (polled: batch_poll).

A *pilot* batch job runs one agent inside the allocation; the agent takes jobs from the site's
spool like any agent and packs them onto the allocation's nodes. A pilot given tags (`-t`)
gets its own pool of the spool queue ("bj<id>"), so that only the jobs carrying those tags
reach it. A *direct* batch job runs exactly one megarun job: the job is dispatched into the
batch job's pool first, then the scheduler job is submitted.

Every value of a batch script is shell-quoted by its template (megarun/schedulers); commands
are argv lists run through the site's transport (this machine, or the SSH connection).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from peewee import SqliteDatabase

from megarun.config.presets import apply_overrides
from megarun.core.faults import fault_point
from megarun.core.states import JobState
from megarun.db.connection import write_transaction
from megarun.db.models import BatchJob
from megarun.engine.batch_poll import (
    OPEN_STATES,
    STATUS_TIMEOUT,
    after_end,
    batch_dir,
    last_line,
    pool_of,
    return_to_ready,
    set_state,
)
from megarun.engine.dispatch import PoolTarget, dispatch_ready_jobs
from megarun.engine.pilot_argv import pilot_argv
from megarun.engine.scope import SiteScope
from megarun.engine.submissions import (
    SUBMITTING,
    batch_job_name,
    settle_interrupted,
    settled_row,
    submit_lock,
)
from megarun.errors import EnvironmentProblem, MegarunError, NotFoundError, UsageError
from megarun.schedulers import check_extras, check_pilot, get_scheduler, render_script
from megarun.schedulers.base import BatchState, Scheduler, ScriptRequest
from megarun.sites.connect import (
    agent_path,
    ensure_site_dirs,
    install_agent,
    transport_for,
)
from megarun.sites.registry import SiteInfo
from megarun.transport.base import Transport

MODES = ("pilot", "direct")
#: A pilot with nothing to do for this long exits and gives its allocation back.
DEFAULT_IDLE_EXIT = 120.0
#: A direct batch job's agent leaves as soon as its one job is done.
DIRECT_IDLE_EXIT = 1.0
#: Minutes added to a direct job's own walltime for the agent to start and report.
DIRECT_MARGIN = 1
SUBMIT_TIMEOUT = 120.0


@dataclass(frozen=True)
class SubmitRequest:
    """What `queue submit` asks for."""

    site: str
    nodes: int | None = None
    walltime: float | None = None  # minutes
    queue: str | None = None
    account: str | None = None
    mode: str = "pilot"
    tags: dict[str, str] = field(default_factory=dict)
    extras: list[str] = field(default_factory=list)  # --set key=value directives
    idle_exit: float | None = None
    limit: int | None = None  # direct mode: at most this many jobs
    job_ids: tuple[int, ...] = ()  # direct mode: only these jobs (the next dependency level)
    default_walltime: float | None = None  # direct mode: minutes for a job without a walltime
    elastic: bool = False  # submitted by the elastic policy (engine/elastic.py)


# -- listing ---------------------------------------------------------------------------------
class BatchJobRow(TypedDict):
    """One batch job as `queue ls|submit|rm` report it (docs/cli.md lists the fields)."""

    id: int
    site: str
    scheduler_id: str
    mode: str
    state: str
    native: str
    nodes: int
    walltime: float | None
    queue: str
    account: str
    tags: dict[str, Any]
    extras: dict[str, Any]
    exit_code: int | None
    message: str | None
    created: float
    submitted: float | None
    started: float | None
    ended: float | None
    elastic: bool


def as_row(row: BatchJob, site_name: str) -> BatchJobRow:
    return {"id": row.id, "site": site_name, "scheduler_id": row.scheduler_id or "",
            "mode": row.mode, "state": row.state, "native": row.native, "nodes": row.nodes,
            "walltime": row.walltime, "queue": row.queue or "", "account": row.account or "",
            "tags": json.loads(row.tags or "{}"), "extras": json.loads(row.extras or "{}"),
            "exit_code": row.exit_code, "message": row.message, "created": row.created,
            "submitted": row.submitted, "started": row.started, "ended": row.ended,
            "elastic": bool(row.elastic)}


def list_batch_jobs(db: SqliteDatabase, sid: int | None = None, history: bool = False,
                    state: BatchState | None = None, limit: int = 0) -> list[BatchJobRow]:
    """Open batch jobs (of site `sid`; all of them with `history`; those in `state`), oldest
    first: at most `limit` of them (0: all)."""
    names = {row_id: name for row_id, name in db.execute_sql("SELECT id, name FROM site")}
    query = _batch_query(sid, history, state).order_by(BatchJob.id)
    if limit:
        query = query.limit(limit)
    return [as_row(row, names.get(row.site_id, "?")) for row in query]


def parse_batch_state(name: str | None) -> BatchState | None:
    """`queue ls --state`: a batch job state, any case; UsageError naming the ones there are."""
    if name is None:
        return None
    try:
        return BatchState(name.lower())
    except ValueError:
        raise UsageError(f"--state {name!r}: expected one of "
                         f"{', '.join(s.value for s in BatchState)}") from None


def count_batch_jobs(db: SqliteDatabase, sid: int | None = None, history: bool = False,
                     state: BatchState | None = None) -> int:
    """How many batch jobs `list_batch_jobs` lists without a limit."""
    return int(_batch_query(sid, history, state).count(db))


def _batch_query(sid: int | None, history: bool, state: BatchState | None) -> Any:
    query = BatchJob.select()
    if sid is not None:
        query = query.where(BatchJob.site == sid)
    if state is not None:
        query = query.where(BatchJob.state == state.value)
    elif not history:
        query = query.where(BatchJob.state.in_(OPEN_STATES))
    return query


def batch_job_site(db: SqliteDatabase, batch_id: int) -> str:
    """The name of the site batch job `batch_id` belongs to; NotFoundError if there is none."""
    found = db.execute_sql("SELECT site.name FROM batch_job JOIN site ON site.id = "
                           "batch_job.site_id WHERE batch_job.id = ?", (batch_id,)).fetchone()
    if found is None:
        raise NotFoundError(f"no batch job {batch_id} (see: megarun queue ls --history)")
    return str(found[0])


# -- submitting ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """A checked request: the site, its scheduler and the resolved settings."""

    site: SiteInfo
    scheduler: Scheduler
    queue: str | None
    account: str | None
    extras: dict[str, Any]
    idle_exit: float
    queue_given: bool = True  # False: megarun chose the queue, so it may choose per direct job


def submit(scope: SiteScope, request: SubmitRequest) -> list[BatchJobRow]:
    """Submit a pilot, or one direct batch job per selected READY job; return the rows.

    A batch job that the scheduler refused is kept as submit_failed with the reason.
    Submissions to a site take turns; the first settles what a killed one left behind.
    """
    plan = _plan(scope.site, request)
    with submit_lock(scope.area, scope.name, wait=True):
        settle_interrupted(scope)
        return _submit_planned(scope, plan, request)


def submit_held(scope: SiteScope, request: SubmitRequest) -> list[BatchJobRow]:
    """`submit` for a caller that holds the site's submit_lock already (the elastic step)."""
    return _submit_planned(scope, _plan(scope.site, request), request)


def submit_like(scope: SiteScope, template: BatchJob,
                job_ids: Sequence[int]) -> list[BatchJobRow]:
    """One direct batch job per READY job of `job_ids`, with the queue, account and
    directives of `template` (checked when it was submitted); a job without a walltime of
    its own gets the template's. UsageError when none of the jobs is READY any more.
    Call it holding megarun.engine.submissions.submit_lock."""
    site = scope.site
    plan = _Plan(site, get_scheduler(site.scheduler), template.queue, template.account,
                 json.loads(template.extras or "{}"), DIRECT_IDLE_EXIT)
    request = SubmitRequest(site.name, mode="direct", job_ids=tuple(job_ids),
                            default_walltime=template.walltime)
    return _submit_planned(scope, plan, request)


def _submit_planned(scope: SiteScope, plan: _Plan,
                    request: SubmitRequest) -> list[BatchJobRow]:
    transport = transport_for(plan.site)
    _prepare_site(plan.site, transport)
    unfit: list[BatchJob] = []  # direct jobs no queue of the site takes: submit_failed rows
    if request.mode == "pilot":
        rows = [_new_row(scope, plan, request, request.nodes or 1, request.walltime or 0.0)]
    else:
        rows, unfit = _direct_rows(scope, plan, request)
    for row in rows:
        _submit_row(scope, plan, transport, row, pool_of(row))
    if request.mode == "direct":
        _take_back_failed(scope, rows)
    names = plan.site.name
    return [as_row(BatchJob.get_by_id(row.id), names) for row in [*rows, *unfit]]


def _plan(site: SiteInfo, request: SubmitRequest) -> _Plan:
    if request.mode not in MODES:
        raise UsageError(f"--mode {request.mode!r}: use pilot or direct")
    scheduler = get_scheduler(site.scheduler)
    if request.mode == "pilot" and (request.nodes is None or request.walltime is None):
        raise UsageError("a pilot needs --nodes and --walltime")
    if request.nodes is not None and request.nodes < 1:
        raise UsageError(f"--nodes must be at least 1, got {request.nodes}")
    if request.walltime is not None and request.walltime <= 0:
        raise UsageError(f"--walltime must be positive minutes, got {request.walltime:g}")
    spec = site.spec
    queue = request.queue or spec.queue_for(request.nodes, request.walltime) or None
    _check_queue(site, queue, request)
    account = request.account or spec.account or None
    if spec.account_required and not account:
        raise UsageError(f"site {site.name!r} needs an account: give --account")
    extras = dict(spec.extras)
    extras.update(apply_overrides({}, request.extras))
    if queue and spec.queues_are_qos:
        extras["qos"], queue = queue, None  # the site's queues are QOSes, not partitions
    check_extras(site.scheduler, extras, "--set")
    check_pilot(site.scheduler, spec.pilot, extras,
                f"site {site.name!r} with --set")
    idle = request.idle_exit if request.idle_exit is not None else DEFAULT_IDLE_EXIT
    if idle <= 0:
        raise UsageError(f"--idle-exit must be positive seconds, got {idle:g}")
    return _Plan(site, scheduler, queue, account, extras, idle, request.queue is not None)


def _check_queue(site: SiteInfo, queue: str | None, request: SubmitRequest) -> None:
    """The queue must be one the site lists, and the request within its limits."""
    queues = site.spec.queues
    if not queues or queue is None:
        return
    if queue not in queues:
        raise UsageError(f"site {site.name!r} has no queue {queue!r}; its queues: "
                         f"{', '.join(sorted(queues))}")
    # The node-count bins and the minimum too: what the scheduler itself would refuse.
    problem = queues[queue].problem(request.nodes, request.walltime)
    if problem:
        raise UsageError(f"queue {queue!r} of site {site.name!r} {problem}")


def _prepare_site(site: SiteInfo, transport: Transport) -> None:
    """The batch folder and this version of the agent must be on the site."""
    ensure_site_dirs(site, transport, site.workdir, batch_dir(site),
                     agent_path(site).rsplit("/", 1)[0])  # before trusting what is there
    install_agent(site, transport)


def _new_row(scope: SiteScope, plan: _Plan, request: SubmitRequest, nodes: int,
             walltime: float, queue: str | None = None) -> BatchJob:
    with write_transaction(scope.db):
        row: BatchJob = BatchJob.create(
            site=scope.sid, state=BatchState.PENDING_SUBMISSION.value,
            mode=request.mode, nodes=nodes, walltime=walltime, queue=queue or plan.queue,
            account=plan.account, tags=json.dumps(request.tags), extras=json.dumps(plan.extras),
            created=time.time(), elastic=int(request.elastic))
    return row


def _direct_rows(scope: SiteScope, plan: _Plan,
                 request: SubmitRequest) -> tuple[list[BatchJob], list[BatchJob]]:
    """One batch job per READY job of the site (with the tags), each job dispatched into the
    batch job's pool before anything is submitted."""
    target = PoolTarget(None, tags=request.tags, job_ids=request.job_ids)
    where, params = target.where()
    limit = request.limit if request.limit is not None else -1
    candidates = scope.db.execute_sql(
        f"SELECT id, nodes, walltime FROM job WHERE site_id = ? AND state = '{JobState.READY.value}' {where}"  # noqa: S608
        "ORDER BY priority DESC, id LIMIT ?", (scope.sid, *params, limit)).fetchall()
    spool = plan.site.spool()
    spool.ensure()
    rows = []
    refused: list[tuple[int, float, str]] = []  # left READY: the scheduler would refuse
    for job_id, nodes, walltime in candidates:
        if request.nodes is not None and nodes > request.nodes:
            continue  # bigger than asked for: left READY
        minutes = request.walltime or (math.ceil(walltime) + DIRECT_MARGIN if walltime
                                       else request.default_walltime)
        if minutes is None:
            raise UsageError(f"job {job_id} has no walltime: give --walltime for direct mode")
        # the queue's node-count walltime bins apply to each job as to a pilot
        queue, problem = plan.site.spec.fit_queue(plan.queue or plan.extras.get("qos"),
                                                  not plan.queue_given, nodes, float(minutes))
        if problem:
            why = f"job {job_id}: queue {queue!r} of site {plan.site.name!r} {problem}"
            refused.append((nodes, float(minutes), why))
            continue
        row = _new_row(scope, plan, request, nodes, float(minutes), plan.queue and queue)
        sent = dispatch_ready_jobs(scope.db, scope.sid, plan.site, limit=1, area_root=scope.area.root,
                                   target=PoolTarget(pool_of(row), row.id, job_ids=(job_id,)))
        if not sent:
            set_state(row, BatchState.SUBMIT_FAILED, "its job was not READY any more")
            continue
        rows.append(row)
    if not rows:
        raise UsageError(f"no READY job on site {plan.site.name!r} to submit in direct mode"
                         + (f" with tags {request.tags}" if request.tags else "")
                         + "".join(f"; {why}" for *_, why in refused[:3]))
    if spool.delivers_later:
        spool.deliver()  # the bundles must be on the site before the batch jobs start
    unfit = [_new_row(scope, plan, request, nodes, minutes) for nodes, minutes, _ in refused]
    for row, (*_, why) in zip(unfit, refused, strict=True):
        set_state(row, BatchState.SUBMIT_FAILED, why)  # shown, and its job stays READY
    return rows, unfit


def _submit_row(scope: SiteScope, plan: _Plan, transport: Transport, row: BatchJob,
                pool: str | None) -> None:
    """Render, write and submit one batch job's script; record the id or the failure."""
    site, scheduler = plan.site, plan.scheduler
    folder = batch_dir(site)
    script_path = f"{folder}/{row.id}.sh"
    idle = DIRECT_IDLE_EXIT if row.mode == "direct" else plan.idle_exit
    request = ScriptRequest(
        job_name=batch_job_name(site.workdir, row.id), nodes=row.nodes,
        walltime_minutes=max(1, math.ceil(row.walltime)), queue=row.queue,
        account=row.account, batch_dir=folder, output=f"{folder}/{row.id}.out",
        exit_file=f"{folder}/{row.id}.exit",
        agent_argv=pilot_argv(scope, row.id, pool, idle), extras=plan.extras,
        env=dict(site.spec.template.env), preamble=list(site.spec.template.preamble),
        allocation=site.spec.pilot)
    try:
        text = render_script(site.scheduler, request)
        transport.write_bytes_atomic(script_path, text.encode("utf-8"), 0o700)
        with write_transaction(scope.db):  # from here on, the scheduler may have it
            BatchJob.update(message=SUBMITTING).where(BatchJob.id == row.id).execute()
        argv = scheduler.submit_argv(script_path)
        stdin = text.encode("utf-8") if scheduler.submit_stdin else None
        result = transport.run(argv, stdin=stdin, timeout=SUBMIT_TIMEOUT)
        if not result.ok:
            raise EnvironmentProblem(f"{argv[0]} refused the batch job: "
                                     f"{last_line(result.stderr_text, result.code)}")
        scheduler_id = scheduler.parse_submit(result.stdout_text)
    except (MegarunError, OSError) as exc:
        set_state(row, BatchState.SUBMIT_FAILED, _reason(exc))
        return
    fault_point("batch:after-submit")  # the scheduler has it; the database not yet
    with write_transaction(scope.db):
        BatchJob.update(state=BatchState.QUEUED.value, scheduler_id=scheduler_id,
                        submitted=time.time(), message="").where(BatchJob.id == row.id).execute()


def _take_back_failed(scope: SiteScope, rows: Sequence[BatchJob]) -> None:
    """The jobs dispatched for direct batch jobs that could not be submitted go back to READY."""
    failed = [f"bj{row.id}" for row in rows
              if BatchJob.get_by_id(row.id).state == BatchState.SUBMIT_FAILED.value]
    if failed:
        return_to_ready(scope, failed, "its batch job could not be submitted")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"cannot write the batch script: {exc.strerror or exc}"
    return str(exc)


# -- cancelling ------------------------------------------------------------------------------
def cancel(scope: SiteScope, batch_id: int,
           reason: str = "cancelled by megarun queue rm") -> BatchJobRow:
    """Cancel a batch job of the site: scheduler cancel when it was submitted; then `cancelled`."""
    site, row = scope.site, settled_row(scope, batch_id)
    if row.state not in OPEN_STATES:
        raise UsageError(f"batch job {batch_id} is {row.state}: nothing to cancel")
    if row.scheduler_id:
        scheduler = get_scheduler(site.scheduler)
        result = transport_for(site).run(scheduler.cancel_argv([row.scheduler_id]),
                                        timeout=STATUS_TIMEOUT)
        if not result.ok:
            raise EnvironmentProblem(f"cannot cancel batch job {batch_id} "
                                     f"({row.scheduler_id}): "
                                     f"{last_line(result.stderr_text, result.code)}")
    with write_transaction(scope.db):
        set_state(row, BatchState.CANCELLED, reason)
    after_end(scope, [BatchJob.get_by_id(batch_id)])
    return as_row(BatchJob.get_by_id(batch_id), site.name)

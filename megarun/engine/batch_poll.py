"""Batch jobs seen from the scheduler: polled, ended, and their unclaimed jobs taken back.

One scheduler status command serves all of a site's open batch jobs; a batch job gone from the
queue is judged by the exit-code file its script writes. The jobs still waiting in the pool of
a batch job that ended go back to READY. Submitting and cancelling are megarun.engine.batch;
this module is what the site cycle needs of batch jobs each time round, so the cycle does not
load the submission side.
"""

from __future__ import annotations

import getpass
import json
import time
from dataclasses import dataclass, field
from typing import Any

from megarun.core.lifecycle import Chain
from megarun.core.states import JobState
from megarun.db.connection import write_transaction
from megarun.db.jobstore import load_rows, save_rows
from megarun.db.models import BatchJob
from megarun.db.transitions import apply_chain
from megarun.engine.dispatch import PoolTarget
from megarun.engine.scope import SiteScope
from megarun.errors import EnvironmentProblem
from megarun.schedulers import get_scheduler
from megarun.schedulers.base import BatchState, QueueEntry
from megarun.sites.connect import transport_for
from megarun.sites.registry import SiteInfo
from megarun.transport.base import Transport

OPEN_STATES = (BatchState.PENDING_SUBMISSION.value, BatchState.QUEUED.value,
               BatchState.RUNNING.value)
ACTIVE_STATES = (BatchState.QUEUED.value, BatchState.RUNNING.value)
STATUS_TIMEOUT = 120.0
#: How the message of a batch job the scheduler holds pending for ever starts.
NEVER_RUNS = "can never run as asked"
#: The message of a batch job found again by its name after its submitter was killed
#: (engine/submissions.py); kept while it is queued or running, so `queue ls` tells.
ADOPTED = "adopted: found by its name after megarun was stopped while submitting it"


@dataclass
class PollResult:
    """What one poll of a site's batch jobs did."""

    status_commands: int = 0
    changed: dict[int, str] = field(default_factory=dict)  # batch id -> new state
    ended: set[int] = field(default_factory=set)  # batch ids that ended in this poll
    returned: int = 0  # jobs taken back from the pools of ended batch jobs


def batch_dir(site: SiteInfo) -> str:
    return f"{site.workdir}/batch"


def pool_of(row: BatchJob) -> str | None:
    """A direct or tagged pilot batch job has its own pool; a plain pilot uses the shared one."""
    if row.mode == "direct" or json.loads(row.tags or "{}"):
        return f"bj{row.id}"
    return None


def return_to_ready(scope: SiteScope, pools: list[str] | None, message: str) -> int:
    """Take the unclaimed bundles (of `pools` only, "" naming the shared queue) back; their
    jobs, still QUEUED in that attempt, become READY. Returns how many."""
    taken = dict(scope.spool().take_back_queue(pools))
    if not taken:
        return 0
    db = scope.db
    count = 0
    with write_transaction(db):
        rows = load_rows(db, taken)
        for row in rows.values():
            if row.snapshot.state is JobState.QUEUED and taken[row.id] == row.snapshot.attempt:
                apply_chain(row, Chain(row.snapshot).to(JobState.READY, message=message))
                count += 1
        save_rows(db, rows.values())
    return count


def set_state(row: BatchJob, state: BatchState, message: str) -> None:
    now = time.time()
    ended = now if state in (BatchState.SUBMIT_FAILED, BatchState.FINISHED,
                             BatchState.CANCELLED) else None
    BatchJob.update(state=state.value, message=message, ended=ended).where(
        BatchJob.id == row.id).execute()


def last_line(text: str, code: int) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit code {code}"


def open_batch_jobs(scope: SiteScope) -> list[BatchJob]:
    return list(BatchJob.select().where(
        (BatchJob.site == scope.sid) & BatchJob.state.in_(ACTIVE_STATES)
    ).order_by(BatchJob.id))


def has_open(scope: SiteScope) -> bool:
    """Whether the site has a batch job being submitted, queued or running."""
    return bool(BatchJob.select(BatchJob.id).where(
        (BatchJob.site == scope.sid) & BatchJob.state.in_(OPEN_STATES)
    ).limit(1).count())


def poll_site(scope: SiteScope) -> PollResult:
    """One scheduler status command for all of the site's open batch jobs, then their new
    states; a batch job gone from the queue is judged by its exit-code file."""
    result = PollResult()
    site = scope.site
    rows = [row for row in open_batch_jobs(scope) if row.scheduler_id]
    if not rows:
        return result
    scheduler = get_scheduler(site.scheduler)
    transport = transport_for(site)
    argv = scheduler.status_argv(batch_user(site), [str(row.scheduler_id) for row in rows])
    result.status_commands += 1
    answer = transport.run(argv, timeout=STATUS_TIMEOUT)
    if scheduler.status_failed(answer.code, answer.stderr_text):
        raise EnvironmentProblem(f"site {site.name!r}: {argv[0]} failed: "
                                 f"{last_line(answer.stderr_text, answer.code)}",
                                 "the batch jobs are polled again at the next sync")
    entries = scheduler.parse_status(answer.stdout_text)
    ended = []
    for row in rows:
        entry = entries.get(str(row.scheduler_id))
        new_state = _apply_entry(scope, transport, row, entry)
        if new_state is not None:
            result.changed[row.id] = new_state.value
            if new_state in (BatchState.FINISHED, BatchState.CANCELLED):
                result.ended.add(row.id)
                ended.append(BatchJob.get_by_id(row.id))
    if ended:
        result.returned = after_end(scope, ended)
    return result


def _apply_entry(scope: SiteScope, transport: Transport, row: BatchJob,
                 entry: QueueEntry | None) -> BatchState | None:
    """Record what the status command showed of one batch job; return its new state."""
    now = time.time()
    if entry is not None and entry.state in (BatchState.QUEUED, BatchState.RUNNING):
        message = ""
        if entry.never_runs:
            message = (f"{NEVER_RUNS}: the scheduler holds it pending "
                       f"({entry.reason}); cancel it with: megarun queue rm {row.id}")
        elif entry.reason and entry.state is BatchState.QUEUED:
            message = f"pending: {entry.reason}"
        if row.message.startswith(ADOPTED):
            message = f"{ADOPTED}; {message}" if message else ADOPTED
        changes: dict[Any, Any] = {BatchJob.native: entry.native, BatchJob.message: message}
        if entry.state is BatchState.RUNNING and row.started is None:
            changes[BatchJob.started] = now
        if entry.state.value != row.state:
            changes[BatchJob.state] = entry.state.value
        with write_transaction(scope.db):
            BatchJob.update(changes).where(BatchJob.id == row.id).execute()
        return entry.state if entry.state.value != row.state else None
    # finished, cancelled, or gone from the queue: the exit-code file decides
    code = read_exit_code(transport, f"{batch_dir(scope.site)}/{row.id}.exit")
    state, message = _judge_end(entry, code)
    with write_transaction(scope.db):
        BatchJob.update(state=state.value, exit_code=code, message=message, ended=now,
                        native=entry.native if entry is not None else "gone").where(
            BatchJob.id == row.id).execute()
    return state


def _judge_end(entry: QueueEntry | None, code: int | None) -> tuple[BatchState, str]:
    """Never assume success: without an exit-code file the batch job did not end cleanly."""
    if entry is not None and entry.state is BatchState.CANCELLED:
        return BatchState.CANCELLED, f"cancelled ({entry.native})"
    if code is None:
        seen = f"the scheduler says {entry.native}" if entry is not None else "gone from the queue"
        return BatchState.FINISHED, (f"{seen} and the script wrote no exit code (killed, "
                                     "or out of walltime)")
    if code != 0:
        return BatchState.FINISHED, f"the batch script exited with code {code}"
    return BatchState.FINISHED, ""


def read_exit_code(transport: Transport, path: str) -> int | None:
    try:
        text = transport.read_bytes(path).decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def after_end(scope: SiteScope, ended: list[BatchJob]) -> int:
    """Jobs left unclaimed in the pools of ended batch jobs go back to READY. The shared
    queue is taken back too when no plain pilot is left to take from it."""
    pools = [pool for row in ended if (pool := pool_of(row)) is not None]
    plain_left = any(pool_of(row) is None and row.mode == "pilot"
                     for row in open_batch_jobs(scope))
    if any(pool_of(row) is None for row in ended) and not plain_left:
        pools.append("")
    if not pools:
        return 0
    return return_to_ready(scope, pools, "its batch job ended before it started")


def batch_user(site: SiteInfo) -> str | None:
    """The login name batch jobs are submitted as (for the status command's filter); None
    when ssh's own configuration decides it."""
    if site.host:
        return site.host.split("@", 1)[0] if "@" in site.host else None
    return getpass.getuser()


def active_pools(scope: SiteScope) -> list[PoolTarget]:
    """Where READY jobs of a batch site may go now: the shared queue while a plain pilot is
    open, and the pool of each open tagged pilot (direct pools are filled at submission)."""
    targets: list[PoolTarget] = []
    shared = False
    for row in BatchJob.select().where(
            (BatchJob.site == scope.sid) & BatchJob.state.in_(ACTIVE_STATES)
            & (BatchJob.mode == "pilot")).order_by(BatchJob.id):
        tags = json.loads(row.tags or "{}")
        if tags:
            targets.append(PoolTarget(f"bj{row.id}", row.id, tags=tags))
        elif not shared:
            shared = True
            targets.append(PoolTarget(None))
    return targets

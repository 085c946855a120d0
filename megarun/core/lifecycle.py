"""Pure job lifecycle: apply a change to a job snapshot and get back the transitions to record.

Services load `JobSnapshot`s, call these functions, then write the resulting job rows and one
event row per `Transition` in a single database transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from megarun.core.states import (
    GOOD_STATUSES,
    RETRYABLE_STATUSES,
    STATUS_ON_ENTRY,
    JobState,
    JobStatus,
    is_legal,
)
from megarun.errors import IllegalTransition


@dataclass(frozen=True)
class JobSnapshot:
    """What the state machine needs to know about one job."""

    id: int
    state: JobState
    status: JobStatus = JobStatus.NA
    attempt: int = 0  # dispatch number: grows at every READY -> QUEUED, tags spool events
    runs: int = 0  # how many times the job really started
    max_attempts: int = 1  # 1 + retries


@dataclass(frozen=True)
class Transition:
    """One recorded state change: becomes an event row."""

    job_id: int
    src: JobState
    dst: JobState
    status: JobStatus
    attempt: int
    message: str = ""
    data: dict[str, Any] | None = field(default=None)


def transition(
    job: JobSnapshot,
    dst: JobState,
    status: JobStatus | None = None,
    message: str = "",
    data: dict[str, Any] | None = None,
) -> tuple[JobSnapshot, Transition]:
    """Move `job` to `dst`; raise IllegalTransition when the table does not allow it."""
    if not is_legal(job.state, dst):
        raise IllegalTransition(
            f"job {job.id}: {job.state.value} -> {dst.value} is not allowed"
        )
    new_status = status if status is not None else STATUS_ON_ENTRY.get(dst, job.status)
    attempt = job.attempt + 1 if dst is JobState.QUEUED else job.attempt
    runs = job.runs + 1 if dst is JobState.RUNNING else job.runs
    moved = JobSnapshot(job.id, dst, new_status, attempt, runs, job.max_attempts)
    record = Transition(job.id, job.state, dst, new_status, attempt, message, data)
    return moved, record


class Chain:
    """Applies several transitions to one job and collects their records."""

    def __init__(self, job: JobSnapshot) -> None:
        self.job = job
        self.records: list[Transition] = []

    def to(
        self,
        dst: JobState,
        status: JobStatus | None = None,
        message: str = "",
        data: dict[str, Any] | None = None,
    ) -> Chain:
        self.job, record = transition(self.job, dst, status, message, data)
        self.records.append(record)
        return self

    def retry_if_allowed(self) -> Chain:
        """Send a job that ended badly back to READY while it has attempts left."""
        if should_retry(self.job):
            left = self.job.max_attempts - self.job.runs
            self.to(JobState.READY, message=f"retry ({left} attempt(s) left)")
        return self


def should_retry(job: JobSnapshot) -> bool:
    """True when a job that just ended may run again by itself."""
    ended = job.state in (JobState.COMPLETED, JobState.DEAD)
    return ended and job.status in RETRYABLE_STATUSES and job.runs < job.max_attempts


def status_from_exit(reason: str, rc: int | None) -> JobStatus:
    """The outcome of an agent's `finished` event."""
    if reason == "timeout":
        return JobStatus.TIMEOUT
    if reason == "killed":
        return JobStatus.ABORT
    if reason == "exit" and rc == 0:
        return JobStatus.PASS
    return JobStatus.FAIL


def finish(job: JobSnapshot, reason: str, rc: int | None, message: str = "",
           judged: JobStatus | None = None, step: int | None = None) -> Chain:
    """Record the end of a run reported by an agent (any active state), with automatic retry.

    `judged` is the status the job's rules gave a job that exited (see docs/writing-tests.md);
    `step` the index of the step it ended in, kept in the event's data (megarun.core.steps).
    """
    chain = Chain(job)
    if reason == "killed":
        if job.state is not JobState.KILLREQ:
            chain.to(JobState.KILLREQ, message="kill requested")
        return chain.to(JobState.KILLED, JobStatus.ABORT, message or "killed")
    status = judged if judged is not None and reason == "exit" else status_from_exit(reason, rc)
    if job.state is JobState.QUEUED:
        chain.to(JobState.LAUNCHED)
    if chain.job.state is JobState.LAUNCHED:
        # It failed before it could start (e.g. no space for its logs): that uses up a run too,
        # or a job that can never start would be retried forever.
        chain.job = replace(chain.job, runs=chain.job.runs + 1)
    data: dict[str, Any] = {"rc": rc, "reason": reason}
    if step is not None:
        data["step"] = step
    chain.to(JobState.COMPLETED, status, message, data)
    return chain.retry_if_allowed()


def give_back(job: JobSnapshot, message: str) -> Chain:
    """A job an agent handed back unfinished (its allocation ended): READY again.

    A run it had started does not count against its attempts; a pending kill ends it KILLED.
    """
    chain = Chain(job)
    if job.state is JobState.KILLREQ:
        return chain.to(JobState.KILLED, JobStatus.ABORT, message or "killed")
    uncounted = job.runs - 1 if job.state is JobState.RUNNING and job.runs > 0 else job.runs
    chain.to(JobState.READY, message=message)
    chain.job = replace(chain.job, runs=uncounted)
    return chain


def mark_dead(job: JobSnapshot, message: str) -> Chain:
    """A started job whose agent vanished: DEAD, retried while attempts remain."""
    return Chain(job).to(JobState.DEAD, JobStatus.DEAD, message).retry_if_allowed()


def parents_outcome(parents: list[tuple[JobState, JobStatus]],
                    modes: list[str] | None = None) -> str:
    """Decide a waiting child's fate from its parents' (state, status): 'ready', 'wait', 'failed'.

    Retries happen at once (a failed job with attempts left is already READY again), so a parent
    that sits in an ended state with a bad outcome has failed for good and fails the child.
    `modes` gives each link's waiton mode: "normal" needs a good status, "toplevel" only needs
    the parent to have ended for good, however (see `link_outcome`).
    """
    outcomes = [link_outcome(state, status, _mode(modes, index))
                for index, (state, status) in enumerate(parents)]
    if "failed" in outcomes:
        return "failed"
    return "wait" if "wait" in outcomes else "ready"


def failed_parent(parents: list[tuple[JobState, JobStatus]],
                  modes: list[str] | None = None) -> int | None:
    """The index of the first parent that fails the child (see `parents_outcome`), or None."""
    for index, (state, status) in enumerate(parents):
        if link_outcome(state, status, _mode(modes, index)) == "failed":
            return index
    return None


def link_outcome(state: JobState, status: JobStatus, mode: str = "normal") -> str:
    """What one parent means for its child: 'ready', 'wait' or 'failed'.

    A "toplevel" child (a report) runs once the parent ended for good, whatever the outcome:
    COMPLETED, KILLED, DEAD (a DEAD job with attempts left is READY again already) or DELETED;
    it never fails for its parents. A parent that is READY, running or STALE (to be rerun)
    may still change, so the child waits.
    """
    if mode == "toplevel":
        return "ready" if state in ENDED_FOR_GOOD_STATES else "wait"
    if state is JobState.COMPLETED and status in GOOD_STATUSES:
        return "ready"
    return "failed" if state in ENDED_FOR_GOOD_STATES else "wait"


def _mode(modes: list[str] | None, index: int) -> str:
    return modes[index] if modes is not None else "normal"


def prerequisite_failed_message(label: str, state: JobState, status: JobStatus) -> str:
    """The message of a job that ends PREQ_FAIL: it names the prerequisite that did not pass.

    `label` names the prerequisite ("build/-", "unit/1" or "job 12"); the outcome shown is its
    status when it completed, else its state (KILLED, DEAD, DELETED).
    """
    outcome = status.value if state is JobState.COMPLETED else state.value
    return f"prerequisite {label} did not pass ({outcome})"


#: States a parent does not leave by itself: it ended for good (well or badly).
ENDED_FOR_GOOD_STATES = frozenset(
    {JobState.COMPLETED, JobState.KILLED, JobState.DEAD, JobState.DELETED}
)

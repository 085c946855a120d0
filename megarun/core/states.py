"""Job STATE (the lifecycle) and STATUS (the outcome), and the one table of legal transitions.

Pure domain: no I/O. Every state change in megarun goes through `transition()` (or the
bulk helpers built on it in `megarun.core.lifecycle`); an illegal change raises.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class JobState(str, Enum):
    """Where a job is in its life."""

    CREATED = "CREATED"
    AWAITING_PARENTS = "AWAITING_PARENTS"
    READY = "READY"
    QUEUED = "QUEUED"
    LAUNCHED = "LAUNCHED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    KILLREQ = "KILLREQ"
    KILLED = "KILLED"
    DEAD = "DEAD"
    STALE = "STALE"
    DELETED = "DELETED"
    ARCHIVED = "ARCHIVED"


class JobStatus(str, Enum):
    """How a job ended, best to worst: a roll-up takes the worst (highest rank)."""

    NA = "n/a"
    PASS = "PASS"
    SKIP = "SKIP"
    WAIVED = "WAIVED"
    WARN = "WARN"
    CHECK = "CHECK"
    FAIL = "FAIL"
    TIMEOUT = "TIMEOUT"
    PREQ_FAIL = "PREQ_FAIL"
    DEAD = "DEAD"
    ABORT = "ABORT"

    @property
    def rank(self) -> int:
        return _STATUS_ORDER.index(self)


_STATUS_ORDER = list(JobStatus)

S = JobState

#: Every legal (from -> to). Anything else raises IllegalTransition.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.CREATED: frozenset({S.READY, S.AWAITING_PARENTS, S.COMPLETED, S.DELETED}),
    S.AWAITING_PARENTS: frozenset({S.READY, S.COMPLETED, S.KILLED, S.DELETED, S.STALE}),
    S.READY: frozenset({S.QUEUED, S.AWAITING_PARENTS, S.KILLED, S.DELETED, S.STALE}),
    S.QUEUED: frozenset({S.LAUNCHED, S.READY, S.KILLREQ, S.KILLED, S.COMPLETED}),
    S.LAUNCHED: frozenset({S.RUNNING, S.READY, S.KILLREQ, S.KILLED, S.DEAD, S.COMPLETED}),
    S.RUNNING: frozenset({S.COMPLETED, S.KILLREQ, S.KILLED, S.DEAD, S.READY}),
    S.KILLREQ: frozenset({S.KILLED, S.COMPLETED, S.DEAD, S.READY}),
    S.COMPLETED: frozenset({S.READY, S.STALE, S.ARCHIVED, S.DELETED}),
    S.KILLED: frozenset({S.READY, S.ARCHIVED, S.DELETED}),
    S.DEAD: frozenset({S.READY, S.ARCHIVED, S.DELETED}),
    S.STALE: frozenset({S.READY, S.ARCHIVED, S.DELETED}),
    S.DELETED: frozenset(),
    S.ARCHIVED: frozenset({S.COMPLETED, S.KILLED, S.DEAD, S.STALE}),
}

#: States in which a job is held by an agent or a scheduler.
ACTIVE_STATES = frozenset({S.QUEUED, S.LAUNCHED, S.RUNNING, S.KILLREQ})
#: States that wait for something megarun itself does (dispatch, parents).
WAITING_STATES = frozenset({S.CREATED, S.AWAITING_PARENTS, S.READY})
#: States after which nothing happens without a user asking for it.
FINAL_STATES = frozenset({S.COMPLETED, S.KILLED, S.DEAD, S.STALE, S.DELETED, S.ARCHIVED})
#: Final states of a job that still counts in its run (neither deleted nor archived).
ENDED_STATES = FINAL_STATES - {S.DELETED, S.ARCHIVED}
#: States of the jobs that weigh on a site: waiting for its dispatch, or held there.
SITE_LOAD_STATES = ACTIVE_STATES | {S.READY}

#: Outcomes that let children (waiton "normal", --after) go ahead.
GOOD_STATUSES = frozenset({JobStatus.PASS, JobStatus.WARN, JobStatus.WAIVED, JobStatus.SKIP})
#: Outcomes that are retried while attempts remain.
RETRYABLE_STATUSES = frozenset({JobStatus.FAIL, JobStatus.TIMEOUT, JobStatus.DEAD})
#: Outcomes that make `megarun run` exit 1.
FAILING_STATUSES = frozenset(
    {JobStatus.FAIL, JobStatus.TIMEOUT, JobStatus.ABORT, JobStatus.DEAD, JobStatus.PREQ_FAIL}
)

#: Status a job carries when it enters a state, where the state decides it.
STATUS_ON_ENTRY: dict[JobState, JobStatus] = {
    S.READY: JobStatus.NA,
    S.AWAITING_PARENTS: JobStatus.NA,
    S.QUEUED: JobStatus.NA,
    S.KILLED: JobStatus.ABORT,
    S.DEAD: JobStatus.DEAD,
}


def names(states: Iterable[JobState | JobStatus]) -> tuple[str, ...]:
    """The names of `states`, sorted: SQL parameters, and keys of counts read from the db."""
    return tuple(sorted(s.value for s in states))


def sql_list(states: Iterable[JobState | JobStatus]) -> str:
    """`'A', 'B'`: the names of `states` as SQL string literals, for SQL text such as
    `state IN (...)` (enum values only: nothing from outside reaches SQL this way)."""
    return ", ".join(f"'{name}'" for name in names(states))


def is_legal(src: JobState, dst: JobState) -> bool:
    """True when a job may go from `src` to `dst`."""
    return dst in TRANSITIONS[src]


def parse_state(name: str) -> JobState:
    """A JobState from its name, any case; raises ValueError listing the valid names."""
    try:
        return JobState(name.upper())
    except ValueError:
        valid = ", ".join(s.value for s in JobState)
        raise ValueError(f"unknown state {name!r}; valid states: {valid}") from None


def parse_status(name: str) -> JobStatus:
    """A JobStatus from its name, any case; raises ValueError listing the valid names."""
    for status in JobStatus:
        if status.value.lower() == name.lower() or status.name.lower() == name.lower():
            return status
    valid = ", ".join(s.value for s in JobStatus)
    raise ValueError(f"unknown status {name!r}; valid statuses: {valid}")


def worst_status(statuses: list[JobStatus]) -> JobStatus:
    """The roll-up of several outcomes: the worst one wins; n/a when there are none."""
    if not statuses:
        return JobStatus.NA
    return max(statuses, key=lambda s: s.rank)

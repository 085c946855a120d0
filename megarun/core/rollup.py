"""How the items of a test, or of a whole run, roll up to one word and a count per kind.

`status`, `run`, `runs ls`, the live board and `archive ls` all show roll-ups; the rules live
here once (docs/concepts.md, "Roll-up"):

1. An item that has not ended (CREATED, AWAITING_PARENTS, READY, QUEUED, LAUNCHED, RUNNING,
   KILLREQ) is counted by its STATE; an item that ended (COMPLETED, KILLED, DEAD, STALE,
   ARCHIVED) by its STATUS.
2. While any item has not ended, the roll-up is RUNNING: work still going or waiting is never
   shown as PASS (nor as a final FAIL); the counts say what is known so far.
3. Otherwise the roll-up is the worst status (the order of `JobStatus`), except that PREQ_FAIL
   ranks below every other failing status: a headline names the failure that caused the others
   (`FAIL (1 FAIL, 3 PREQ_FAIL)`), not the items that could not run because of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from megarun.core.states import ACTIVE_STATES, WAITING_STATES, JobState, JobStatus

#: The roll-up of a test or run with items that have not ended yet.
RUNNING = JobState.RUNNING.value

#: States of an item that has not ended, the furthest along first (the order counts are shown).
UNFINISHED_STATES = tuple(
    state for state in reversed(list(JobState)) if state in ACTIVE_STATES | WAITING_STATES
)


def headline_rank(status: JobStatus) -> float:
    """A status's weight in a roll-up: its rank, with PREQ_FAIL just below FAIL (rule 3)."""
    if status is JobStatus.PREQ_FAIL:
        return JobStatus.FAIL.rank - 0.5
    return float(status.rank)


def count_key(state: JobState, status: JobStatus) -> str:
    """What an item counts as (rule 1): its state while unfinished, else its status."""
    return state.value if state in UNFINISHED_STATES else status.value


def count_items(items: Iterable[tuple[JobState, JobStatus, int]]) -> dict[str, int]:
    """Counts of (state, status, how many) by `count_key`: unfinished states first (furthest
    along first), then statuses worst first."""
    counts: dict[str, int] = {}
    for state, status, number in items:
        key = count_key(state, status)
        counts[key] = counts.get(key, 0) + number
    return dict(sorted(counts.items(), key=lambda entry: _order(entry[0])))


def rollup_status(counts: Mapping[str, int]) -> str:
    """The one word for counts made by `count_items` (rules 2 and 3); n/a for no items."""
    if any(key in _UNFINISHED_NAMES for key in counts):
        return RUNNING
    if not counts:
        return JobStatus.NA.value
    return max((JobStatus(key) for key in counts), key=headline_rank).value


def headline(counts: Mapping[str, int]) -> str:
    """The roll-up with its counts, as `status` prints it: `FAIL (1 FAIL, 3 PREQ_FAIL, 2 PASS)`."""
    if not counts:
        return rollup_status(counts)
    parts = ", ".join(f"{number} {key}" for key, number in counts.items())
    return f"{rollup_status(counts)} ({parts})"


_UNFINISHED_NAMES = {state.value: index for index, state in enumerate(UNFINISHED_STATES)}


def _order(key: str) -> tuple[int, float]:
    if key in _UNFINISHED_NAMES:
        return 0, _UNFINISHED_NAMES[key]
    return 1, -headline_rank(JobStatus(key))

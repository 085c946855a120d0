"""Per-step results of many jobs, read from the database in one query per 500 jobs.

`status --json`, `job show` and the JUnit export all call `job_steps`: it reads each job's row
with the events of its current attempt only (a handful per job, however often it was retried)
and derives the steps with megarun.core.steps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from peewee import SqliteDatabase

from megarun.core.states import JobState, JobStatus
from megarun.core.steps import JobFacts, StepEvent, StepResult, derive_steps, step_names
from megarun.db.jobstore import chunks

_QUERY = (
    "SELECT job.id, job.steps, job.state, job.status, job.exit_code, job.started, job.ended, "  # noqa: S608
    "event.from_state, event.to_state, event.status, event.time, event.data "
    "FROM job LEFT JOIN event ON event.job = job.id AND event.attempt = job.attempt "
    # a hand-over to an agent (-> LAUNCHED) says nothing of the steps: a quarter of the rows
    f"AND event.to_state != '{JobState.LAUNCHED.value}' "
    "WHERE job.id IN ({marks}) ORDER BY job.id, event.id"
)

# Enum lookups by value, and the events whose `data` derive_steps reads (step notes, ends): a
# status of 10,000 jobs makes 30,000 of these rows, and Enum calls and json.loads dominated it.
_STATES = {state.value: state for state in JobState}
_STATUSES = {status.value: status for status in JobStatus}
_DATA_READ = frozenset({JobState.COMPLETED, JobState.KILLED, JobState.DEAD})


def job_steps(db: SqliteDatabase, job_ids: Iterable[int],
              now: float | None = None) -> dict[int, list[StepResult]]:
    """Each job's steps (missing ids are absent), in step order."""
    moment = time.time() if now is None else now
    found: dict[int, list[StepResult]] = {}
    for part in chunks(sorted(set(job_ids))):
        sql = _QUERY.format(marks=",".join("?" * len(part)))
        rows: dict[int, tuple[list[str], JobFacts, list[StepEvent], int]] = {}
        shapes: dict[str | None, tuple[list[str], int]] = {}  # a test's items share steps
        for values in db.execute_sql(sql, tuple(part)):
            _add_row(rows, shapes, values)
        for job_id, (names, facts, events, first) in rows.items():
            found[job_id] = derive_steps(names, facts, events, moment, first)
    return found


def _add_row(rows: dict[int, tuple[list[str], JobFacts, list[StepEvent], int]],
             shapes: dict[str | None, tuple[list[str], int]], values: tuple[Any, ...]) -> None:
    (job_id, steps, state, status, exit_code, started, ended,
     from_state, to_state, event_status, event_time, data) = values
    if job_id not in rows:
        if steps not in shapes:
            shapes[steps] = _shape(steps)
        names, kept = shapes[steps]
        rows[job_id] = (names, JobFacts(_STATES[state], _STATUSES[status], exit_code, started,
                                        ended), [], kept)
    if to_state is None:
        return  # no event in this attempt (LEFT JOIN)
    before, after = _STATES[from_state], _STATES[to_state]
    read = before is after or after in _DATA_READ
    rows[job_id][2].append(StepEvent(before, after, _STATUSES[event_status], float(event_time),
                                     _data(data) if read else {}))


def _shape(steps: str | None) -> tuple[list[str], int]:
    """A job's step names and how many a `rerun --step` keeps (megarun.campaign.rerun_step)."""
    parsed = json.loads(steps) if steps else None
    return step_names(parsed), sum(1 for step in parsed or [] if step.get("keep"))


def _data(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

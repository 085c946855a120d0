"""Per-step results of a job, derived from its event trail (pure: no I/O).

The agent reports when each step after the first starts (a `step` event) and how the job
ended; ingest keeps each step start as a note in the event table (`step_note`: same state
before and after, so it is no transition). From a job's row and the events of its current
attempt, `derive_steps` tells each step's state, status, exit code and duration, which
`status --json`, `job show` and the JUnit export show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from megarun.core.lifecycle import JobSnapshot, Transition
from megarun.core.states import JobState, JobStatus


class StepState(str, Enum):
    """Where one step of a job's latest run is."""

    NOT_STARTED = "NOT_STARTED"  # not reached (yet): the job waits, or an earlier step ended it
    # a step that ran is named as the job is: the same word in `job steps` and `job show`
    RUNNING = JobState.RUNNING.value
    COMPLETED = JobState.COMPLETED.value  # exited; its status says how
    KILLED = JobState.KILLED.value
    DEAD = JobState.DEAD.value  # its agent vanished while it ran
    KEPT = "KEPT"  # not run again by a `rerun --step`: its outputs from an earlier run stay


@dataclass(frozen=True)
class StepResult:
    """One step as `status --json` and `job show` show it."""

    name: str
    state: StepState
    status: JobStatus
    exit_code: int | None
    duration: float | None  # seconds; so far, for a running step

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state.value, "status": self.status.value,
                "exit_code": self.exit_code,
                "duration": None if self.duration is None else round(self.duration, 3)}


@dataclass(frozen=True)
class StepEvent:
    """What derive_steps needs of one event row of the job's current attempt (id order)."""

    from_state: JobState
    to_state: JobState
    status: JobStatus
    time: float
    data: dict[str, Any]

    @property
    def is_step_note(self) -> bool:
        return self.from_state is self.to_state and "step" in self.data


@dataclass(frozen=True)
class JobFacts:
    """The job row's columns derive_steps reads."""

    state: JobState
    status: JobStatus
    exit_code: int | None
    started: float | None
    ended: float | None


#: Transitions after which a job's latest run is over and a new one is to come.
_WAITS_AGAIN = frozenset({JobState.READY, JobState.AWAITING_PARENTS, JobState.QUEUED})
_ENDS = {JobState.COMPLETED: StepState.COMPLETED, JobState.KILLED: StepState.KILLED,
         JobState.DEAD: StepState.DEAD}


def step_note(job: JobSnapshot, name: str, started: float) -> Transition:
    """The event row recording that step `name` started at `started` (agent's clock)."""
    return Transition(job.id, job.state, job.state, job.status, job.attempt,
                      f"step {name!r} started", {"step": name, "t": started})


def step_names(steps_json: Sequence[dict[str, Any]] | None) -> list[str]:
    """The names of a job's steps as the agent names them (an app job has one: `job`)."""
    if not steps_json:
        return ["job"]
    return [str(step.get("name") or f"step{index + 1}") for index, step in enumerate(steps_json)]


def not_started(names: Sequence[str]) -> list[StepResult]:
    return [StepResult(name, StepState.NOT_STARTED, JobStatus.NA, None, None) for name in names]


def derive_steps(names: Sequence[str], job: JobFacts, events: Sequence[StepEvent],
                 now: float, first: int = 0) -> list[StepResult]:
    """Each step of the job's latest run: those before the last one started passed (a step
    that fails ends the job), the last one started carries the run's end, the rest did not
    start. A job waiting to run (again) shows every step NOT_STARTED. A run made by
    `rerun --step` started at step `first`: the steps before it are KEPT."""
    run = _latest_run(events)
    if run is None:
        return not_started(names)
    starts = _step_starts(names, job, run, first)
    end = next((e for e in run if not e.is_step_note and e.to_state in _ENDS), None)
    last = _last_index(names, starts, end)
    results = []
    for index, name in enumerate(names):
        if index < first:
            results.append(StepResult(name, StepState.KEPT, JobStatus.NA, None, None))
        elif index < last:
            duration = _between(starts.get(index), starts.get(index + 1))
            results.append(StepResult(name, StepState.COMPLETED, JobStatus.PASS, 0, duration))
        elif index == last:
            results.append(_last_step(name, job, end, starts.get(index), now))
        else:
            results.append(StepResult(name, StepState.NOT_STARTED, JobStatus.NA, None, None))
    return results


def _last_index(names: Sequence[str], starts: dict[int, float], end: StepEvent | None) -> int:
    """The index of the last step the run reached."""
    reported = end.data.get("step") if end is not None and not end.is_step_note else None
    if isinstance(reported, int) and not isinstance(reported, bool) and 0 <= reported < len(names):
        return reported  # the agent says where the job ended
    if end is not None and end.to_state is JobState.COMPLETED and end.data.get("rc") == 0:
        return len(names) - 1  # a run that exited 0 went through every step
    return max(starts)


def _latest_run(events: Sequence[StepEvent]) -> list[StepEvent] | None:
    """The events from the last start of the job on, or None when it waits to run again."""
    starts = [i for i, e in enumerate(events) if e.to_state is JobState.RUNNING
              and not e.is_step_note]
    if not starts:
        return None
    run = list(events[starts[-1]:])
    if any(e.to_state in _WAITS_AGAIN for e in run):
        return None
    return run


def _step_starts(names: Sequence[str], job: JobFacts, run: list[StepEvent],
                 first: int = 0) -> dict[int, float]:
    """When each step started: the run's first (step `first`) when the job started, the
    others from their notes."""
    begun = job.started if job.started is not None else run[0].time
    starts = {first: begun}
    notes = [e for e in run if e.is_step_note]
    for offset, note in enumerate(notes[:len(names) - 1 - first]):
        started = note.data.get("t")
        starts[first + offset + 1] = (float(started) if isinstance(started, int | float)
                                      else note.time)
    return starts


def _last_step(name: str, job: JobFacts, end: StepEvent | None, started: float | None,
               now: float) -> StepResult:
    if end is None:  # still running (or being killed)
        return StepResult(name, StepState.RUNNING, JobStatus.NA, None, _between(started, now))
    ended = job.ended if job.ended is not None else end.time
    rc = end.data.get("rc") if end.to_state is JobState.COMPLETED else job.exit_code
    code = rc if isinstance(rc, int) and not isinstance(rc, bool) else None
    if end.to_state is JobState.DEAD:
        code = None
    return StepResult(name, _ENDS[end.to_state], end.status, code, _between(started, ended))


def _between(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, end - start)


def failing_step(steps: Sequence[StepResult]) -> StepResult | None:
    """The step that ended the job badly (the last one that ran, when it was killed, died or
    exited with a status that is not good), or None."""
    ran = [s for s in steps if s.state not in (StepState.NOT_STARTED, StepState.KEPT)]
    if not ran or ran[-1].state is StepState.RUNNING:
        return None
    last = ran[-1]
    good = (JobStatus.PASS, JobStatus.WARN, JobStatus.WAIVED, JobStatus.SKIP)
    if last.state is StepState.COMPLETED and last.status in good:
        return None
    return last

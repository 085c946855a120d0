"""Per-step results derived from a job's event trail (megarun.core.steps, pure)."""

from __future__ import annotations

from typing import Any

from megarun.core.states import JobState, JobStatus
from megarun.core.steps import (
    JobFacts,
    StepEvent,
    StepState,
    derive_steps,
    failing_step,
    step_names,
)

S = JobState
NAMES = ["build", "check", "report"]


def ev(src: JobState, dst: JobState, time: float, status: JobStatus = JobStatus.NA,
       **data: Any) -> StepEvent:
    return StepEvent(src, dst, status, time, data)


def note(name: str, t: float) -> StepEvent:
    return ev(S.RUNNING, S.RUNNING, t + 100, step=name, t=t)  # row time: when ingested


RUN = [ev(S.READY, S.QUEUED, 1), ev(S.QUEUED, S.LAUNCHED, 1), ev(S.LAUNCHED, S.RUNNING, 2)]


def rows(steps: list[Any]) -> list[tuple[str, str, str, int | None, float | None]]:
    return [(s.name, s.state.value, s.status.value, s.exit_code, s.duration) for s in steps]


def test_a_run_failing_in_its_second_step() -> None:
    events = [*RUN, note("check", 5.0),
              ev(S.RUNNING, S.COMPLETED, 120, JobStatus.FAIL, rc=3, reason="exit", step=1)]
    job = JobFacts(S.COMPLETED, JobStatus.FAIL, 3, started=2.0, ended=9.5)
    steps = derive_steps(NAMES, job, events, now=1000)
    assert rows(steps) == [("build", "COMPLETED", "PASS", 0, 3.0),
                           ("check", "COMPLETED", "FAIL", 3, 4.5),
                           ("report", "NOT_STARTED", "n/a", None, None)]
    failing = failing_step(steps)
    assert failing is not None and failing.name == "check"


def test_a_running_job_shows_its_current_step_with_the_time_so_far() -> None:
    job = JobFacts(S.RUNNING, JobStatus.NA, None, started=2.0, ended=None)
    steps = derive_steps(NAMES, job, [*RUN, note("check", 5.0)], now=7.0)
    assert rows(steps) == [("build", "COMPLETED", "PASS", 0, 3.0),
                           ("check", "RUNNING", "n/a", None, 2.0),
                           ("report", "NOT_STARTED", "n/a", None, None)]
    assert failing_step(steps) is None


def test_a_passed_run_and_rules_that_gave_warn() -> None:
    events = [*RUN, note("check", 3.0), note("report", 4.0),
              ev(S.RUNNING, S.COMPLETED, 120, JobStatus.WARN, rc=0, reason="exit", step=2)]
    job = JobFacts(S.COMPLETED, JobStatus.WARN, 0, started=2.0, ended=6.0)
    steps = derive_steps(NAMES, job, events, now=1000)
    assert [(s.state, s.status, s.exit_code) for s in steps] == [
        (StepState.COMPLETED, JobStatus.PASS, 0), (StepState.COMPLETED, JobStatus.PASS, 0),
        (StepState.COMPLETED, JobStatus.WARN, 0)]
    assert failing_step(steps) is None


def test_a_job_waiting_to_run_again_shows_no_step_started() -> None:
    events = [*RUN, ev(S.RUNNING, S.COMPLETED, 120, JobStatus.FAIL, rc=1, reason="exit", step=0),
              ev(S.COMPLETED, S.READY, 120, message="retry")]
    job = JobFacts(S.READY, JobStatus.NA, 1, started=2.0, ended=3.0)
    assert {s.state for s in derive_steps(NAMES, job, events, now=1000)} == {
        StepState.NOT_STARTED}
    assert derive_steps(NAMES, job, [], now=1000)[0].state is StepState.NOT_STARTED


def test_a_dead_job_and_a_killed_one() -> None:
    dead = derive_steps(NAMES, JobFacts(S.DEAD, JobStatus.DEAD, None, 2.0, None),
                        [*RUN, ev(S.RUNNING, S.DEAD, 50, JobStatus.DEAD)], now=1000)
    assert rows(dead)[0] == ("build", "DEAD", "DEAD", None, 48.0)
    killed = derive_steps(NAMES, JobFacts(S.KILLED, JobStatus.ABORT, -15, 2.0, 4.0),
                          [*RUN, ev(S.RUNNING, S.KILLREQ, 3), note("check", 3.5),
                           ev(S.KILLREQ, S.KILLED, 4, JobStatus.ABORT)], now=1000)
    assert rows(killed)[1] == ("check", "KILLED", "ABORT", -15, 0.5)
    assert failing_step(killed) is not None


def test_events_of_an_older_megarun_without_step_notes() -> None:
    """A run that exited 0 went through every step, even when no step start was recorded."""
    events = [*RUN, ev(S.RUNNING, S.COMPLETED, 9, JobStatus.PASS, rc=0, reason="exit")]
    steps = derive_steps(NAMES, JobFacts(S.COMPLETED, JobStatus.PASS, 0, 2.0, 9.0), events, 1000)
    assert [s.state for s in steps] == [StepState.COMPLETED] * 3
    assert [s.duration for s in steps] == [None, None, None]  # unknown, never made up


def test_step_names_as_the_agent_names_them() -> None:
    assert step_names(None) == ["job"]
    assert step_names([{"name": "a", "cmd": "x"}, {"cmd": "y"}]) == ["a", "step2"]


def test_a_run_from_a_later_step_keeps_the_earlier_ones() -> None:
    # rerun --step check: the run starts at "check" (index 1), "build" is kept
    events = [*RUN, note("report", 6.0),
              ev(S.RUNNING, S.COMPLETED, 120, JobStatus.FAIL, rc=2, reason="exit", step=2)]
    job = JobFacts(S.COMPLETED, JobStatus.FAIL, 2, started=2.0, ended=7.0)
    steps = derive_steps(NAMES, job, events, now=1000, first=1)
    assert rows(steps) == [("build", "KEPT", "n/a", None, None),
                           ("check", "COMPLETED", "PASS", 0, 4.0),
                           ("report", "COMPLETED", "FAIL", 2, 1.0)]
    failing = failing_step(steps)
    assert failing is not None and failing.name == "report"
    running = derive_steps(NAMES, JobFacts(S.RUNNING, JobStatus.NA, None, 2.0, None), RUN,
                           now=3.0, first=1)
    assert [s.state for s in running] == [StepState.KEPT, StepState.RUNNING,
                                          StepState.NOT_STARTED]

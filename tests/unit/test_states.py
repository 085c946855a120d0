"""The job state machine: every legal transition works, every other one raises."""

from __future__ import annotations

import itertools

import pytest

from megarun.core.lifecycle import (
    Chain,
    JobSnapshot,
    finish,
    mark_dead,
    parents_outcome,
    should_retry,
    transition,
)
from megarun.core.states import (
    TRANSITIONS,
    JobState,
    JobStatus,
    parse_state,
    parse_status,
    worst_status,
)
from megarun.errors import IllegalTransition

ALL_PAIRS = list(itertools.product(JobState, JobState))
LEGAL = [(a, b) for a, b in ALL_PAIRS if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in ALL_PAIRS if b not in TRANSITIONS[a]]


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(JobState)
    assert len(LEGAL) + len(ILLEGAL) == len(JobState) ** 2
    assert len(LEGAL) > 30


@pytest.mark.parametrize(("src", "dst"), LEGAL, ids=lambda s: s.value)
def test_legal_transition_is_recorded(src: JobState, dst: JobState) -> None:
    job = JobSnapshot(7, src, attempt=2, runs=1)
    moved, record = transition(job, dst, message="why")
    assert moved.state is dst
    assert (record.job_id, record.src, record.dst, record.message) == (7, src, dst, "why")
    assert record.status is moved.status
    assert moved.attempt == (3 if dst is JobState.QUEUED else 2)
    assert moved.runs == (2 if dst is JobState.RUNNING else 1)


@pytest.mark.parametrize(("src", "dst"), ILLEGAL, ids=lambda s: s.value)
def test_illegal_transition_raises(src: JobState, dst: JobState) -> None:
    with pytest.raises(IllegalTransition, match=f"{src.value} -> {dst.value}"):
        transition(JobSnapshot(1, src), dst)


def test_entering_states_sets_status() -> None:
    job = JobSnapshot(1, JobState.RUNNING, JobStatus.NA)
    assert transition(job, JobState.DEAD)[0].status is JobStatus.DEAD
    killreq = transition(job, JobState.KILLREQ)[0]
    assert transition(killreq, JobState.KILLED)[0].status is JobStatus.ABORT
    done = JobSnapshot(1, JobState.COMPLETED, JobStatus.FAIL)
    assert transition(done, JobState.READY)[0].status is JobStatus.NA


def test_finish_pass_has_no_retry() -> None:
    job = JobSnapshot(1, JobState.RUNNING, runs=1, max_attempts=3)
    chain = finish(job, "exit", 0)
    assert [r.dst for r in chain.records] == [JobState.COMPLETED]
    assert chain.job.status is JobStatus.PASS


@pytest.mark.parametrize(("reason", "rc", "status"), [
    ("exit", 1, JobStatus.FAIL), ("timeout", None, JobStatus.TIMEOUT),
    ("error", None, JobStatus.FAIL),
])
def test_failure_retries_while_attempts_remain(reason: str, rc: int | None,
                                                status: JobStatus) -> None:
    job = JobSnapshot(1, JobState.RUNNING, runs=1, max_attempts=2)
    chain = finish(job, reason, rc)
    assert [(r.dst, r.status) for r in chain.records] == [
        (JobState.COMPLETED, status), (JobState.READY, JobStatus.NA)]
    last = JobSnapshot(1, JobState.RUNNING, runs=2, max_attempts=2)
    chain = finish(last, reason, rc)
    assert chain.job.state is JobState.COMPLETED and chain.job.status is status


def test_killed_is_never_retried() -> None:
    job = JobSnapshot(1, JobState.RUNNING, runs=1, max_attempts=5)
    chain = finish(job, "killed", None)
    assert [r.dst for r in chain.records] == [JobState.KILLREQ, JobState.KILLED]
    assert chain.job.status is JobStatus.ABORT
    assert not should_retry(chain.job)


def test_dead_retries_then_stays_dead() -> None:
    job = JobSnapshot(1, JobState.RUNNING, runs=1, max_attempts=2)
    assert mark_dead(job, "lost").job.state is JobState.READY
    final = mark_dead(JobSnapshot(1, JobState.RUNNING, runs=2, max_attempts=2), "lost")
    assert (final.job.state, final.job.status) == (JobState.DEAD, JobStatus.DEAD)


def test_finish_from_queued_passes_through_launched() -> None:
    chain = finish(JobSnapshot(1, JobState.QUEUED, attempt=1), "error", None, "no space")
    assert [r.dst for r in chain.records] == [JobState.LAUNCHED, JobState.COMPLETED]
    assert chain.records[-1].message == "no space"


def test_chain_refuses_illegal_step_and_keeps_job() -> None:
    chain = Chain(JobSnapshot(1, JobState.READY))
    with pytest.raises(IllegalTransition):
        chain.to(JobState.RUNNING)
    assert chain.job.state is JobState.READY and chain.records == []


@pytest.mark.parametrize(("parents", "expected"), [
    ([], "ready"),
    ([(JobState.COMPLETED, JobStatus.PASS), (JobState.COMPLETED, JobStatus.WARN)], "ready"),
    ([(JobState.COMPLETED, JobStatus.PASS), (JobState.RUNNING, JobStatus.NA)], "wait"),
    ([(JobState.READY, JobStatus.NA), (JobState.COMPLETED, JobStatus.FAIL)], "failed"),
    ([(JobState.KILLED, JobStatus.ABORT)], "failed"),
    ([(JobState.DEAD, JobStatus.DEAD)], "failed"),
    ([(JobState.DELETED, JobStatus.NA)], "failed"),
])
def test_parents_outcome(parents: list[tuple[JobState, JobStatus]], expected: str) -> None:
    assert parents_outcome(parents) == expected


def test_worst_status_and_parsing() -> None:
    assert worst_status([JobStatus.PASS, JobStatus.WARN, JobStatus.SKIP]) is JobStatus.WARN
    assert worst_status([JobStatus.FAIL, JobStatus.ABORT]) is JobStatus.ABORT
    assert worst_status([]) is JobStatus.NA
    assert parse_state("running") is JobState.RUNNING
    assert parse_status("preq_fail") is JobStatus.PREQ_FAIL
    with pytest.raises(ValueError, match="valid states"):
        parse_state("FAILED")
    with pytest.raises(ValueError, match="valid statuses"):
        parse_status("GREAT")

"""Roll-up rules (megarun.core.rollup) and the waiton rules they sit beside (toplevel links)."""

from __future__ import annotations

import pytest

from megarun.core.lifecycle import failed_parent, parents_outcome, prerequisite_failed_message
from megarun.core.rollup import count_items, headline, rollup_status
from megarun.core.states import JobState, JobStatus

S, T = JobState, JobStatus


def counts(*items: tuple[JobState, JobStatus]) -> dict[str, int]:
    return count_items((state, status, 1) for state, status in items)


def test_unfinished_items_roll_up_running_with_counts_never_pass() -> None:
    mixed = counts((S.COMPLETED, T.PASS), (S.RUNNING, T.NA), (S.READY, T.NA),
                   (S.COMPLETED, T.PASS))
    assert rollup_status(mixed) == "RUNNING"
    assert headline(mixed) == "RUNNING (1 RUNNING, 1 READY, 2 PASS)"
    assert rollup_status(counts((S.COMPLETED, T.FAIL), (S.AWAITING_PARENTS, T.NA))) == "RUNNING"


def test_the_root_cause_heads_the_roll_up_before_preq_fail() -> None:
    ended = counts((S.COMPLETED, T.PREQ_FAIL), (S.COMPLETED, T.PASS), (S.COMPLETED, T.FAIL),
                   (S.COMPLETED, T.PREQ_FAIL))
    assert headline(ended) == "FAIL (1 FAIL, 2 PREQ_FAIL, 1 PASS)"
    killed = counts((S.KILLED, T.ABORT), (S.COMPLETED, T.PREQ_FAIL))
    assert headline(killed) == "ABORT (1 ABORT, 1 PREQ_FAIL)"
    assert rollup_status(counts((S.COMPLETED, T.PREQ_FAIL), (S.COMPLETED, T.CHECK))) == "PREQ_FAIL"
    assert rollup_status(counts((S.COMPLETED, T.WARN), (S.STALE, T.PASS))) == "WARN"
    assert headline({}) == "n/a"


@pytest.mark.parametrize(("state", "status", "expected"), [
    (S.COMPLETED, T.FAIL, "ready"),
    (S.KILLED, T.ABORT, "ready"),
    (S.DEAD, T.DEAD, "ready"),
    (S.READY, T.NA, "wait"),  # handed back by an interrupted run: it will run again
    (S.RUNNING, T.NA, "wait"),
    (S.STALE, T.PASS, "wait"),
])
def test_toplevel_link_waits_until_the_prerequisite_ended_for_good(
        state: JobState, status: JobStatus, expected: str) -> None:
    assert parents_outcome([(state, status)], ["toplevel"]) == expected


def test_failed_parent_is_the_first_that_fails_the_child() -> None:
    parents = [(S.COMPLETED, T.PASS), (S.KILLED, T.ABORT), (S.COMPLETED, T.FAIL)]
    assert failed_parent(parents, ["normal"] * 3) == 1
    assert failed_parent(parents, ["normal", "toplevel", "normal"]) == 2
    assert failed_parent(parents, ["toplevel"] * 3) is None
    assert prerequisite_failed_message("build/-", S.COMPLETED, T.FAIL) == (
        "prerequisite build/- did not pass (FAIL)")
    assert prerequisite_failed_message("job 12", S.KILLED, T.ABORT) == (
        "prerequisite job 12 did not pass (KILLED)")

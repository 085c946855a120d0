"""The report's pure judgements: flaky items, failing since, new failures and fixed items, and
the glyph of every state and status (a cell reads without colour)."""

from __future__ import annotations

from dataclasses import replace

from megarun.core.glyphs import GLYPHS, STATUS_GLYPHS, item_glyph, rollup_glyph
from megarun.core.states import JobState, JobStatus
from megarun.report.html.history import failing_since, flips
from megarun.report.html.items import _logs
from megarun.report.html.rundata import Item, RunRow, changes, previous_runs

C = JobState.COMPLETED.value


def item(status: str, state: str = C, name: str = "1") -> Item:
    return Item(id=1, run=1, test="t", item=name, state=state, status=status, attempt=1,
                max_attempts=1, exit_code=None, message="", started=None, ended=None,
                workdir=None, site=None, host=None)


P, F = JobStatus.PASS.value, JobStatus.FAIL.value


def test_flaky_means_two_flips_or_more_between_good_and_failing() -> None:
    assert flips([item(P), item(F), item(P), item(F)]) == 3
    assert flips([item(P), item(P), item(F), item(F)]) == 1  # a regression, not flaky
    assert flips([item(P), None, item(F), None, item(P)]) == 2  # absent runs are skipped
    running = item(JobStatus.NA.value, JobState.RUNNING.value)
    assert flips([item(P), running, item(P)]) == 0  # unfinished results do not count


def test_failing_since_is_where_the_current_failures_began() -> None:
    assert failing_since([item(P), item(F), item(F)]) == 1
    assert failing_since([item(F), item(F)]) == 0
    assert failing_since([item(F), item(P)]) is None
    assert failing_since([item(P), item(F), None, item(F), None]) == 1
    assert failing_since([None, None]) is None


def test_new_failures_and_fixed_are_matched_by_test_and_item() -> None:
    now = [item(F, name="a"), item(F, name="b"), item(P, name="c"), item(F, name="new")]
    before = [item(P, name="a"), item(F, name="b"), item(F, name="c")]
    found = changes(now, before)
    assert [i.item for i in found.new_failures] == ["a", "new"]
    assert [i.item for i in found.fixed] == ["c"]
    preq = item(JobStatus.PREQ_FAIL.value, name="p")
    assert changes([preq], []).new_failures == [preq]


def test_every_state_and_status_has_a_glyph() -> None:
    for state in JobState:
        if state not in (JobState.CREATED, JobState.DELETED, JobState.ARCHIVED):
            assert state.value in GLYPHS, state
    assert set(STATUS_GLYPHS) == {status.value for status in JobStatus}
    assert item_glyph(C, F) == "✗" and item_glyph(C, P) == "✓"
    assert item_glyph(JobState.STALE.value, P) == "~"
    # a KILLED or DEAD item never looks like a FAIL, in a strip of glyphs alone
    killed = item_glyph(JobState.KILLED.value, JobStatus.ABORT.value)
    dead = item_glyph(JobState.DEAD.value, JobStatus.DEAD.value)
    assert len({killed, dead, item_glyph(C, F)}) == 3
    assert rollup_glyph(JobState.RUNNING.value) == "●" and rollup_glyph("MOVED") == "•"


def test_the_logs_of_a_job_on_an_ssh_site_are_named_not_read() -> None:
    remote = replace(item(F), workdir="/scratch/w/1", site="hpc", host="login1")
    assert _logs(remote, [], None) == ([], "on login1 (site hpc) in /scratch/w/1")
    assert _logs(item(F), [], None) == ([], None)  # never dispatched: no logs to speak of


def test_previous_run_is_the_last_one_of_the_same_target_that_did_not_move() -> None:
    def run(run_id: int, target: str, moved: str | None = None) -> RunRow:
        return RunRow(id=run_id, target=target, runname=f"r{run_id}", created=float(run_id),
                      moved_to=moved, jobs=0, counts={}, stale=0, status=P, headline=P,
                      started=None, ended=None, fingerprint="")

    runs = [run(1, "a"), run(2, "b"), run(3, "a", moved="/x"), run(4, "a"), run(5, "b")]
    found = {run_id: (before.id if before else None)
             for run_id, before in previous_runs(runs).items()}
    assert found == {1: None, 2: None, 3: 1, 4: 1, 5: 2}

"""Questions the run commands ask about a run's jobs: how many sit in given states (has the
run ended? are items KILLED?), the run's progress in a few counts (what `status --follow` polls),
and whether a test pattern names tests the run has.

Small functions of the database and a run id, so `status`, `run` and `rerun` share them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from peewee import SqliteDatabase

from megarun.core.rollup import UNFINISHED_STATES, count_items
from megarun.core.states import ENDED_STATES, FAILING_STATUSES, JobState, JobStatus
from megarun.errors import UsageError
from megarun.suites.targets import pattern_matches


def count_in_states(db: SqliteDatabase, run_id: int, states: Collection[JobState],
                    testpatt: str | None = None) -> int:
    """How many of the run's jobs (of the tests `testpatt` selects) are in one of `states`."""
    marks = ",".join("?" * len(states))
    rows = db.execute_sql(f"SELECT test, count(*) FROM job WHERE run_id = ? "  # noqa: S608
                          f"AND state IN ({marks}) GROUP BY test",
                          (run_id, *(s.value for s in states))).fetchall()
    return sum(int(n) for test, n in rows
               if not testpatt or pattern_matches(testpatt.split("/")[0], test or ""))


@dataclass(frozen=True)
class RunProgress:
    """A run's items in counts: enough to follow it, read without loading its rows."""

    counts: dict[str, int]  # the roll-up counts (megarun.core.rollup.count_items)
    jobs: int
    ended: int  # in a final state that counts in the run (COMPLETED, KILLED, DEAD, STALE)
    unfinished: int  # not ended yet: the run goes on while there are any
    failed: int  # with a failing status: `run` and `status` exit 1 once the run ended


_UNFINISHED = frozenset(state.value for state in UNFINISHED_STATES)
_ENDED = frozenset(state.value for state in ENDED_STATES)
_FAILING = frozenset(status.value for status in FAILING_STATUSES)


def run_progress(db: SqliteDatabase, run_id: int, testpatt: str | None = None) -> RunProgress:
    """The run's jobs (of the tests `testpatt` selects) counted by SQL, one row per (test,
    state, status): cheap to ask again and again while the run goes on."""
    rows = db.execute_sql("SELECT test, state, status, count(*) FROM job WHERE run_id = ? "
                          "GROUP BY test, state, status", (run_id,)).fetchall()
    chosen = [(state, status, int(n)) for test, state, status, n in rows
              if not testpatt or pattern_matches(testpatt.split("/")[0], test or "")]
    return RunProgress(
        counts=count_items((JobState(state), JobStatus(status), n) for state, status, n in chosen),
        jobs=sum(n for _, _, n in chosen),
        ended=sum(n for state, _, n in chosen if state in _ENDED),
        unfinished=sum(n for state, _, n in chosen if state in _UNFINISHED),
        failed=sum(n for _, status, n in chosen if status in _FAILING))


def check_run_pattern(db: SqliteDatabase, run_id: int, testpatt: str | None, where: str) -> None:
    """Refuse a test pattern of which a part matches no test of the run `where` names, as `run`
    refuses one that matches no test of the area."""
    if testpatt is None:
        return
    tests = sorted(t for (t,) in db.execute_sql(
        "SELECT DISTINCT test FROM job WHERE run_id = ? AND test IS NOT NULL", (run_id,)))
    patterns = [part.strip() for part in testpatt.split(",") if part.strip()]
    if not patterns:
        raise UsageError("empty test pattern", "use % to select every test")
    for pattern in patterns:
        if not any(pattern_matches(pattern.split("/", 1)[0], test) for test in tests):
            valid = ", ".join(tests) or "none: the run has no jobs"
            raise UsageError(f"test pattern {pattern!r} matches no test of run {where} "
                             f"(its tests: {valid})")

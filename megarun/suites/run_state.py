"""Questions the run commands ask about a run's jobs: how many sit in given states (has the
run ended? are items KILLED?), and whether a test pattern names tests the run has.

Small functions of the database and a run id, so `status`, `run` and `rerun` share them.
"""

from __future__ import annotations

from collections.abc import Collection

from peewee import SqliteDatabase

from megarun.core.states import JobState
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

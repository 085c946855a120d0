"""Test-suite runs, their reporting: each item's state, the roll-up per test and per run, the
list of runs (megarun.core.rollup decides the statuses)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypedDict

from peewee import SqliteDatabase

from megarun.core.rollup import count_items, rollup_status
from megarun.core.states import ENDED_STATES, FAILING_STATUSES, JobState, JobStatus
from megarun.suites.targets import pattern_matches


class TestRollup(TypedDict):
    """One test of a run: job count, counts by state, the roll-up counts and status."""

    jobs: int
    states: dict[str, int]
    counts: dict[str, int]
    status: str


class RunSummary(TypedDict):
    """One run as `runs ls` lists it."""

    target: str
    runname: str
    created: float
    jobs: int
    done: int
    stale: int
    moved_to: str | None
    status: str
    counts: dict[str, int]  # the roll-up counts (megarun.core.rollup)


@dataclass(frozen=True)
class ItemStatus:
    """One job of a run as `status` shows it."""

    id: int
    test: str
    item: str
    state: str
    status: str
    exit_code: int | None
    message: str
    runtime: float | None


def run_items(db: SqliteDatabase, run_id: int, testpatt: str | None = None,
              stale: dict[str, str] | None = None) -> list[ItemStatus]:
    """The run's jobs, by test and item. `stale` (test -> why, megarun.suites.stale): the
    COMPLETED jobs of those tests read STALE with the reason as their message, as `status`
    shows them before `run` or `rerun` writes the mark."""
    rows = db.execute_sql(
        "SELECT id, test, item, state, status, exit_code, message, started, ended FROM job "
        "WHERE run_id = ? ORDER BY test, item", (run_id,)).fetchall()
    changed = stale or {}
    completed = JobState.COMPLETED.value
    items = [ItemStatus(r[0], r[1], r[2] or "", r[3], r[4], r[5], r[6] or "",
                        (r[8] - r[7]) if r[7] and r[8] else None)
             if r[3] != completed or r[1] not in changed else
             ItemStatus(r[0], r[1], r[2] or "", JobState.STALE.value, r[4], r[5], changed[r[1]],
                        (r[8] - r[7]) if r[7] and r[8] else None)
             for r in rows]
    if testpatt:
        items = [i for i in items if pattern_matches(testpatt.split("/")[0], i.test)]
    return items


def rollup(items: Sequence[ItemStatus]) -> dict[str, TestRollup]:
    """Per test: job count, counts by state, the roll-up status and its counts
    (megarun.core.rollup: RUNNING while an item has not ended, else the root cause)."""
    by_test: dict[str, list[ItemStatus]] = {}
    for item in items:
        by_test.setdefault(item.test, []).append(item)
    tests: dict[str, TestRollup] = {}
    for test, its in by_test.items():
        counts = item_counts(its)
        tests[test] = TestRollup(jobs=len(its), states=dict(Counter(i.state for i in its)),
                                 counts=counts, status=rollup_status(counts))
    return tests


def item_counts(items: Sequence[ItemStatus]) -> dict[str, int]:
    """The roll-up counts of items (megarun.core.rollup rule 1)."""
    groups = Counter((i.state, i.status) for i in items)  # few kinds, however many items
    return count_items((JobState(state), JobStatus(status), number)
                       for (state, status), number in groups.items())


def run_failed(items: Sequence[ItemStatus]) -> bool:
    return any(JobStatus(i.status) in FAILING_STATUSES for i in items)


def site_of_run(db: SqliteDatabase, run_id: int) -> str | None:
    row = db.execute_sql("SELECT site.name FROM job JOIN site ON site.id = job.site_id "
                         "WHERE job.run_id = ? LIMIT 1", (run_id,)).fetchone()
    return str(row[0]) if row else None




# -- listing ----------------------------------------------------------------------------------
def list_runs(db: SqliteDatabase, stale: dict[int, set[str]] | None = None,
              target: str | None = None, runname: str | None = None) -> Iterator[RunSummary]:
    """Every run (those whose target and runname match the globs given), oldest first, with
    its job count, how many are done and STALE, and its worst status; read run by run.

    `stale` (megarun.suites.stale.stale_tests_by_run): per run, the tests whose COMPLETED
    jobs count as STALE already, as `status` shows them.
    """
    where = " AND ".join(clause for clause, value in (("run.target GLOB ?", target),
                                                      ("run.runname GLOB ?", runname)) if value)
    cursor = db.execute_sql(
        "SELECT run.id, run.target, run.runname, run.created, job.test, job.state, job.status,"  # noqa: S608
        " count(job.id), run.moved_to FROM run LEFT JOIN job ON job.run_id = run.id"
        f"{' WHERE ' + where if where else ''}"
        " GROUP BY run.id, job.test, job.state, job.status ORDER BY run.created, run.id",
        [value for value in (target, runname) if value])
    stale = stale or {}
    for run_id, groups in itertools.groupby(cursor, key=lambda row: row[0]):
        rows = list(groups)  # one run's (test, state, status) groups
        first = rows[0]
        entry = RunSummary(target=first[1], runname=first[2], created=first[3], jobs=0, done=0,
                           stale=0, moved_to=first[8], status="", counts={})
        counted: list[tuple[JobState, JobStatus, int]] = []
        for *_, test, state, status, count, _moved in rows:
            if state is None:
                continue
            entry["jobs"] += count
            if state in ENDED_STATES:
                entry["done"] += count
            if state == JobState.STALE.value or (state == JobState.COMPLETED.value
                                                 and test in stale.get(run_id, ())):
                entry["stale"] += count
            counted.append((JobState(state), JobStatus(status), count))
        entry["counts"] = count_items(counted)
        entry["status"] = "MOVED" if entry["moved_to"] else rollup_status(entry["counts"])
        yield entry

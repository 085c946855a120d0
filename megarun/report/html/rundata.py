"""What the report's run pages read from the database, in a few grouped queries.

Every run's roll-up and its data fingerprint come from one grouped query each (whatever the
number of runs), so a refresh that finds nothing changed costs two queries and no page.
A fingerprint moves whenever a job of the run is added, removed, retried or changes state
(every state change writes an event, and event ids only grow).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from peewee import SqliteDatabase

from megarun.core.rollup import count_items, headline, rollup_status
from megarun.core.states import ENDED_STATES, FAILING_STATUSES, JobState, JobStatus, names

_ENDED = frozenset(names(ENDED_STATES))
_FAILING = frozenset(names(FAILING_STATUSES))
_COMPLETED = JobState.COMPLETED.value
_STALE = JobState.STALE.value
_STATES = {state.value: state for state in JobState}
_STATUSES = {status.value: status for status in JobStatus}


@dataclass(frozen=True)
class RunRow:
    """One run as the index shows it: its roll-up, counts, times and data fingerprint."""

    id: int
    target: str
    runname: str
    created: float
    moved_to: str | None
    jobs: int
    counts: dict[str, int]
    stale: int  # COMPLETED results whose test changed since (as `status` shows them)
    status: str
    headline: str
    started: float | None
    ended: float | None  # None while an item has not ended
    fingerprint: str

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)


@dataclass(frozen=True)
class Item:
    """One job of a run as its run page and item page show it."""

    id: int
    run: int
    test: str
    item: str
    state: str
    status: str
    attempt: int
    max_attempts: int
    exit_code: int | None
    message: str
    started: float | None
    ended: float | None
    workdir: str | None
    site: str | None
    host: str | None  # None: this machine

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)

    @property
    def failing(self) -> bool:
        return self.state in _ENDED and self.status in _FAILING

    @property
    def good(self) -> bool:
        """Ended and not failing (PASS, WARN, ...): what a fixed item is now."""
        return self.state == _COMPLETED and self.status not in _FAILING


def _where(target: str | None, runname: str | None) -> tuple[str, list[str]]:
    clauses = [clause for clause, value in (("run.target GLOB ?", target),
                                            ("run.runname GLOB ?", runname)) if value]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), \
        [value for value in (target, runname) if value]


def _fingerprints(db: SqliteDatabase) -> dict[int, str]:
    # Per run: jobs, highest job id, attempts, highest event id of its jobs (state changes).
    rows = db.execute_sql(
        "SELECT job.run_id, count(*), max(job.id), total(job.attempt),"
        " max((SELECT max(event.id) FROM event WHERE event.job = job.id))"
        " FROM job WHERE job.run_id IS NOT NULL GROUP BY job.run_id").fetchall()
    return {int(r[0]): f"{r[1]}.{r[2]}.{int(r[3])}.{r[4]}" for r in rows}


def list_runs(db: SqliteDatabase, target: str | None = None, runname: str | None = None,
              stale: Mapping[int, set[str]] | None = None) -> list[RunRow]:
    """Every run (matching the globs), oldest first, with its roll-up and fingerprint.
    `stale` (megarun.suites.stale.stale_tests_by_run): per run, the tests whose COMPLETED
    results are STALE now."""
    where, args = _where(target, runname)
    cursor = db.execute_sql(
        "SELECT run.id, run.target, run.runname, run.created, run.moved_to, job.test,"  # noqa: S608
        " job.state, job.status, count(job.id), min(job.started), max(job.ended)"
        f" FROM run LEFT JOIN job ON job.run_id = run.id{where}"
        " GROUP BY run.id, job.test, job.state, job.status ORDER BY run.created, run.id", args)
    prints = _fingerprints(db)
    grouped: dict[int, list[tuple[object, ...]]] = {}
    for row in cursor:
        grouped.setdefault(int(row[0]), []).append(tuple(row))
    changed = stale or {}
    return [_run_row(rows, prints.get(run_id, "0"), changed.get(run_id, set()))
            for run_id, rows in grouped.items()]


def _run_row(rows: Sequence[tuple[object, ...]], jobs_print: str, stale: set[str]) -> RunRow:
    first = rows[0]
    counted: list[tuple[JobState, JobStatus, int]] = []
    starts: list[float] = []
    ends: list[float] = []
    unfinished = False
    stale_count = 0
    for *_, test, state, status, count, started, ended in rows:
        if state is None:
            continue
        if state == _STALE or (state == _COMPLETED and test in stale):
            stale_count += int(str(count))
        counted.append((_STATES[str(state)], _STATUSES[str(status)], int(str(count))))
        unfinished = unfinished or state not in _ENDED
        if started is not None:
            starts.append(float(str(started)))
        if ended is not None:
            ends.append(float(str(ended)))
    counts = count_items(counted)
    moved = first[4]
    status = "MOVED" if moved else rollup_status(counts)
    fingerprint = f"{jobs_print}|{moved}|{','.join(sorted(stale))}"
    return RunRow(id=int(str(first[0])), target=str(first[1]), runname=str(first[2]),
                  created=float(str(first[3])), moved_to=str(moved) if moved else None,
                  jobs=sum(counts.values()), counts=counts, stale=stale_count, status=status,
                  headline=status if moved else headline(counts),
                  started=min(starts) if starts else None,
                  ended=max(ends) if ends and not unfinished else None, fingerprint=fingerprint)


def run_items(db: SqliteDatabase, run_id: int, stale: set[str] | None = None) -> list[Item]:
    """The run's jobs by test and item, with attempts, times, work dir and site; the
    COMPLETED ones of the tests in `stale` read STALE (keeping their status), as `status`
    shows them."""
    rows = db.execute_sql(
        "SELECT job.id, job.run_id, job.test, job.item, job.state, job.status, job.attempt,"
        " job.max_attempts, job.exit_code, job.message, job.started, job.ended, job.workdir,"
        " site.name, site.host FROM job LEFT JOIN site ON site.id = job.site_id"
        " WHERE job.run_id = ? ORDER BY job.test, job.item, job.id", (run_id,)).fetchall()
    changed = stale or set()
    return [Item(int(r[0]), int(r[1]), str(r[2] or ""), str(r[3] or ""),
                 _STALE if r[4] == _COMPLETED and r[2] in changed else str(r[4]), str(r[5]),
                 int(r[6]), int(r[7]), r[8], str(r[9] or ""), r[10], r[11], r[12], r[13], r[14])
            for r in rows]


def previous_runs(runs: Sequence[RunRow]) -> dict[int, RunRow | None]:
    """Each run's previous run of the same target (`runs` oldest first; a moved run is no
    one's previous run: its jobs are elsewhere), in one pass."""
    last: dict[str, RunRow] = {}
    found: dict[int, RunRow | None] = {}
    for run in runs:
        found[run.id] = last.get(run.target)
        if not run.moved_to:
            last[run.target] = run
    return found


@dataclass(frozen=True)
class Changes:
    """What changed against the previous run of the target: new failures and fixed items."""

    new_failures: list[Item]
    fixed: list[Item]


def changes(items: Iterable[Item], previous: Iterable[Item]) -> Changes:
    """Items failing now that did not fail in `previous` (or were not there), and items good
    now that failed there; matched by (test, item)."""
    before = {(i.test, i.item): i for i in previous}
    new: list[Item] = []
    fixed: list[Item] = []
    for item in items:
        old = before.get((item.test, item.item))
        if item.failing and (old is None or not old.failing):
            new.append(item)
        elif item.good and old is not None and old.failing:
            fixed.append(item)
    return Changes(new, fixed)


def combined(*parts: str) -> str:
    """One fingerprint of several (a page that reads several runs)."""
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:24]

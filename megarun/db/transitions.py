"""Applying state-machine results to the database, and settling children of ended parents."""

from __future__ import annotations

from collections.abc import Iterable

from peewee import SqliteDatabase

from megarun.core.lifecycle import (
    Chain,
    failed_parent,
    parents_outcome,
    prerequisite_failed_message,
)
from megarun.core.states import FINAL_STATES, JobState, JobStatus
from megarun.db.jobstore import JobRow, children_of, load_rows, parents_of


def apply_chain(row: JobRow, chain: Chain) -> None:
    """Copy a chain's outcome onto its row."""
    row.record(chain.job, chain.records)


def ended_ids(rows: Iterable[JobRow]) -> set[int]:
    """Ids of changed rows that now sit in a final state (their children may move)."""
    return {row.id for row in rows if row.changed and row.snapshot.state in FINAL_STATES}


def settle_children(db: SqliteDatabase, rows: dict[int, JobRow], parent_ids: set[int]) -> None:
    """Move children waiting on `parent_ids` to READY, or to COMPLETED/PREQ_FAIL, recursively.

    `rows` is the working set of the current transaction: new rows are added to it, and the
    caller saves every changed row afterwards.
    """
    frontier = set(parent_ids)
    labels: dict[int, str] = {}  # a failed build may fail thousands of children: name it once
    while frontier:
        children = children_of(db, frontier)
        _load_missing(db, rows, children)
        waiting = [c for c in children if rows[c].snapshot.state is JobState.AWAITING_PARENTS]
        parent_map = parents_of(db, waiting)
        _load_missing(db, rows, {p for ps in parent_map.values() for p, _ in ps})
        frontier = set()
        for child in waiting:
            links = parent_map[child]
            parents = [(rows[p].snapshot.state, rows[p].snapshot.status) for p, _ in links]
            outcome = parents_outcome(parents, [mode for _, mode in links])
            if outcome == "ready":
                apply_chain(rows[child], Chain(rows[child].snapshot).to(JobState.READY))
            elif outcome == "failed":
                message = preq_fail_message(db, [(p, rows[p].snapshot.state,
                                                  rows[p].snapshot.status, mode)
                                                 for p, mode in links], labels)
                chain = Chain(rows[child].snapshot).to(
                    JobState.COMPLETED, JobStatus.PREQ_FAIL, message
                )
                apply_chain(rows[child], chain)
                rows[child].message = message
                frontier.add(child)


def preq_fail_message(db: SqliteDatabase, parents: list[tuple[int, JobState, JobStatus, str]],
                      labels: dict[int, str] | None = None) -> str:
    """The PREQ_FAIL message of a child whose parents (id, state, status, waiton mode) fail it:
    it names the first prerequisite that did not pass, by test/item or, for a plain job, id.
    `labels` caches the names already looked up."""
    index = failed_parent([(state, status) for _, state, status, _ in parents],
                          [mode for _, _, _, mode in parents])
    assert index is not None, "asked for the message of a child no parent failed"
    job_id, state, status, _ = parents[index]
    cache = {} if labels is None else labels
    if job_id not in cache:
        cache[job_id] = prerequisite_label(db, job_id)
    return prerequisite_failed_message(cache[job_id], state, status)


def prerequisite_label(db: SqliteDatabase, job_id: int) -> str:
    """How a message names a prerequisite: "test/item" ("-" for no item), or "job N"."""
    row = db.execute_sql("SELECT test, item FROM job WHERE id = ?", (job_id,)).fetchone()
    if row is None or not row[0]:
        return f"job {job_id}"
    return f"{row[0]}/{row[1] or '-'}"


def _load_missing(db: SqliteDatabase, rows: dict[int, JobRow], ids: set[int]) -> None:
    missing = ids - rows.keys()
    if missing:
        rows.update(load_rows(db, missing))

"""`rerun --step NAME`: run a suite job again from one of its steps, in its existing run path.

The steps before NAME are not run again and their outputs stay where they are. The job's
`steps` column (JSON [{name, cmd}]) marks them `"keep": true`; the dispatch sends only the
other steps, and names the kept ones in the spec's `kept_steps` so that the job's pass/fail
rules still read their logs (docs/spool-protocol.md). The marks last for the attempts of that
rerun (its automatic retries too); a reset or rerun without `--step` clears them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from peewee import SqliteDatabase

from megarun.db.connection import execute_many
from megarun.db.jobstore import chunks
from megarun.errors import UsageError


def step_names(steps: list[dict[str, Any]]) -> list[str]:
    return [str(step.get("name", "")) for step in steps]


def check_step(db: SqliteDatabase, job_ids: Sequence[int], step: str) -> None:
    """Refuse a step that a chosen job's test does not have, listing that test's steps."""
    for part in chunks(sorted(set(job_ids))):
        marks = ",".join("?" * len(part))
        sql = f"SELECT DISTINCT test, steps FROM job WHERE id IN ({marks})"  # noqa: S608
        for test, steps in db.execute_sql(sql, tuple(part)):
            names = step_names(json.loads(steps)) if steps else []
            if step not in names:
                what = f"test {test!r}" if test else "a plain job"
                listed = ", ".join(names) if names else "none of its own"
                raise UsageError(f"{what} has no step {step!r}; its steps: {listed}")


def check_step_of_tests(db: SqliteDatabase, run_id: int, tests: Sequence[str], step: str) -> None:
    """check_step for the jobs of these tests of a run (when no job was chosen to rerun)."""
    for test in tests:
        row = db.execute_sql("SELECT id FROM job WHERE run_id = ? AND test = ? LIMIT 1",
                             (run_id, test)).fetchone()
        if row is not None:
            check_step(db, [int(row[0])], step)


def marked_steps(steps: list[dict[str, Any]], first: str | None) -> list[dict[str, Any]]:
    """The steps with those before `first` marked "keep" (no marks when `first` is None)."""
    names = step_names(steps)
    cut = names.index(first) if first is not None else 0
    return [{**{k: v for k, v in s.items() if k != "keep"}, **({"keep": True} if n < cut else {})}
            for n, s in enumerate(steps)]


def set_first_step(db: SqliteDatabase, job_ids: Sequence[int], first: str | None) -> None:
    """Mark where the next attempts of these jobs start; call inside the reset's transaction.

    Only jobs that have (or had) marks are rewritten when clearing: a plain reset of many
    jobs costs one read.
    """
    updates = []
    for part in chunks(sorted(set(job_ids))):
        marks = ",".join("?" * len(part))
        where = "" if first is not None else " AND steps LIKE '%\"keep\"%'"
        sql = (f"SELECT id, steps FROM job WHERE id IN ({marks}) "  # noqa: S608
               f"AND steps IS NOT NULL{where}")
        for job_id, steps in db.execute_sql(sql, tuple(part)):
            updates.append((json.dumps(marked_steps(json.loads(steps), first)), job_id))
    execute_many(db, "UPDATE job SET steps = ? WHERE id = ?", updates)


def spec_steps(steps: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(steps to run, names of the kept steps) of a job's `steps` column for its spool spec."""
    run = [{k: v for k, v in s.items() if k != "keep"} for s in steps if not s.get("keep")]
    kept = [str(s.get("name", "")) for s in steps if s.get("keep")]
    return run, kept

"""Test-suite runs as `megarun status` and `runs ls` read them, for the CLI and the Python API.

One path for both: a run's items (those the area's current files make STALE shown so at once),
their roll-up per test and for the run, each item's steps, and the list of runs. The CLI
prints what these return; megarun.api.area turns them into typed records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from megarun.campaign.steps import job_steps
from megarun.core.rollup import rollup_status
from megarun.core.states import ENDED_STATES, JobState
from megarun.db.models import Run as RunRow
from megarun.errors import ConfigError
from megarun.homehost.context import Context
from megarun.suites.run_prepare import get_run
from megarun.suites.run_report import (
    ItemStatus,
    RunSummary,
    TestRollup,
    item_counts,
    list_runs,
    rollup,
    run_failed,
    run_items,
)
from megarun.suites.stale import (
    AreaDefinitions,
    read_area_definitions,
    stale_in_run,
    stale_tests_by_run,
)

T = TypeVar("T")

#: Told a warning that does not stop the reading (the CLI prints it, the API warns).
Warn = Callable[[str], None]


def find_run(ctx: Context, target: str, runname: str) -> RunRow:
    """The run TARGET/RUNNAME (NotFoundError naming the runs there are; UsageError for a run
    moved to another area)."""
    return get_run(ctx.db, target, runname)


def judged_stale(ctx: Context, judge: Callable[[AreaDefinitions], T], warn: Warn) -> T | None:
    """`judge` applied to the area's current definitions; None, with a warning, when a
    changed test.toml cannot be read (the results as recorded can still be shown)."""
    try:
        area = read_area_definitions(ctx.area.tests_dir, ctx.area.config.raw,
                                     ctx.area.config.keys, ctx.area.root / "megarun.toml")
        return judge(area)
    except ConfigError as exc:  # a test.toml being edited
        warn(f"cannot tell which results are STALE: {exc}")
        return None


def items_of(ctx: Context, run: RunRow, testpatt: str | None, warn: Warn) -> list[ItemStatus]:
    """The run's items, those the area's current files make STALE shown so at once."""
    stale = judged_stale(
        ctx, lambda area: stale_in_run(ctx.db, int(run.id), str(run.target), area), warn)
    return run_items(ctx.db, int(run.id), testpatt, stale)


def item_steps(ctx: Context, job_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each job's steps as `status --json` shows them (megarun.campaign.steps)."""
    return {job_id: [step.as_dict() for step in steps]
            for job_id, steps in job_steps(ctx.db, job_ids).items()}


@dataclass(frozen=True)
class RunReport:
    """A run as `status` shows it: its items, their roll-up per test and for the run."""

    run: RunRow
    items: list[ItemStatus]
    tests: dict[str, TestRollup]
    counts: dict[str, int]
    status: str  # the run's roll-up status (megarun.core.rollup)
    failed: bool  # some item did not pass: `status` and `run` exit 1

    def summary(self) -> RunSummary:
        """The run as `runs ls` lists it, made from these items."""
        done = sum(1 for i in self.items if i.state in ENDED_STATES)
        stale = sum(1 for i in self.items if i.state == JobState.STALE.value)
        return RunSummary(target=str(self.run.target), runname=str(self.run.runname),
                          created=float(self.run.created), jobs=len(self.items), done=done,
                          stale=stale, moved_to=None, status=self.status, counts=self.counts)


def run_report(ctx: Context, run: RunRow, testpatt: str | None, warn: Warn) -> RunReport:
    """The run's items (of the tests `testpatt` matches) rolled up per test and for the run."""
    items = items_of(ctx, run, testpatt, warn)
    counts = item_counts(items)
    return RunReport(run, items, rollup(items), counts, rollup_status(counts), run_failed(items))


def run_summaries(ctx: Context, target: str | None, runname: str | None,
                  warn: Warn) -> Iterator[RunSummary]:
    """Every run whose target and runname match the globs, oldest first, as `runs ls` lists
    it (STALE told from the area's current files)."""
    stale = judged_stale(ctx, lambda area: stale_tests_by_run(ctx.db, area), warn)
    return list_runs(ctx.db, stale, target, runname)


Times = tuple[float | None, float | None]


def run_times(ctx: Context, target: str | None = None,
              runname: str | None = None) -> dict[tuple[str, str], Times]:
    """(first start, last end) of each run's items, by (target, runname), for the runs whose
    target and runname match the globs."""
    where = " AND ".join(clause for clause, value in (("run.target GLOB ?", target),
                                                      ("run.runname GLOB ?", runname)) if value)
    rows = ctx.db.execute_sql(
        "SELECT run.target, run.runname, min(job.started), max(job.ended) FROM run "  # noqa: S608
        f"JOIN job ON job.run_id = run.id{' WHERE ' + where if where else ''} GROUP BY run.id",
        [value for value in (target, runname) if value])
    return {(str(t), str(r)): (started, ended) for t, r, started, ended in rows}


def times_of(ctx: Context, run: RunRow) -> Times:
    """(first start, last end) of one run's items."""
    started, ended = ctx.db.execute_sql("SELECT min(started), max(ended) FROM job "
                                        "WHERE run_id = ?", (int(run.id),)).fetchone()
    return started, ended

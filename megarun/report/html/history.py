"""The report's history page of each target: for each test, its items' results over the last N
runs of the target as a strip of cells (oldest left), the flaky items, and the run where each
item failing now first failed (of those shown).

An item is flaky when its ended results flip between good (PASS, WARN, ...) and failing at
least twice in the strip: one flip is a regression or a fix (the run page's lists), two or
more say the item cannot be trusted. A page is re-rendered only when one of its runs changed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from peewee import SqliteDatabase

from megarun.report.html import urls
from megarun.report.html.inputs import ReportInput
from megarun.report.html.page import Page, render, templates_digest
from megarun.report.html.rundata import Item, RunRow, combined, run_items
from megarun.report.html.runs import cell
from megarun.report.html.site import Keep


@dataclass(frozen=True)
class Strip:
    """One item's results over the runs shown (None: the item was not in that run)."""

    test: str
    item: str
    cells: list[Item | None]
    flips: int
    failing_since: int | None  # index of the run where its current failure began


@dataclass(frozen=True)
class TestHistory:
    """One test's strips."""

    test: str
    strips: list[Strip]


def pages(given: ReportInput) -> Iterator[Page | Keep]:
    by_target: dict[str, list[RunRow]] = {}
    for run in given.runs():
        # every target gets its page (the index links it); a moved run's jobs are elsewhere
        found = by_target.setdefault(run.target, [])
        if not run.moved_to:
            found.append(run)
    for target, runs in by_target.items():
        shown = runs[-given.history:]
        path = urls.history_page(target)
        fingerprint = combined(templates_digest(), str(given.history),
                               *(f"{run.id}:{run.fingerprint}" for run in shown))
        if given.unchanged(f"history:{target}", fingerprint) and given.still_there([path]):
            yield Keep(path)
            continue
        tests = history(given.db, shown, given.stale())
        yield render(path, "history.html", area=given.area.root.name, target=target,
                     runs=shown, tests=tests, run_page=urls.run_page, cell=cell,
                     flaky=[s for t in tests for s in t.strips if s.flips >= 2],
                     failing=[s for t in tests for s in t.strips if s.failing_since is not None])


def history(db: SqliteDatabase, runs: Sequence[RunRow],
            stale: Mapping[int, set[str]]) -> list[TestHistory]:
    """Each test's items over `runs` (oldest first), by test and item name."""
    found: dict[tuple[str, str], list[Item | None]] = {}
    for index, run in enumerate(runs):
        for item in run_items(db, run.id, stale.get(run.id)):
            cells = found.setdefault((item.test, item.item), [None] * len(runs))
            cells[index] = item
    tests: dict[str, list[Strip]] = {}
    for (test, name), cells in sorted(found.items()):
        tests.setdefault(test, []).append(
            Strip(test, name, cells, flips(cells), failing_since(cells)))
    return [TestHistory(test, strips) for test, strips in tests.items()]


def flips(cells: Sequence[Item | None]) -> int:
    """How often the ended results change between good and failing, oldest to newest."""
    outcomes = [c.failing for c in cells if c is not None and (c.failing or c.good)]
    return sum(a != b for a, b in itertools.pairwise(outcomes))


def failing_since(cells: Sequence[Item | None]) -> int | None:
    """The index of the first run of the item's current run of failures (its newest result
    failing); None when its newest result is not a failure."""
    present = [(index, c) for index, c in enumerate(cells) if c is not None]
    if not present or not present[-1][1].failing:
        return None
    since = present[-1][0]
    for index, c in reversed(present):
        if not c.failing:
            break
        since = index
    return since

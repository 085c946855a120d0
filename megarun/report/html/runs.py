"""The report's run pages (the tests x items matrix, the root-cause headline, new failures and
fixed items against the previous run of the target) and item pages (megarun.report.html.items).

A run whose fingerprint (its jobs, their attempts and events, and the previous run's) is the
same as at the last build keeps its run page and item pages as they are: not read, not
rendered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from peewee import SqliteDatabase

from megarun.core.files import private_dirs
from megarun.core.glyphs import item_glyph
from megarun.core.rollup import count_items, headline
from megarun.core.states import JobState, JobStatus
from megarun.report.html import itemprints, urls, workers
from megarun.report.html.inputs import ReportInput
from megarun.report.html.page import Page, render, template, templates_digest
from megarun.report.html.rundata import (
    Item,
    RunRow,
    changes,
    combined,
    previous_runs,
    run_items,
)
from megarun.report.html.site import Keep, Written

#: Up to this many distinct items, a run page draws a true matrix (a column per item); with
#: more, each test's items are a wrapped row of cells.
MATRIX_COLUMNS = 30

_COMPLETED = JobState.COMPLETED.value


@dataclass(frozen=True)
class TestRow:
    """One test of a run page: its items (as cells) and its roll-up."""

    test: str
    headline: str
    status: str
    cells: dict[str, Item]  # item name -> the job


def pages(given: ReportInput) -> Iterator[Page | Keep | Written]:
    runs = given.runs()
    old_pages = _old_pages_by_run(given.old.pages)
    previous = previous_runs(runs)
    for run in runs:
        before = previous[run.id]
        # a run still going: its live logs too (a running step's log grows without an event)
        logs = itemprints.live_logs(given.db, run.id) if run.ended is None else {}
        fingerprint = combined(templates_digest(), run.fingerprint, str(given.folder),
                               f"{before.id}:{before.fingerprint}" if before else "",
                               itemprints.live_stamp(logs))
        kept = old_pages.get(run.id, [])
        if (given.unchanged(f"run:{run.id}", fingerprint) and kept
                and given.still_there(kept)):
            item_prints = given.old.fingerprints.get(itemprints.key(run.id))
            if item_prints is not None:
                given.fingerprints[itemprints.key(run.id)] = item_prints
            yield from (Keep(path) for path in kept)
            continue
        yield from _run_pages(given, run, before, logs)


def _old_pages_by_run(paths: Iterable[str]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for path in paths:  # plain string splits: a refresh reads every page's path
        parts = path.split("/", 2)
        if len(parts) == 3 and parts[0] == "runs" and parts[1].isdigit():
            found.setdefault(int(parts[1]), []).append(path)
    return found


def _run_pages(given: ReportInput, run: RunRow, before: RunRow | None,
               logs: dict[int, str]) -> Iterator[Page | Keep | Written]:
    stale = given.stale()
    items = run_items(given.db, run.id, stale.get(run.id))
    previous = run_items(given.db, before.id, stale.get(before.id)) if before else []
    diff = changes(items, previous)
    tests = tests_of(items)
    columns = sorted({item.item for item in items})
    area = given.area.root.name
    yield render(urls.run_page(run.id), "run.html", area=area, run=run,
                 before=before, tests=tests,
                 columns=columns if len(columns) <= MATRIX_COLUMNS else None,
                 new_failures=diff.new_failures, fixed=diff.fixed, cell=cell,
                 item_page=lambda job_id: _item_link(run.id, job_id),
                 history=urls.history_page(run.target))
    yield from _item_pages(given, run, items, logs)


def _item_pages(given: ReportInput, run: RunRow, items: Sequence[Item],
                logs: dict[int, str]) -> Iterator[Page | Keep | Written]:
    """The run's item pages: kept when their own data did not change, else drawn (by workers
    when there are many)."""
    prints = itemprints.fingerprints(items, itemprints.newest_events(given.db, run.id), logs)
    given.fingerprints[itemprints.key(run.id)] = itemprints.dump(prints)
    before = itemprints.load(given.old.fingerprints, run.id)
    changed = []
    for item in items:
        path = urls.item_page(run.id, item.id)
        if before.get(str(item.id)) == prints[str(item.id)] and given.still_there([path]):
            yield Keep(path)
        else:
            changed.append(item)
    # the item pages' reading of steps, events and logs: only when some are drawn
    from megarun.report.html.items import TAIL_LINES, details

    area = given.area.root.name
    top = given.folder
    folder = top / "runs" / str(run.id) / "items" if top else None

    def item_pages(db: SqliteDatabase, share: Sequence[Item]) -> Iterator[Page]:
        for detail in details(db, share, folder):
            yield render(urls.item_page(run.id, detail.item.id), "item.html", area=area,
                         run=run, detail=detail, cell=cell, tail_lines=TAIL_LINES)

    count = workers.worker_count(len(changed), given.db) if top and folder else 1
    if top is None or folder is None or count < 2:
        yield from item_pages(given.db, changed)
        return
    template("item.html")  # compiled before the fork: every worker has it
    private_dirs(top, folder.parent.parent, folder.parent, folder)
    yield from workers.pages_by_workers(given.db, changed, item_pages, top, given.old, count)


def _item_link(run_id: int, job_id: int) -> str:
    # from runs/<run>/index.html to runs/<run>/items/<job>.html
    return PurePosixPath(urls.item_page(run_id, job_id)).relative_to(
        PurePosixPath(urls.run_page(run_id)).parent).as_posix()


def tests_of(items: Sequence[Item]) -> list[TestRow]:
    """The tests of a run in name order, each with its items and its roll-up headline."""
    by_test: dict[str, list[Item]] = {}
    for item in items:
        by_test.setdefault(item.test, []).append(item)
    rows = []
    for test in sorted(by_test):
        its = by_test[test]
        counts = count_items((JobState(i.state), JobStatus(i.status), 1) for i in its)
        line = headline(counts)
        rows.append(TestRow(test, line, line.split(" ", 1)[0], {i.item: i for i in its}))
    return rows


@dataclass(frozen=True)
class Cell:
    """How one item is drawn: its colour class, glyph, word and a tooltip."""

    css: str
    glyph: str
    word: str
    title: str


def cell(item: Item) -> Cell:
    """An item's cell: coloured by STATUS once COMPLETED (else by STATE) and marked by a glyph
    and a word, so that it reads without colour; a rerun says which attempt it is."""
    from_status = item.state == _COMPLETED
    css = item.status if from_status else item.state
    word = item.status if from_status else item.state
    if item.state == JobState.STALE.value:
        word = f"{item.state} (was {item.status})"
    return Cell(css=css, glyph=item_glyph(item.state, item.status), word=word,
                title=f"{item.test}/{item.item or '-'}: {item.state} {item.status}"
                      f" attempt {item.attempt}")

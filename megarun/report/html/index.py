"""The report's top page: the area's targets and their runs as a tree (as Megatest's index),
newest first, each run with its roll-up, counts per status, start, end, duration and a link;
each target with a link to its history page.

Re-rendered only when a run it shows changed (or one came or went): else kept as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from megarun.report.html import urls
from megarun.report.html.inputs import ReportInput
from megarun.report.html.page import Page, render, templates_digest
from megarun.report.html.rundata import RunRow, combined
from megarun.report.html.site import Keep


@dataclass(frozen=True)
class TargetRuns:
    """One target of the tree: its runs newest first and its history page."""

    target: str
    history: str
    runs: list[RunRow]


def tree(runs: list[RunRow]) -> list[TargetRuns]:
    """Targets by their newest run first, each one's runs newest first."""
    by_target: dict[str, list[RunRow]] = {}
    for run in reversed(runs):  # newest first
        by_target.setdefault(run.target, []).append(run)
    return [TargetRuns(target, urls.history_page(target), found)
            for target, found in by_target.items()]


def pages(given: ReportInput) -> Iterator[Page | Keep]:
    runs = given.runs()
    fingerprint = combined(templates_digest(), given.area.root.name,
                           *(f"{run.id}:{run.fingerprint}" for run in runs))
    if given.unchanged("index", fingerprint) and given.still_there([urls.INDEX]):
        yield Keep(urls.INDEX)
        return
    yield render(urls.INDEX, "index.html", area=given.area.root.name, targets=tree(runs),
                 run_page=urls.run_page)

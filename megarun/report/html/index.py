"""The report's top page: the area's targets and their runs, newest first.

(First cut: the runs as a list; the tree with roll-ups, counts and links comes with the run
pages.)
"""

from __future__ import annotations

from collections.abc import Iterator

from megarun.report.html import urls
from megarun.report.html.inputs import ReportInput
from megarun.report.html.page import Page, render
from megarun.suites.run_report import list_runs


def pages(given: ReportInput) -> Iterator[Page]:
    runs = list(list_runs(given.db, None, given.target, given.runname))
    runs.reverse()  # newest first
    yield render(urls.INDEX, "index.html", area=given.area.root.name, runs=runs)

"""Build the report: run every page producer and write what they give into the folder.

A producer is a function of the build's input giving pages (`Page`) or pages it keeps as they
are (`Keep`: their data fingerprint is the same as last build's, so they are not rendered at
all; that is what makes a refresh with nothing new cheap). Producers record the fingerprints
the next build compares with through `ReportInput.unchanged`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from peewee import SqliteDatabase

from megarun.config.area import Area
from megarun.report.html import batch, campaign, index
from megarun.report.html.inputs import ReportInput
from megarun.report.html.page import Page
from megarun.report.html.site import Keep, WriteResult, prepare_folder, write_site

#: The default folder of the report, under the area's top folder.
DEFAULT_FOLDER = "report"


Producer = Callable[[ReportInput], Iterable[Page | Keep]]

#: Every producer of pages, in the order their pages are written.
PRODUCERS: tuple[Producer, ...] = (index.pages, campaign.pages, batch.pages)


def default_folder(area: Area) -> Path:
    return area.root / DEFAULT_FOLDER


def build_report(db: SqliteDatabase, area: Area, out: Path | None = None, *,
                 target: str | None = None, runname: str | None = None) -> WriteResult:
    """Write (or refresh) the report of `area` into `out` (default: report/ in the area)."""
    folder = out if out is not None else default_folder(area)
    old = prepare_folder(folder)
    given = ReportInput(db=db, area=area, target=target, runname=runname, old=old)
    return write_site(folder, _all_pages(given), old, given.fingerprints)


def _all_pages(given: ReportInput) -> Iterator[Page | Keep]:
    for producer in PRODUCERS:
        yield from producer(given)

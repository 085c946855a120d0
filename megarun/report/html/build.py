"""Build the report: run every page producer and write what they give into the folder.

A producer is a function of the build's input giving pages (`Page`) or pages it keeps as they
are (`Keep`: their data fingerprint is the same as last build's, so they are not rendered at
all; that is what makes a refresh with nothing new cheap). Producers record the fingerprints
the next build compares with through `ReportInput.unchanged`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from peewee import SqliteDatabase

from megarun.config.area import Area
from megarun.errors import UsageError
from megarun.report.html import batch, campaign, index, runs
from megarun.report.html import history as history_pages
from megarun.report.html.inputs import HISTORY_RUNS, ReportInput
from megarun.report.html.page import Page, templates_digest
from megarun.report.html.rundata import combined
from megarun.report.html.site import (
    Keep,
    Manifest,
    WriteResult,
    Written,
    load_manifest,
    prepare_folder,
    write_site,
)

#: The key of the build's options among the manifest's fingerprints.
OPTIONS = "build:options"
#: The key of what every page depends on besides its data: the templates, the area's name and
#: the folder (log links are relative to it). When it moved, no page is kept unrendered.
LOOKS = "build:looks"

#: The default folder of the report, under the area's top folder.
DEFAULT_FOLDER = "report"


Producer = Callable[[ReportInput], Iterable[Page | Keep | Written]]

#: Every producer of pages, in the order their pages are written.
PRODUCERS: tuple[Producer, ...] = (index.pages, runs.pages, history_pages.pages,
                                    campaign.pages, batch.pages)


def default_folder(area: Area) -> Path:
    return area.root / DEFAULT_FOLDER


def build_report(db: SqliteDatabase, area: Area, out: Path | None = None, *,
                 target: str | None = None, runname: str | None = None,
                 history: int = HISTORY_RUNS, manifest: Manifest | None = None) -> WriteResult:
    """Write (or refresh) the report of `area` into `out` (default: report/ in the area;
    `manifest`: its manifest, when the caller read it already)."""
    if history < 1:
        raise UsageError(f"--history must be at least 1 run, not {history}")
    folder = out if out is not None else default_folder(area)
    old = prepare_folder(folder, manifest)
    looks = combined(templates_digest(), area.root.name, str(folder))
    if old.fingerprints.get(LOOKS) != looks:
        old = Manifest(old.pages, {})  # every page rendered again (and rewritten if it differs)
    given = ReportInput(db=db, area=area, target=target, runname=runname, old=old,
                        folder=folder, history=history)
    # the options are kept with the fingerprints: `sync` refreshes the report as it was made
    given.fingerprints[LOOKS] = looks
    given.fingerprints[OPTIONS] = json.dumps(
        {"target": target, "runname": runname, "history": history}, sort_keys=True)
    return write_site(folder, _all_pages(given), old, given.fingerprints)


def refresh_report(db: SqliteDatabase, area: Area) -> WriteResult | None:
    """Refresh the report at the default place with the options it was made with (what `sync`
    does after its cycle); None when there is no report there."""
    folder = default_folder(area)
    manifest = load_manifest(folder)
    if manifest is None:
        return None
    try:
        options = json.loads(manifest.fingerprints.get(OPTIONS, "{}"))
    except ValueError:
        options = {}
    if not isinstance(options, dict):
        options = {}
    history = options.get("history")
    return build_report(db, area, folder, target=_text(options.get("target")),
                        runname=_text(options.get("runname")), manifest=manifest,
                        history=history if isinstance(history, int) and history > 0
                        else HISTORY_RUNS)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _all_pages(given: ReportInput) -> Iterator[Page | Keep | Written]:
    for producer in PRODUCERS:
        yield from producer(given)

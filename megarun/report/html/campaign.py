"""The campaign views of the report: plain jobs (jobs of apps) counted by state and status,
overall and per tag value, app and site, each with its plots of throughput, slot utilization
and durations (campaign_data.py reads, charts.py draws).

Incremental: when the jobs' data fingerprint is the last build's, every campaign page is kept
(`Keep`) without a job read; else every view has its own fingerprint from the one pass over
the jobs, and a view whose fingerprint is the last build's is kept, not drawn again.
"""

from __future__ import annotations

from collections.abc import Iterator

from megarun.report.html import campaign_data, urls
from megarun.report.html.campaign_data import KINDS, View, Views
from megarun.report.html.charts import Drawer
from megarun.report.html.inputs import ReportInput
from megarun.report.html.page import Page, render
from megarun.report.html.site import Keep


def pages(given: ReportInput) -> Iterator[Page | Keep]:
    data = given.campaign()
    kept = given.kept_as_before("campaign:data", data.fingerprint(), urls.CAMPAIGN_FOLDER)
    if kept is not None:
        yield from (Keep(path) for path in kept)
        return
    area = given.area.root.name
    kinds = [data.views(kind) for kind in KINDS]
    totals = data.totals()
    drawer = Drawer(data)
    for group in kinds:
        for view in group.views:
            yield _view_page(given, drawer, area, view)
    index_print = campaign_data.fingerprint(
        totals, [(g.kind, g.more, [(v.name, v.fingerprint) for v in g.views]) for g in kinds])
    if given.unchanged("campaign:index", index_print) and given.still_there([urls.CAMPAIGN]):
        yield Keep(urls.CAMPAIGN)
        return
    yield render(urls.CAMPAIGN, "campaign.html", area=area, counts=totals,
                 states=campaign_data.by_state(totals), groups=[_rows(g) for g in kinds],
                 charts=drawer.charts("all", "all", "campaign"))


def _rows(group: Views) -> dict[str, object]:
    """One table of the index: each view's link, total and counts per state."""
    return {"kind": group.kind, "more": group.more,
            "views": [{"name": v.name, "link": urls.campaign_page(v.kind, v.name),
                       "total": v.total, "states": campaign_data.by_state(v.counts)}
                      for v in group.views]}


def _view_page(given: ReportInput, drawer: Drawer, area: str, view: View) -> Page | Keep:
    path = urls.campaign_page(view.kind, view.name)
    if (given.unchanged(f"campaign:{view.kind}:{view.name}", view.fingerprint)
            and given.still_there([path])):
        return Keep(path)
    return render(path, "campaign_view.html", area=area, view=view,
                  charts=drawer.charts(view.kind, view.name, "view"))

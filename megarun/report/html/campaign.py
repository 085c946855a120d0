"""The campaign views of the report: plain jobs (jobs of apps) counted by state and status,
overall and per tag value, app and site, each with its plots of throughput, slot utilization
and durations (campaign_data.py reads, charts.py draws).

Incremental: every view has a fingerprint from the one grouped query that counts it; a view
whose fingerprint is the last build's is kept (`Keep`), neither queried for plots nor drawn.
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
    area = given.area.root.name
    groups = campaign_data.plain_groups(given.db)
    kinds = [campaign_data.views(given.db, kind, groups) for kind in KINDS]
    totals = campaign_data.totals(given.db, groups)
    drawer = Drawer(given.db, tuple(v.name for v in kinds[0].views))
    for group in kinds:
        for view in group.views:
            yield _view_page(given, drawer, area, view)
    index_print = campaign_data.fingerprint(
        totals, [(g.kind, g.more, [(v.name, v.fingerprint) for v in g.views]) for g in kinds])
    if given.unchanged("campaign:index", index_print):
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
    if given.unchanged(f"campaign:{view.kind}:{view.name}", view.fingerprint):
        return Keep(path)
    return render(path, "campaign_view.html", area=area, view=view,
                  charts=drawer.charts(view.kind, view.name, "view"))

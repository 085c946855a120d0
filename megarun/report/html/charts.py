"""The three plots of each campaign or batch view (throughput, busy/allocated slots,
durations), drawn on the report's shared axes from the one pass over the jobs (jobscan.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from megarun.report.html import grouped
from megarun.report.html.campaign_data import CampaignData
from megarun.report.html.jobscan import Tally


@dataclass(frozen=True)
class Charts:
    """The SVG of each plot, ready to inline (drawn by plots.py: escaped, no script)."""

    throughput: Markup
    utilization: Markup
    durations: Markup


@dataclass
class Drawer:
    """Draws views' plots from the one pass over the jobs (`CampaignData.scan`), made the first
    time a view is drawn."""

    data: CampaignData
    _batches: dict[int, tuple[float, float, float]] | None = None
    _plain: list[tuple[float, float, float]] | None = None
    _all_batches: Tally | None = None

    def charts(self, kind: str, key: Any, prefix: str) -> Charts:
        """The plots of view `key` of `kind`: all, tag, app, site (plain jobs), batch (a batch
        job's, by id), batches (every batch job's; the key of `all` and `batches` is 'all')."""
        from megarun.report import plots  # pygal: only when a plot is drawn

        ax = self.data.axes
        data = self._tally(kind, key).series(ax)
        grouped.allocate(data.alloc_s, ax, self._periods(kind, key))
        return Charts(
            throughput=_inline(plots.throughput_svg(data.throughput(ax), ax.interval,
                                                    f"{prefix}-throughput")),
            utilization=_inline(plots.utilization_svg(data.slots(ax), f"{prefix}-utilization")),
            durations=_inline(plots.durations_svg(data.bins(ax), f"{prefix}-durations")),
        )

    def _tally(self, kind: str, key: Any) -> Tally:
        scan = self.data.scan()
        if kind == "batches":
            if self._all_batches is None:
                self._all_batches = scan.all_batches()
            return self._all_batches
        found = scan.batches.get(key) if kind == "batch" else scan.plain.get((kind, key))
        return found if found is not None else scan.empty()

    def _periods(self, kind: str, key: Any) -> list[tuple[float, float, float]]:
        """The slots allocated to a view: its batch job's; every batch job's; for plain jobs,
        every batch job's and the sites' own slots."""
        ax = self.data.axes
        if self._batches is None:
            self._batches = grouped.batch_periods(self.data.db, ax)
        if kind == "batch":
            return [self._batches[key]] if key in self._batches else []
        if kind == "batches":
            return list(self._batches.values())
        if self._plain is None:
            self._plain = grouped.site_periods(self.data.db, ax, self.data.scan().site_first)
        return [*self._batches.values(), *self._plain]


def _inline(svg: str) -> Markup:
    # The SVG was serialized by ElementTree from pygal's tree (every text escaped, scripts
    # removed): it is markup to insert as it is, not text to escape again.
    return Markup(svg)  # noqa: S704

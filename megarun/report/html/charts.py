"""The three plots of each campaign or batch view (throughput, busy/allocated slots,
durations), drawn on the report's shared axes. A `Drawer` reads each kind of view once (three
grouped queries for all its views: grouped.py), only when a page of that kind is drawn at all;
a build whose views are all kept reads nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from peewee import SqliteDatabase

from megarun.report import plots
from megarun.report.html import grouped
from megarun.report.html.grouped import Axes, Kind, Series

_PLAIN = "j.run_id IS NULL"
_TAG = "t.key || '=' || t.value"
#: The kinds read together in one pass, grouped by app, site and plain (not of a suite run).
_SHARED = ("all", "app", "site")
_BY_GROUP = Kind("coalesce(j.app_id, '') || '/' || coalesce(j.site_id, '')", "job j",
                 "j.run_id IS NULL")


@dataclass(frozen=True)
class Charts:
    """The SVG of each plot, ready to inline (drawn by plots.py: escaped, no script)."""

    throughput: Markup
    utilization: Markup
    durations: Markup


def kind_of(name: str, tags: tuple[str, ...] = ()) -> Kind:
    """The grouped pass of a kind of view: all (plain jobs), tag, app, site, batches (jobs of
    any batch job), batch (per batch job); `tags` names the tag views (key=value)."""
    if name == "tag":
        marks = ",".join("?" * len(tags)) or "NULL"
        return Kind(_TAG, "job_tag t JOIN job j ON j.id = t.job_id",
                    f"{_PLAIN} AND {_TAG} IN ({marks})", tags)
    return {
        "all": Kind("'all'", "job j", _PLAIN),
        "app": Kind("a.name", "job j JOIN app a ON a.id = j.app_id", _PLAIN),
        "site": Kind("s.name", "job j JOIN site s ON s.id = j.site_id", _PLAIN),
        "batches": Kind("'all'", "job j", "j.batch_job_id IS NOT NULL"),
        "batch": Kind("j.batch_job_id", "job j", "j.batch_job_id IS NOT NULL"),
    }[name]


@dataclass
class Drawer:
    """Draws views' plots, reading each kind of view the first time one of them is drawn."""

    db: SqliteDatabase
    tags: tuple[str, ...] = ()  # the tag views of this build
    _axes: Axes | None = None
    _series: dict[str, dict[Any, Series]] = field(default_factory=dict)
    _batches: dict[int, tuple[float, float, float]] | None = None
    _plain: list[tuple[float, float, float]] | None = None
    _split: dict[str, dict[Any, Series]] = field(default_factory=dict)

    @property
    def axes(self) -> Axes:
        if self._axes is None:
            self._axes = grouped.axes(self.db)
        return self._axes

    def charts(self, kind: str, key: Any, prefix: str) -> Charts:
        """The plots of view `key` of `kind` (the key of `all` and `batches` is 'all')."""
        if kind not in self._series:
            self._series[kind] = self._read(kind)
        data = self._series[kind].get(key) or self._empty(kind, key)
        ax = self.axes
        return Charts(
            throughput=_inline(plots.throughput_svg(data.throughput(ax), ax.interval,
                                                    f"{prefix}-throughput")),
            utilization=_inline(plots.utilization_svg(data.slots(ax), f"{prefix}-utilization")),
            durations=_inline(plots.durations_svg(data.bins(ax), f"{prefix}-durations")),
        )

    def _read(self, kind: str) -> dict[Any, Series]:
        if kind == "batches":  # the sum of the batch jobs' views: no pass of its own
            total = Series([0.0] * max(self.axes.buckets, 0))
            if "batch" not in self._series:
                self._series["batch"] = self._read("batch")
            for data in self._series["batch"].values():
                total.add(data)
            found = {"all": total}
        elif kind in _SHARED:
            found = self._shared()[kind]
        else:
            found = grouped.series(self.db, self.axes, kind_of(kind, self.tags))
        for key, data in found.items():
            self._allocate(kind, key, data)
        return found

    def _shared(self) -> dict[str, dict[Any, Series]]:
        """The views of all plain jobs, by app and by site from one grouped pass over the plain
        jobs (keyed by app and site), summed here."""
        if not self._split:
            apps = dict(self.db.execute_sql("SELECT id, name FROM app"))
            sites = dict(self.db.execute_sql("SELECT id, name FROM site"))
            self._split = {name: {} for name in _SHARED}
            for key, data in grouped.series(self.db, self.axes, _BY_GROUP).items():
                app, site = str(key).split("/")
                wanted = [("all", "all"), ("app", apps.get(int(app)) if app else None),
                          ("site", sites.get(int(site)) if site else None)]
                for kind, name in wanted:
                    if name is not None:
                        self._into(self._split[kind], name, data)
        return self._split

    def _into(self, views: dict[Any, Series], name: Any, data: Series) -> None:
        if name not in views:
            views[name] = Series([0.0] * max(self.axes.buckets, 0))
        views[name].add(data)

    def _empty(self, kind: str, key: Any) -> Series:
        data = Series([0.0] * max(self.axes.buckets, 0))
        self._allocate(kind, key, data)
        return data

    def _allocate(self, kind: str, key: Any, data: Series) -> None:
        if self._batches is None:
            self._batches = grouped.batch_periods(self.db, self.axes)
        batches = self._batches
        if kind == "batch":
            periods = [batches[key]] if key in batches else []
        elif kind == "batches":
            periods = list(batches.values())
        else:  # plain jobs: what the campaign had, batch jobs and sites' own slots
            if self._plain is None:
                self._plain = grouped.site_periods(self.db, self.axes, _PLAIN)
            periods = [*batches.values(), *self._plain]
        grouped.allocate(data.alloc_s, self.axes, periods)


def _inline(svg: str) -> Markup:
    # The SVG was serialized by ElementTree from pygal's tree (every text escaped, scripts
    # removed): it is markup to insert as it is, not text to escape again.
    return Markup(svg)  # noqa: S704

"""The plots of many views at once: throughput, busy/allocated slots and durations of every
view of one kind (tag values, apps, sites, batch jobs, or everything) from three grouped
queries, on time and duration axes shared by the whole report (so views compare, and a
million jobs are read a few times in all, not a few times per view).

Busy slot-seconds per time span need no sweep over change points: jobs are grouped by the span
they start in and the span they end in, with the sums of their weights and of weight x start
and weight x end; a group's share of each span follows from those sums exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from peewee import SqliteDatabase

from megarun.core.states import ENDED_STATES
from megarun.report.metrics import Bin, SlotSample, site_slots, utc

BARS = 100  # at most, for throughput (the interval is rounded)
SPANS = 100
DURATION_BINS = 20

_ENDED = ",".join(f"'{s.value}'" for s in sorted(ENDED_STATES))
_WEIGHT = "(CASE WHEN j.node_packing_count > 1 THEN 1.0 / j.node_packing_count ELSE j.nodes END)"
_NICE = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
         7 * 86400, 30 * 86400)


def nice_interval(span_s: float, bars: int = BARS) -> float:
    """The shortest round interval that cuts `span_s` into at most `bars` bars."""
    for interval in _NICE:
        if span_s / interval <= bars:
            return float(interval)
    return float(_NICE[-1] * (int(span_s / (_NICE[-1] * bars)) + 1))


@dataclass(frozen=True)
class Axes:
    """The report's shared axes: throughput buckets, slot time spans, duration bins."""

    first_bucket: int  # index of the first throughput bucket (multiples of interval)
    buckets: int
    interval: float
    start: float  # of the slot spans
    end: float
    duration_low: float
    duration_width: float
    started: bool  # some job started: there are slots to draw

    @property
    def span(self) -> float:
        return (self.end - self.start) / SPANS or 1.0


def axes(db: SqliteDatabase) -> Axes:
    """The axes covering every job that started."""
    (s_min, s_max, e_min, e_max, d_min, d_max) = db.execute_sql(
        f"SELECT min(started), max(coalesce(ended, started)), "  # noqa: S608
        f"min(CASE WHEN state IN ({_ENDED}) THEN ended END), "
        f"max(CASE WHEN state IN ({_ENDED}) THEN ended END), "
        f"min(ended - started), max(ended - started) FROM job WHERE started IS NOT NULL"
    ).fetchone()
    interval = nice_interval((e_max - e_min) if e_min is not None else 0.0)
    # int(a / b), as SQLite's CAST(a / b AS INTEGER) buckets them (not a // b: it rounds apart)
    first = int(e_min / interval) if e_min is not None else 0
    last = int(e_max / interval) if e_max is not None else -1
    low = d_min if d_min is not None else 0.0
    width = ((d_max - low) / DURATION_BINS if d_max is not None else 0.0) or 1.0
    start = s_min if s_min is not None else 0.0
    return Axes(first, last - first + 1, interval, start, s_max if s_max is not None else start,
                low, width, s_min is not None)


@dataclass
class Series:
    """One view's plot data on the shared axes."""

    done: list[float]
    busy_s: list[float] = field(default_factory=lambda: [0.0] * SPANS)
    alloc_s: list[float] = field(default_factory=lambda: [0.0] * SPANS)
    durations: list[int] = field(default_factory=lambda: [0] * DURATION_BINS)

    def add(self, other: Series) -> None:
        """Add another view's jobs to this one's (the allocation is not summed)."""
        for mine, theirs in ((self.done, other.done), (self.busy_s, other.busy_s)):
            for k, value in enumerate(theirs):
                mine[k] += value
        for k, count in enumerate(other.durations):
            self.durations[k] += count

    def throughput(self, ax: Axes) -> list[tuple[Any, float]]:
        return [(utc((ax.first_bucket + k) * ax.interval), n) for k, n in enumerate(self.done)]

    def slots(self, ax: Axes) -> list[SlotSample]:
        width = ax.span
        return [SlotSample(utc(ax.start + k * width), self.busy_s[k] / width,
                           self.alloc_s[k] / width) for k in range(SPANS)] if ax.started else []

    def bins(self, ax: Axes) -> list[Bin]:
        return [Bin(ax.duration_low + k * ax.duration_width,
                    ax.duration_low + (k + 1) * ax.duration_width, n)
                for k, n in enumerate(self.durations)] if any(self.durations) else []


@dataclass(frozen=True)
class Kind:
    """Which views one grouped pass covers: `key` names the view of a row of `source`."""

    key: str
    source: str
    cond: str
    params: tuple[Any, ...] = ()


def series(db: SqliteDatabase, ax: Axes, kind: Kind) -> dict[Any, Series]:
    """Every view's Series (busy, throughput, durations; allocation is added by the caller)."""
    found: dict[Any, Series] = {}

    def of(key: Any) -> Series:
        return found.setdefault(key, Series([0.0] * max(ax.buckets, 0)))

    base = f"FROM {kind.source} WHERE {kind.cond}"
    # Jobs finished per bucket and per duration bin in one pass (at most buckets x bins groups
    # per view).
    for key, bucket, k, count in db.execute_sql(
            f"SELECT {kind.key}, CAST(j.ended / ? AS INTEGER) AS b, "
            f"CASE WHEN j.started IS NOT NULL THEN "  # a job that never started has no duration
            f"min(CAST((j.ended - j.started - ?) / ? AS INTEGER), ?) END AS k, "
            f"count(*) {base} AND j.ended IS NOT NULL AND j.state IN ({_ENDED}) "
            f"GROUP BY 1, b, k",
            (ax.interval, ax.duration_low, ax.duration_width, DURATION_BINS - 1,
             *kind.params)):
        series_of = of(key)
        series_of.done[bucket - ax.first_bucket] += count
        if k is not None:
            series_of.durations[k] += count
    last = SPANS - 1
    for key, ks, ke, w, ws, we in db.execute_sql(
            f"SELECT {kind.key}, min(CAST((j.started - ?) / ? AS INTEGER), {last}) AS ks, "
            f"min(CAST((coalesce(j.ended, ?) - ?) / ? AS INTEGER), {last}) AS ke, "
            f"total({_WEIGHT}), total({_WEIGHT} * j.started), "
            f"total({_WEIGHT} * coalesce(j.ended, ?)) {base} AND j.started IS NOT NULL "
            f"GROUP BY 1, ks, ke",
            (ax.start, ax.span, ax.end, ax.start, ax.span, ax.end, *kind.params)):
        _spread(of(key).busy_s, ax, (ks, ke), (w, ws, we))
    return found


def _spread(busy_s: list[float], ax: Axes, spans: tuple[int, int],
            sums: tuple[float, float, float]) -> None:
    """Add a group's slot-seconds (jobs starting in span ks, ending in span ke) to each span."""
    ks, ke = spans
    w, w_start, w_end = sums
    if ks == ke:
        busy_s[ks] += w_end - w_start
        return
    busy_s[ks] += (ax.start + (ks + 1) * ax.span) * w - w_start
    for k in range(ks + 1, ke):
        busy_s[k] += ax.span * w
    busy_s[ke] += w_end - (ax.start + ke * ax.span) * w


def allocate(alloc_s: list[float], ax: Axes, periods: Iterable[tuple[float, float, float]]) -> None:
    """Add allocated slot-seconds: `slots` over [start, end) for each (start, end, slots)."""
    for start, end, slots in periods:
        low, high = max(start, ax.start), min(end, ax.end)
        k = max(0, min(int((low - ax.start) / ax.span), SPANS - 1))
        while low < high and k < SPANS:
            stop = high if k == SPANS - 1 else min(high, ax.start + (k + 1) * ax.span)
            alloc_s[k] += slots * max(0.0, stop - low)
            low, k = max(low, stop), k + 1


def batch_periods(db: SqliteDatabase, ax: Axes) -> dict[int, tuple[float, float, float]]:
    """Each batch job that started: (start, end or the axes' end, nodes)."""
    return {bid: (started, ended if ended is not None else ax.end, float(nodes))
            for bid, started, ended, nodes in db.execute_sql(
                "SELECT id, started, ended, nodes FROM batch_job WHERE started IS NOT NULL")}


def site_periods(db: SqliteDatabase, ax: Axes, cond: str) -> list[tuple[float, float, float]]:
    """The slots of each site whose jobs (`cond` on job j) ran outside batch jobs, from its
    first job start to the axes' end."""
    settings: Mapping[int, str] = dict(db.execute_sql("SELECT id, settings FROM site"))
    return [(first, ax.end, float(site_slots(settings.get(site, "{}"))))
            for site, first in db.execute_sql(
                f"SELECT j.site_id, min(j.started) FROM job j WHERE {cond} "  # noqa: S608
                f"AND j.batch_job_id IS NULL AND j.started IS NOT NULL "
                f"AND j.site_id IS NOT NULL GROUP BY j.site_id")]

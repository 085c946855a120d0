"""The axes every plot of the report shares (throughput buckets, slot time spans, duration
bins: views compare), one view's plot data on them (`Series`, filled by jobscan.py's one pass
over the jobs), and the slots allocated to views (batch jobs' nodes, sites' own slots).
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
    """The axes covering every job that started (slots, durations) or ended (throughput: a job
    cancelled before it started ended too)."""
    (s_min, s_max, e_min, e_max, d_min, d_max) = db.execute_sql(
        f"SELECT min(started), max(CASE WHEN started IS NOT NULL THEN coalesce(ended, started)"  # noqa: S608
        f" END), min(CASE WHEN state IN ({_ENDED}) THEN ended END), "
        f"max(CASE WHEN state IN ({_ENDED}) THEN ended END), "
        f"min(ended - started), max(ended - started) FROM job "
        f"WHERE started IS NOT NULL OR ended IS NOT NULL"
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


def site_periods(db: SqliteDatabase, ax: Axes, first_starts: Mapping[int, float]
                 ) -> list[tuple[float, float, float]]:
    """The slots of each site whose plain jobs ran outside batch jobs, from its first such job's
    start (`first_starts`, by site id) to the axes' end."""
    settings: Mapping[int, str] = dict(db.execute_sql("SELECT id, settings FROM site"))
    return [(first, ax.end, float(site_slots(settings.get(site, "{}"))))
            for site, first in sorted(first_starts.items())]

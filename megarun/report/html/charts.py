"""The three plots of a campaign or batch view (throughput, slots, durations) for one job
filter: metrics.py measures, plots.py draws, and this picks the scale (an interval giving at
most about a hundred bars, a hundred time spans, twenty duration bars) so a page of a million
jobs holds a few hundred numbers."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup
from peewee import SqliteDatabase

from megarun.report import metrics, plots

#: Bars of throughput, spans of the slot plot, bars of the duration histogram.
BARS = 100
SPANS = 100
DURATION_BINS = 20

_NICE = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
         7 * 86400, 30 * 86400)


@dataclass(frozen=True)
class Charts:
    """The SVG of each plot, ready to inline (drawn by plots.py: escaped, no script)."""

    throughput: Markup
    utilization: Markup
    durations: Markup


def nice_interval(span_s: float, bars: int = BARS) -> float:
    """The shortest round interval that cuts `span_s` into at most `bars` bars."""
    for interval in _NICE:
        if span_s / interval <= bars:
            return float(interval)
    return float(_NICE[-1] * (int(span_s / (_NICE[-1] * bars)) + 1))


def ended_span(db: SqliteDatabase, where: metrics.JobFilter | None) -> float:
    """Seconds between the first and the last job end the filter selects (0: none or one)."""
    cond, params = metrics.where_sql(where)
    low, high = db.execute_sql(f"SELECT min(ended), max(ended) FROM job "  # noqa: S608
                               f"WHERE ended IS NOT NULL AND {cond}", params).fetchone()
    return float(high - low) if low is not None else 0.0


def charts(db: SqliteDatabase, where: metrics.JobFilter | None, prefix: str,
           batch_job: int | None = None) -> Charts:
    """The three plots of the jobs `where` selects (of one batch job when given); `prefix`
    makes the charts' ids unique on their page."""
    interval = nice_interval(ended_span(db, where))
    done = metrics.throughput(db, interval, where)
    slots = metrics.slot_usage_sampled(db, SPANS, batch_job, where)
    bins = metrics.duration_histogram(db, DURATION_BINS, where)
    return Charts(
        throughput=_inline(plots.throughput_svg(done, interval, f"{prefix}-throughput")),
        utilization=_inline(plots.utilization_svg(slots, f"{prefix}-utilization")),
        durations=_inline(plots.durations_svg(bins, f"{prefix}-durations")),
    )


def _inline(svg: str) -> Markup:
    # The SVG was serialized by ElementTree from pygal's tree (every text escaped, scripts
    # removed): it is markup to insert as it is, not text to escape again.
    return Markup(svg)  # noqa: S704

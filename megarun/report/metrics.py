"""Campaign metrics over the database: throughput, slot utilization and run durations.

Pure functions of an open database, computed with SQL aggregates so a 1,000,000-job area never
sits in memory: throughput and the duration histogram are GROUP BYs, utilization sweeps the
change points (a job's start and end) straight from the SQLite cursor. Times come from the job
table's `started`/`ended` columns (epoch seconds) and leave as tz-aware UTC datetimes.

Slots: a batch job allocates one slot per node while it runs; a job in it holds its `nodes`
(1/n of a node when n jobs are packed per node). On a site without batch jobs (the local site)
each running job holds one slot of the site's `max_jobs`, else its `cpus`, else this machine's
CPU count (the local agent's own rule).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from peewee import SqliteDatabase

from megarun.core.states import ENDED_STATES, parse_state
from megarun.errors import UsageError

#: At most this many throughput buckets (interval too small for the span: refused, not filled).
MAX_BUCKETS = 1_000_000

_ENDED = ",".join(f"'{s.value}'" for s in sorted(ENDED_STATES))
# What one job holds of its batch job's nodes (packed jobs share a node).
_WEIGHT = "(CASE WHEN node_packing_count > 1 THEN 1.0 / node_packing_count ELSE nodes END)"


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a metric counts (every field None/empty: all jobs)."""

    app: str | None = None  # an app's name
    site: str | None = None  # a site's name
    tags: tuple[tuple[str, str], ...] = ()  # key=value pairs, all required
    state: str | None = None
    batch_job: int | None = None
    plain: bool = False  # only jobs of apps (no test-suite run)
    in_batch_job: bool = False  # only jobs that ran in a batch job (any)


def where_sql(flt: JobFilter | None) -> tuple[str, list[Any]]:
    """The SQL condition on the job table (unqualified columns) and its parameters."""
    if flt is None:
        return "1", []
    clauses: list[str] = []
    params: list[Any] = []
    if flt.app is not None:
        clauses.append("app_id = (SELECT id FROM app WHERE name = ?)")
        params.append(flt.app)
    if flt.site is not None:
        clauses.append("site_id = (SELECT id FROM site WHERE name = ?)")
        params.append(flt.site)
    for key, value in flt.tags:
        clauses.append("id IN (SELECT job_id FROM job_tag WHERE key = ? AND value = ?)")
        params.extend((key, value))
    if flt.state is not None:
        try:
            state = parse_state(flt.state)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        clauses.append("state = ?")
        params.append(state.value)
    if flt.batch_job is not None:
        clauses.append("batch_job_id = ?")
        params.append(flt.batch_job)
    if flt.plain:
        clauses.append("run_id IS NULL")
    if flt.in_batch_job:
        clauses.append("batch_job_id IS NOT NULL")
    return (" AND ".join(clauses) or "1"), params


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def throughput(db: SqliteDatabase, interval_s: float,
               where: JobFilter | None = None) -> list[tuple[datetime, float]]:
    """Jobs finished per interval: (bucket start, count), buckets aligned on multiples of
    `interval_s` since the epoch, from the first bucket with a finished job to the last, the
    empty ones between them as 0."""
    if not interval_s > 0:
        raise UsageError(f"interval must be more than 0 seconds, not {interval_s}")
    cond, params = where_sql(where)
    sql = (f"SELECT CAST(ended / ? AS INTEGER) AS b, count(*) FROM job "  # noqa: S608
           f"WHERE ended IS NOT NULL AND state IN ({_ENDED}) AND {cond} GROUP BY b ORDER BY b")
    counts = {int(b): float(n) for b, n in db.execute_sql(sql, (interval_s, *params))}
    if not counts:
        return []
    first, last = min(counts), max(counts)
    if last - first + 1 > MAX_BUCKETS:
        raise UsageError(f"interval {interval_s:g} s gives {last - first + 1:,} buckets over "
                         f"the jobs' span; give a longer one (at most {MAX_BUCKETS:,} buckets)")
    return [(utc(b * interval_s), counts.get(b, 0.0)) for b in range(first, last + 1)]


def durations(db: SqliteDatabase, where: JobFilter | None = None) -> list[float]:
    """Run seconds (ended - started) of every ended job, in job order. For big areas prefer
    duration_histogram, which never holds one value per job."""
    cond, params = where_sql(where)
    sql = (f"SELECT ended - started FROM job WHERE started IS NOT NULL AND ended IS NOT NULL "  # noqa: S608
           f"AND state IN ({_ENDED}) AND {cond} ORDER BY id")
    return [float(d) for (d,) in db.execute_sql(sql, params)]


@dataclass(frozen=True)
class Bin:
    """One bar of a duration histogram: [low, high) seconds (the last bar includes high)."""

    low: float
    high: float
    count: int


def duration_histogram(db: SqliteDatabase, bins: int = 20,
                       where: JobFilter | None = None) -> list[Bin]:
    """Run durations of ended jobs in `bins` equal bars from the shortest to the longest, counted
    by SQL (two aggregate passes, nothing per job held)."""
    if bins < 1:
        raise UsageError(f"a histogram needs at least 1 bin, not {bins}")
    cond, params = where_sql(where)
    base = (f"FROM job WHERE started IS NOT NULL AND ended IS NOT NULL "
            f"AND state IN ({_ENDED}) AND {cond}")
    low, high = db.execute_sql(f"SELECT min(ended - started), max(ended - started) {base}",
                               params).fetchone()
    if low is None:
        return []
    width = (high - low) / bins or 1.0
    sql = (f"SELECT min(CAST((ended - started - ?) / ? AS INTEGER), ?) AS k, count(*) "
           f"{base} GROUP BY k")
    counts = dict(db.execute_sql(sql, (low, width, bins - 1, *params)))
    return [Bin(low + k * width, low + (k + 1) * width, int(counts.get(k, 0)))
            for k in range(bins)]


@dataclass(frozen=True)
class SlotSample:
    """Slots at one time: busy (held by jobs) and allocated (batch jobs running, or the site's)."""

    time: datetime
    busy: float
    allocated: float


def _batch_sources(batch_job: int | None, where: JobFilter | None) -> tuple[str, list[Any]]:
    """SQL of (time, busy change, allocated change) rows for batch jobs."""
    cond, params = where_sql(where)
    one = "" if batch_job is None else " AND id = ?"
    mine = "batch_job_id IS NOT NULL" if batch_job is None else "batch_job_id = ?"
    sel = [] if batch_job is None else [batch_job]
    sql = (f"SELECT started AS t, 0.0 AS b, nodes AS a FROM batch_job "  # noqa: S608
           f"WHERE started IS NOT NULL{one} "
           f"UNION ALL SELECT ended, 0.0, -nodes FROM batch_job "
           f"WHERE started IS NOT NULL AND ended IS NOT NULL{one} "
           f"UNION ALL SELECT started, {_WEIGHT}, 0.0 FROM job "
           f"WHERE started IS NOT NULL AND {mine} AND {cond} "
           f"UNION ALL SELECT ended, -{_WEIGHT}, 0.0 FROM job "
           f"WHERE started IS NOT NULL AND ended IS NOT NULL AND {mine} AND {cond}")
    return sql, [*sel, *sel, *sel, *params, *sel, *params]


def site_slots(settings: str) -> int:
    """Slots of a site without batch jobs, from its stored settings (JSON)."""
    try:
        node = json.loads(settings).get("node", {})
    except (ValueError, AttributeError):
        node = {}
    return int(node.get("max_jobs") or node.get("cpus") or os.cpu_count() or 1)


def _site_sources(db: SqliteDatabase, where: JobFilter | None) -> tuple[str, list[Any]]:
    """SQL of (time, busy change, allocated change) rows for jobs run outside batch jobs: the
    slots of each site they ran on are allocated from that site's first job start on."""
    cond, params = where_sql(where)
    plain = f"batch_job_id IS NULL AND started IS NOT NULL AND {cond}"
    starts = db.execute_sql(f"SELECT site_id, min(started) FROM job WHERE {plain} "  # noqa: S608
                            f"AND site_id IS NOT NULL GROUP BY site_id", params).fetchall()
    settings = dict(db.execute_sql("SELECT id, settings FROM site"))
    allocs = [(first, float(site_slots(settings.get(site, "{}")))) for site, first in starts]
    parts = ["SELECT ? AS t, 0.0 AS b, ? AS a"] * len(allocs)
    parts.append(f"SELECT started, 1.0, 0.0 FROM job WHERE {plain}")  # noqa: S608
    parts.append(f"SELECT ended, -1.0, 0.0 FROM job WHERE ended IS NOT NULL AND {plain}")  # noqa: S608
    flat = [value for pair in allocs for value in pair]
    return " UNION ALL ".join(parts), [*flat, *params, *params]


def _has_batch_jobs(db: SqliteDatabase, where: JobFilter | None) -> bool:
    cond, params = where_sql(where)
    sql = f"SELECT 1 FROM job WHERE batch_job_id IS NOT NULL AND {cond} LIMIT 1"  # noqa: S608
    return db.execute_sql(sql, params).fetchone() is not None


def _change_points(db: SqliteDatabase, batch_job: int | None,
                   where: JobFilter | None) -> Iterator[tuple[float, float, float]]:
    """(time, busy, allocated) after every change, in time order, from the cursor."""
    if batch_job is None and not _has_batch_jobs(db, where):
        sql, params = _site_sources(db, where)
    else:
        sql, params = _batch_sources(batch_job, where)
    busy = allocated = 0.0
    grouped = f"SELECT t, total(b), total(a) FROM ({sql}) GROUP BY t ORDER BY t"  # noqa: S608
    for time, d_busy, d_alloc in db.execute_sql(grouped, params):
        busy += d_busy
        allocated += d_alloc
        # sums of fractions drift: a count that is back to nothing is nothing
        busy = 0.0 if abs(busy) < 1e-9 else busy
        yield float(time), busy, allocated


def slot_usage(db: SqliteDatabase, batch_job: int | None = None,
               where: JobFilter | None = None) -> list[SlotSample]:
    """Busy and allocated slots at each change point (a job or batch job starting or ending):
    of one batch job, of all batch jobs (None), or of the site's slots when the jobs ran in no
    batch job (the local site)."""
    return [SlotSample(utc(t), busy, alloc) for t, busy, alloc in
            _change_points(db, batch_job, where)]


def utilization(db: SqliteDatabase, batch_job: int | None = None,
                where: JobFilter | None = None) -> list[tuple[datetime, float]]:
    """Busy slots / allocated slots in [0, 1] at each change point (0 when nothing is
    allocated); the same points as slot_usage."""
    return [(sample.time, _ratio(sample.busy, sample.allocated))
            for sample in slot_usage(db, batch_job, where)]


def _ratio(busy: float, allocated: float) -> float:
    return min(1.0, max(0.0, busy / allocated)) if allocated > 0 else 0.0

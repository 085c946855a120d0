"""One pass over the jobs for every campaign and batch view of the report.

Each view (every plain job; plain jobs by tag value, app and site; the jobs of each batch job;
the jobs of all batch jobs) shows its jobs counted by state and status, its jobs finished per
throughput bucket, its durations per bin and its busy slot-seconds per time span. One streamed
read of the job table gives them all: SQLite works out each row's bucket, bin and spans, and
the row is added to its group (the jobs sharing app, site, batch job and tag views). Jobs come
in few shapes, so groups are few; they are added into their views at the end, or whenever
MAX_GROUPS are held, so memory stays bounded whatever the number of jobs.

Busy slot-seconds need no sweep over change points: a job adds its slot-seconds to the span it
starts in and the span it ends in, and its weight to the spans wholly between as differences
(one add at each end), summed once when the view is drawn.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from peewee import SqliteDatabase

from megarun.core.states import ENDED_STATES
from megarun.report.html.grouped import DURATION_BINS, SPANS, Axes, Series

#: Groups held during the pass before they are added into their views.
MAX_GROUPS = 5000
#: Distinct tag sets (a job's `tags` text) remembered while matching jobs to tag views.
MAX_TAG_SETS = 10000

_ENDED = ",".join(f"'{s.value}'" for s in sorted(ENDED_STATES))
_WEIGHT = "(CASE WHEN node_packing_count > 1 THEN 1.0 / node_packing_count ELSE nodes END)"
_LAST = SPANS - 1
# Bucket, bin and spans are clamped to the axes: a job that ends while the report is read
# (after the axes were) lands in the last bucket instead of outside the plot.
_PASS = (
    "SELECT app_id, site_id, batch_job_id, run_id IS NULL, tags, state, status, started, ended, "  # noqa: S608
    f"{_WEIGHT}, "
    f"CASE WHEN ? AND ended IS NOT NULL AND state IN ({_ENDED}) "
    "THEN max(0, min(CAST(ended / ? AS INTEGER) - ?, ?)) END, "
    f"CASE WHEN ended IS NOT NULL AND started IS NOT NULL AND state IN ({_ENDED}) "
    f"THEN max(0, min(CAST((ended - started - ?) / ? AS INTEGER), {DURATION_BINS - 1})) END, "
    f"max(0, min(CAST((started - ?) / ? AS INTEGER), {_LAST})), "
    f"max(0, min(CAST((coalesce(ended, ?) - ?) / ? AS INTEGER), {_LAST})) "
    "FROM job WHERE run_id IS NULL OR batch_job_id IS NOT NULL"
)

#: (state, status) -> [jobs, sum of their starts, sum of their ends]
Counts = dict[tuple[str, str], list[float]]


@dataclass
class Tally:
    """The jobs of one group or view: counts by state and status (with the sums of start and
    end times a view's fingerprint hashes), finished jobs per bucket, durations per bin, busy
    slot-seconds per span (the parts in the spans where jobs start and end; the weights of the
    spans wholly between as differences), slot-seconds of ended jobs, the last start or end, and
    the first start."""

    buckets: int
    counts: Counts = field(default_factory=dict)
    done: list[int] = field(default_factory=list)
    durations: list[int] = field(default_factory=lambda: [0] * DURATION_BINS)
    part: list[float] = field(default_factory=lambda: [0.0] * SPANS)
    whole: list[float] = field(default_factory=lambda: [0.0] * (SPANS + 1))
    slot_s: float = 0.0
    latest: float | None = None
    first: float | None = None

    def __post_init__(self) -> None:
        if not self.done:
            self.done = [0] * max(self.buckets, 0)

    @property
    def total(self) -> int:
        return int(sum(count[0] for count in self.counts.values()))

    def add(self, other: Tally) -> None:
        """Add another group's jobs to this view's."""
        for key, (jobs, starts, ends) in other.counts.items():
            mine = self.counts.setdefault(key, [0, 0.0, 0.0])
            mine[0] += jobs
            mine[1] += starts
            mine[2] += ends
        _add_into(self.done, other.done)
        _add_into(self.durations, other.durations)
        _add_into(self.part, other.part)
        _add_into(self.whole, other.whole)
        self.slot_s += other.slot_s
        self.latest = _max(self.latest, other.latest)
        self.first = _min(self.first, other.first)

    def series(self, ax: Axes) -> Series:
        """The view's plot data on the axes (allocation is added by the caller)."""
        busy: list[float] = []
        spanning = 0.0
        for k in range(SPANS):
            spanning += self.whole[k]
            busy.append(self.part[k] + spanning * ax.span)
        return Series([float(n) for n in self.done], busy, [0.0] * SPANS,
                      list(self.durations))


def _add_into(own: list[Any], theirs: list[Any]) -> None:
    for k, value in enumerate(theirs):
        own[k] += value


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


@dataclass
class JobScan:
    """Every view's Tally: plain views by (kind, name) (`all`/`all`, `app`/name, `site`/name,
    `tag`/key=value), batch jobs by id, and per site the first start of its plain jobs run
    outside batch jobs (from then on its own slots are allocated)."""

    axes: Axes
    plain: dict[tuple[str, str], Tally] = field(default_factory=dict)
    batches: dict[int, Tally] = field(default_factory=dict)
    site_first: dict[int, float] = field(default_factory=dict)

    def empty(self) -> Tally:
        return Tally(self.axes.buckets)

    def all_batches(self) -> Tally:
        """The jobs of every batch job together."""
        total = self.empty()
        for tally in self.batches.values():
            total.add(tally)
        return total


Key = tuple[Any, Any, Any, Any, tuple[str, ...]]  # app id, site id, batch job id, plain, tags


class _TagMatcher:
    """A job's tag views (the `key=value` of `views` it has), from its `tags` text; the
    answers for the most recent MAX_TAG_SETS texts are remembered (jobs share tag sets)."""

    def __init__(self, views: Collection[str]) -> None:
        self.views = frozenset(views)
        self.known: dict[str | None, tuple[str, ...]] = {}

    def __call__(self, tags: str | None) -> tuple[str, ...]:
        found = self.known.get(tags)
        if found is None:
            found = self._match(tags)
            if len(self.known) >= MAX_TAG_SETS:
                self.known.clear()
            self.known[tags] = found
        return found

    def _match(self, tags: str | None) -> tuple[str, ...]:
        if not self.views or not tags:
            return ()
        try:
            parsed = json.loads(tags)
        except ValueError:
            return ()
        if not isinstance(parsed, dict):
            return ()
        return tuple(sorted(name for name in (f"{k}={v}" for k, v in parsed.items())
                            if name in self.views))


def scan(db: SqliteDatabase, ax: Axes, tag_views: Collection[str]) -> JobScan:
    """Every view's Tally on the axes `ax`, in one read of the jobs; `tag_views`: the tag
    values (key=value) that get a view."""
    names = _Names(db)
    found = JobScan(ax)
    groups: dict[Key, Tally] = {}
    match = _TagMatcher(tag_views)
    params = (ax.buckets > 0, ax.interval, ax.first_bucket, max(ax.buckets - 1, 0),
              ax.duration_low, ax.duration_width, ax.start, ax.span,
              ax.end, ax.start, ax.span)
    start, span = ax.start, ax.span
    for (app, site, batch, plain, tags, state, status, started, ended, weight,
         bucket, k, ks, ke) in db.execute_sql(_PASS, params):
        key = (app, site, batch, plain, match(tags) if plain else ())
        group = groups.get(key)
        if group is None:
            if len(groups) >= MAX_GROUPS:
                names.merge(found, groups.items())
                groups.clear()
            group = groups[key] = Tally(ax.buckets)
        count = group.counts.get((state, status))
        if count is None:
            count = group.counts[(state, status)] = [0, 0.0, 0.0]
        count[0] += 1
        if bucket is not None:
            group.done[bucket] += 1
            if k is not None:
                group.durations[k] += 1
        if started is None:  # ended without starting (cancelled): no duration, no slots
            if ended is not None:
                count[2] += ended
                group.latest = _max(group.latest, ended)
            continue
        count[1] += started
        end = ended if ended is not None else ax.end
        if ended is not None:
            count[2] += ended
            group.slot_s += weight * (ended - started)
        last = ended if ended is not None else started  # the last moment the job was seen
        group.latest = last if group.latest is None or last > group.latest else group.latest
        group.first = started if group.first is None or started < group.first else group.first
        if ke <= ks:
            group.part[ks] += weight * (end - started)
        else:
            group.part[ks] += weight * (start + (ks + 1) * span - started)
            group.part[ke] += weight * (end - (start + ke * span))
            group.whole[ks + 1] += weight
            group.whole[ke] -= weight
    names.merge(found, groups.items())
    return found


class _Names:
    """App and site names by id, and how a group's jobs are added into their views."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.apps: dict[int, str] = dict(db.execute_sql("SELECT id, name FROM app"))
        self.sites: dict[int, str] = dict(db.execute_sql("SELECT id, name FROM site"))

    def merge(self, found: JobScan, groups: Iterable[tuple[Key, Tally]]) -> None:
        for (app, site, batch, plain, tags), group in groups:
            if plain:
                for view in self._views(app, site, tags):
                    found.plain.setdefault(view, found.empty()).add(group)
                if batch is None and site is not None and group.first is not None:
                    found.site_first[site] = min(found.site_first.get(site, group.first),
                                                 group.first)
            if batch is not None:
                found.batches.setdefault(batch, found.empty()).add(group)

    def _views(self, app: Any, site: Any, tags: tuple[str, ...]) -> list[tuple[str, str]]:
        views = [("all", "all")]
        if app in self.apps:
            views.append(("app", self.apps[app]))
        if site in self.sites:
            views.append(("site", self.sites[site]))
        views.extend(("tag", tag) for tag in tags)
        return views

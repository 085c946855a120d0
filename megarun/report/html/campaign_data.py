"""What the campaign and batch views read, once per build and shared by both producers.

First a data fingerprint of every plain job (jobs of apps, not of test-suite runs) and every
job of a batch job: their counts by state and status with the sums of their start and end
times and the newest id (one grouped read of those jobs), the batch job, app and site rows and
the tag values that get views. Any job that is created, removed, started, ended or changes
state or status moves it. When it is the last build's, every campaign and batch page is kept
as it is and nothing more is read. Otherwise jobscan.py reads every such job once for all the
views; each view then has its own fingerprint (its counts and the sums of its jobs' start and
end times), so a view whose jobs did not change keeps its page without being drawn.

A tag may take a different value on every job (`i=1` ... `i=1000000`): only the MAX_VIEWS
values on the most jobs (of any kind: counted from the tag index alone, by SQLite, not held
here) get a view of their own, and the page says how many more there are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from peewee import SqliteDatabase

from megarun.report.html import grouped, jobscan
from megarun.report.html.grouped import Axes
from megarun.report.html.jobscan import JobScan, Tally

#: At most this many views of each kind (tag values, apps, sites), the biggest first.
MAX_VIEWS = 100

KINDS = ("tag", "app", "site")

_VIEWED = "run_id IS NULL OR batch_job_id IS NOT NULL"


@dataclass
class View:
    """The plain jobs of one tag value, app or site."""

    kind: str
    name: str  # key=value for a tag
    tally: Tally

    @property
    def counts(self) -> list[tuple[str, str, int]]:
        """(state, status, jobs), in order."""
        return sorted((state, status, int(count[0]))
                      for (state, status), count in self.tally.counts.items())

    @property
    def total(self) -> int:
        return self.tally.total

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.kind, self.name, sorted(
            (state, status, int(n), starts, ends)
            for (state, status), (n, starts, ends) in self.tally.counts.items()))


@dataclass
class Views:
    """Every view of one kind, biggest first, and how many were left out."""

    kind: str
    views: list[View]
    more: int


class CampaignData:
    """The campaign and batch views' data of one build, each part read the first time it is
    needed."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        self._print: str | None = None
        self._tags: list[str] | None = None
        self._axes: Axes | None = None
        self._scan: JobScan | None = None

    def fingerprint(self) -> str:
        """Moves whenever a plain job or a job of a batch job, a batch job, an app, a site or
        the viewed tag values change."""
        if self._print is None:
            jobs = self.db.execute_sql(
                "SELECT state, status, count(*), total(started), total(ended), max(id) "  # noqa: S608
                f"FROM job WHERE {_VIEWED} GROUP BY state, status ORDER BY state, status"
            ).fetchall()
            batches = self.db.execute_sql(
                "SELECT id, site_id, state, nodes, walltime, scheduler_id, queue, submitted, "
                "started, ended FROM batch_job ORDER BY id").fetchall()
            names = self.db.execute_sql(
                "SELECT 'app', id, name, '' FROM app UNION ALL "
                "SELECT 'site', id, name, settings FROM site ORDER BY 1, 2").fetchall()
            self._print = fingerprint(jobs, batches, names, self.tag_views())
        return self._print

    def tag_views(self) -> list[str]:
        """The MAX_VIEWS tag values (key=value) on the most jobs."""
        if self._tags is None:
            self._tags = [f"{key}={value}" for key, value in self.db.execute_sql(
                "SELECT key, value FROM job_tag GROUP BY key, value "
                "ORDER BY count(*) DESC, key, value LIMIT ?", (MAX_VIEWS,))]
        return self._tags

    @property
    def axes(self) -> Axes:
        if self._axes is None:
            self._axes = grouped.axes(self.db)
        return self._axes

    def scan(self) -> JobScan:
        """Every view's jobs, from one read of the jobs."""
        if self._scan is None:
            self._scan = jobscan.scan(self.db, self.axes, self.tag_views())
        return self._scan

    def views(self, kind: str) -> Views:
        """The views of `kind` (tag, app, site) over plain jobs, the MAX_VIEWS biggest."""
        found = [View(kind, name, tally) for (its, name), tally in self.scan().plain.items()
                 if its == kind]
        ordered = sorted(found, key=lambda v: (-v.total, v.name))[:MAX_VIEWS]
        if kind == "tag":
            distinct = self.db.execute_sql(
                "SELECT count(*) FROM (SELECT 1 FROM job_tag GROUP BY key, value)").fetchone()[0]
        else:
            distinct = len(found)
        return Views(kind, ordered, max(0, distinct - len(ordered)))

    def totals(self) -> list[tuple[str, str, int]]:
        """Every plain job counted by (state, status)."""
        everything = self.scan().plain.get(("all", "all"))
        return View("all", "all", everything).counts if everything else []


def by_state(counts: Iterable[tuple[str, str, int]]) -> dict[str, int]:
    """(state, status, count) rows summed per state."""
    summed: dict[str, int] = {}
    for state, _, count in counts:
        summed[state] = summed.get(state, 0) + count
    return summed


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogateescape")).hexdigest()

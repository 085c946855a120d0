"""What the campaign views show, read with one grouped query per kind of view: plain jobs
(jobs of apps, not of test-suite runs) counted by state and status for every tag value, app and
site, with a fingerprint per view (its counts and the sums of its jobs' start and end times:
any job that is created, starts, ends or changes state changes it), so a view whose jobs did
not change is kept, not drawn again.

A tag may take a different value on every job (`i=1` ... `i=1000000`): only the MAX_VIEWS
values with the most jobs get a view of their own (chosen by SQLite, not held here), and the
page says how many more there are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from peewee import SqliteDatabase

#: At most this many views of each kind (tag values, apps, sites), the biggest first.
MAX_VIEWS = 100

KINDS = ("tag", "app", "site")


@dataclass
class View:
    """The plain jobs of one tag value, app or site, counted by (state, status)."""

    kind: str
    name: str  # key=value for a tag
    counts: list[tuple[str, str, int]] = field(default_factory=list)
    seen: list[tuple[object, ...]] = field(default_factory=list)  # what the fingerprint hashes

    @property
    def total(self) -> int:
        return sum(count for _, _, count in self.counts)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.kind, self.name, self.seen)


@dataclass
class Views:
    """Every view of one kind, biggest first, and how many were left out."""

    kind: str
    views: list[View]
    more: int


# Per kind: the grouped name, the FROM clause, the number of distinct names.
_TAG_NAME = "t.key || '=' || t.value"
_SOURCES = {
    "tag": (_TAG_NAME, "job_tag t JOIN job j ON j.id = t.job_id", "t.key, t.value"),
    "app": ("a.name", "job j JOIN app a ON a.id = j.app_id", "a.name"),
    "site": ("s.name", "job j JOIN site s ON s.id = j.site_id", "s.name"),
}


def views(db: SqliteDatabase, kind: str) -> Views:
    """The views of `kind` (tag, app, site) over plain jobs, the MAX_VIEWS biggest."""
    name, source, group = _SOURCES[kind]
    top = (f"SELECT {name} FROM {source} WHERE j.run_id IS NULL GROUP BY {group} "  # noqa: S608
           f"ORDER BY count(*) DESC, {name} LIMIT {MAX_VIEWS}")
    distinct = db.execute_sql(f"SELECT count(*) FROM (SELECT 1 FROM {source} "  # noqa: S608
                              f"WHERE j.run_id IS NULL GROUP BY {group})").fetchone()[0]
    sql = (f"SELECT {name} AS n, j.state, j.status, count(*), total(j.started), "  # noqa: S608
           f"total(j.ended) FROM {source} WHERE j.run_id IS NULL AND {name} IN ({top}) "
           f"GROUP BY n, j.state, j.status ORDER BY n, j.state, j.status")
    found: dict[str, View] = {}
    for view_name, state, status, count, started, ended in db.execute_sql(sql):
        view = found.setdefault(view_name, View(kind, view_name))
        view.counts.append((state, status, count))
        view.seen.append((state, status, count, started, ended))
    ordered = sorted(found.values(), key=lambda v: (-v.total, v.name))
    return Views(kind, ordered, max(0, distinct - len(ordered)))


def totals(db: SqliteDatabase) -> list[tuple[str, str, int]]:
    """Every plain job counted by (state, status)."""
    return [(state, status, count) for state, status, count in db.execute_sql(
        "SELECT state, status, count(*) FROM job WHERE run_id IS NULL "
        "GROUP BY state, status ORDER BY state, status")]


def by_state(counts: Iterable[tuple[str, str, int]]) -> dict[str, int]:
    """(state, status, count) rows summed per state."""
    summed: dict[str, int] = {}
    for state, _, count in counts:
        summed[state] = summed.get(state, 0) + count
    return summed


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogateescape")).hexdigest()

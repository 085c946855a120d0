"""What the campaign views show: plain jobs (jobs of apps, not of test-suite runs) counted by
state and status for every tag value, app and site (one grouped pass over the jobs for the
apps, the sites and the totals; one over the tag index and the tagged jobs), with a
fingerprint per view (its counts and the sums of its jobs' start and end times:
any job that is created, starts, ends or changes state changes it), so a view whose jobs did
not change is kept, not drawn again.

A tag may take a different value on every job (`i=1` ... `i=1000000`): only the MAX_VIEWS
values on the most jobs (of any kind: counted from the tag index alone, by SQLite, not held
here) get a view of their own, and the page says how many more there are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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


def views(db: SqliteDatabase, kind: str, groups: list[tuple[Any, ...]] | None = None) -> Views:
    """The views of `kind` (tag, app, site) over plain jobs, the MAX_VIEWS biggest (`groups`:
    plain_groups, when the caller has read them already)."""
    if kind == "tag":
        return _tag_views(db)
    names = dict(db.execute_sql(f"SELECT id, name FROM {kind}"))  # noqa: S608
    found: dict[str, View] = {}
    for app_id, site_id, state, status, count, started, ended in (
            groups if groups is not None else plain_groups(db)):
        named = names.get(app_id if kind == "app" else site_id)
        if named is None:
            continue  # a job not matched to a site yet
        view = found.setdefault(named, View(kind, named))
        view.counts.append((state, status, count))
        view.seen.append((state, status, count, started, ended))
    return _biggest(kind, found, len(found))


def _biggest(kind: str, found: dict[str, View], distinct: int) -> Views:
    for view in found.values():
        view.counts.sort()
        view.seen.sort(key=repr)
    ordered = sorted(found.values(), key=lambda v: (-v.total, v.name))[:MAX_VIEWS]
    return Views(kind, ordered, max(0, distinct - len(ordered)))


def _tag_views(db: SqliteDatabase) -> Views:
    # The most used tag values come from the tag index alone (no job read); only their jobs
    # are then counted by state.
    distinct = db.execute_sql(
        "SELECT count(*) FROM (SELECT 1 FROM job_tag GROUP BY key, value)").fetchone()[0]
    top = db.execute_sql("SELECT key, value FROM job_tag GROUP BY key, value "
                         "ORDER BY count(*) DESC, key, value LIMIT ?", (MAX_VIEWS,)).fetchall()
    if not top:
        return Views("tag", [], 0)
    pairs = ",".join("(?, ?)" for _ in top)
    found: dict[str, View] = {}
    for key, value, state, status, count, started, ended in db.execute_sql(
            f"SELECT t.key, t.value, j.state, j.status, count(*), total(j.started), "  # noqa: S608
            f"total(j.ended) FROM job_tag t JOIN job j ON j.id = t.job_id "
            f"WHERE j.run_id IS NULL AND (t.key, t.value) IN (VALUES {pairs}) "
            f"GROUP BY t.key, t.value, j.state, j.status",
            [part for pair in top for part in pair]):
        name = f"{key}={value}"
        view = found.setdefault(name, View("tag", name))
        view.counts.append((state, status, count))
        view.seen.append((state, status, count, started, ended))
    return _biggest("tag", found, distinct)


def plain_groups(db: SqliteDatabase) -> list[tuple[Any, ...]]:
    """Plain jobs grouped by (app, site, state, status): count and sums of start and end times,
    from one pass over the job table (the views by app and site and the totals share it)."""
    rows: list[tuple[Any, ...]] = db.execute_sql(
        "SELECT app_id, site_id, state, status, count(*), total(started), total(ended) "
        "FROM job WHERE run_id IS NULL GROUP BY app_id, site_id, state, status").fetchall()
    return rows


def totals(db: SqliteDatabase, groups: list[tuple[Any, ...]] | None = None,
           ) -> list[tuple[str, str, int]]:
    """Every plain job counted by (state, status)."""
    summed: dict[tuple[str, str], int] = {}
    for _, _, state, status, count, _, _ in groups if groups is not None else plain_groups(db):
        summed[(state, status)] = summed.get((state, status), 0) + count
    return [(state, status, count) for (state, status), count in sorted(summed.items())]


def by_state(counts: Iterable[tuple[str, str, int]]) -> dict[str, int]:
    """(state, status, count) rows summed per state."""
    summed: dict[str, int] = {}
    for state, _, count in counts:
        summed[state] = summed.get(state, 0) + count
    return summed


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogateescape")).hexdigest()

"""Site matching: a READY job with no site goes to a site whose capabilities satisfy its app's
requirements, chosen by the area's policy (`[matching] policy` in megarun.toml).

Requirements come from the app when matching runs (not when the job was made), so fixing an
app (`app sync`) is enough to let its waiting jobs match. A job no site satisfies stays READY
with no site, and its message says why (`job show`).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.agent.private import make_private_dirs
from megarun.config.area import MATCHING_POLICIES, Area
from megarun.config.requirements import satisfies
from megarun.core.files import write_private
from megarun.core.states import SITE_LOAD_STATES, JobState, names
from megarun.db.connection import execute_many, write_transaction
from megarun.errors import ConfigError
from megarun.sites.spec import SiteSpec

#: Jobs that weigh on a site for `least-loaded`.
LOAD_STATES = names(SITE_LOAD_STATES)
_READY = JobState.READY.value
ROTATION_FILE = "matching-rotation.json"
_MAX_SITE_REASONS = 3


# -- policies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A site as matching sees it."""

    id: int
    name: str
    capabilities: dict[str, Any]


class FirstPolicy:
    """Every job goes to the first satisfying site by name."""

    def pick(self, candidates: Sequence[Candidate], count: int) -> list[Candidate]:
        return [candidates[0]] * count

    def save(self) -> None:
        """Nothing to remember."""


class RoundRobinPolicy:
    """Jobs go to the satisfying sites in turn; the last site used is kept in a file under
    .megarun/ so the rotation goes on across passes and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = _read_rotation(path)
        self._dirty = False

    def pick(self, candidates: Sequence[Candidate], count: int) -> list[Candidate]:
        start = next((i for i, site in enumerate(candidates) if site.name > self.last), 0)
        picks = [candidates[(start + i) % len(candidates)] for i in range(count)]
        if picks:
            self.last, self._dirty = picks[-1].name, True
        return picks

    def save(self) -> None:
        if self._dirty:
            _write_rotation(self.path, self.last)
            self._dirty = False


class LeastLoadedPolicy:
    """Each job goes to the satisfying site with the fewest READY, QUEUED, LAUNCHED, RUNNING or
    KILLREQ jobs, counting the jobs this pass has already given it (ties: by name)."""

    def __init__(self, loads: dict[int, int]) -> None:
        self.loads = loads

    def pick(self, candidates: Sequence[Candidate], count: int) -> list[Candidate]:
        heap = [(self.loads.get(site.id, 0), site.name, index)
                for index, site in enumerate(candidates)]
        heapq.heapify(heap)
        picks = []
        for _ in range(count):
            load, name, index = heapq.heappop(heap)
            picks.append(candidates[index])
            heapq.heappush(heap, (load + 1, name, index))
        for load, _name, index in heap:
            self.loads[candidates[index].id] = load
        return picks

    def save(self) -> None:
        """Loads are read from the database at every pass."""


Policy = FirstPolicy | RoundRobinPolicy | LeastLoadedPolicy


def make_policy(name: str, area: Area, db: SqliteDatabase) -> Policy:
    """The policy of that name; an unknown one is a ConfigError listing the valid ones."""
    if name == "first":
        return FirstPolicy()
    if name == "round-robin":
        return RoundRobinPolicy(area.state_dir / ROTATION_FILE)
    if name == "least-loaded":
        return LeastLoadedPolicy(site_loads(db))
    raise ConfigError(f"unknown matching policy {name!r}; valid policies: "
                      f"{', '.join(MATCHING_POLICIES)}")


def site_loads(db: SqliteDatabase) -> dict[int, int]:
    """Jobs in LOAD_STATES per site id."""
    marks = ",".join("?" * len(LOAD_STATES))
    sql = (f"SELECT site_id, count(*) FROM job WHERE site_id IS NOT NULL "  # noqa: S608
           f"AND state IN ({marks}) GROUP BY site_id")
    return {site_id: count for site_id, count in db.execute_sql(sql, LOAD_STATES)}


def _read_rotation(path: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""  # no file yet, or a torn one: start the rotation again
    last = data.get("last") if isinstance(data, dict) else None
    return last if isinstance(last, str) else ""


def _write_rotation(path: Path, last: str) -> None:
    make_private_dirs(str(path.parent))
    write_private(path, json.dumps({"last": last}))


# -- one matching pass -------------------------------------------------------------------------


@dataclass(frozen=True)
class UnmatchedApp:
    """Jobs of one app that no site satisfies, and why."""

    app: str
    jobs: int
    reason: str


@dataclass
class MatchResult:
    """What one matching pass did."""

    policy: str
    assigned: dict[str, int] = field(default_factory=dict)  # site name -> jobs given to it
    unmatched: int = 0
    unmatched_apps: list[UnmatchedApp] = field(default_factory=list)

    @property
    def total_assigned(self) -> int:
        return sum(self.assigned.values())


_PENDING = (f"SELECT app_id, id FROM job WHERE site_id IS NULL AND state = '{_READY}' "  # noqa: S608
            "ORDER BY priority DESC, id")


def match_jobs(db: SqliteDatabase, area: Area) -> MatchResult:
    """Give every READY job with no site a site that satisfies its app's requirements.

    One transaction: jobs are grouped by app (requirements belong to the app), each group is
    checked against each site once, and the assignments are written in bulk. Jobs no site
    satisfies keep no site, and their message says why (written only when it changes).
    """
    policy_name = area.config.matching.policy
    result = MatchResult(policy_name)
    with write_transaction(db):
        pending: dict[int | None, list[int]] = {}
        for app_id, job_id in db.execute_sql(_PENDING):
            pending.setdefault(app_id, []).append(job_id)
        if not pending:
            return result
        sites = load_candidates(db)
        apps = _apps(db, [app_id for app_id in pending if app_id is not None])
        policy = make_policy(policy_name, area, db)
        for app_id, job_ids in pending.items():
            name, requirements = apps.get(app_id, ("", {})) if app_id is not None else ("", {})
            _match_group(db, result, policy, sites, app_id, name, requirements, job_ids)
        policy.save()
    return result


def _match_group(db: SqliteDatabase, result: MatchResult, policy: Policy,
                 sites: list[Candidate], app_id: int | None, app_name: str,
                 requirements: dict[str, Any], job_ids: list[int]) -> None:
    reasons = {site.name: satisfies(requirements, site.capabilities, site.name) for site in sites}
    candidates = [site for site in sites if reasons[site.name] is None]
    if not candidates:
        reason = unmatched_reason(app_name, [r for r in reasons.values() if r])
        db.execute_sql(f"UPDATE job SET message = ? WHERE site_id IS NULL "  # noqa: S608
                       f"AND state = '{_READY}' "
                       "AND app_id IS ? AND message != ?", (reason, app_id, reason))
        result.unmatched += len(job_ids)
        result.unmatched_apps.append(UnmatchedApp(app_name, len(job_ids), reason))
        return
    picks = policy.pick(candidates, len(job_ids))
    execute_many(db, "UPDATE job SET site_id = ?, message = '' WHERE id = ?",
                 [(site.id, job_id) for site, job_id in zip(picks, job_ids, strict=True)])
    for site in picks:
        result.assigned[site.name] = result.assigned.get(site.name, 0) + 1


def unmatched_reason(app_name: str, site_reasons: list[str]) -> str:
    """One line for `job show`: why no site can take the app's jobs."""
    if not site_reasons:
        return ("no site to match: add one with megarun site add NAME --preset local "
                "--capability KEY=VALUE")
    shown = " | ".join(site_reasons[:_MAX_SITE_REASONS])
    more = len(site_reasons) - _MAX_SITE_REASONS
    extra = f" | and {more} more site(s)" if more > 0 else ""
    what = f"app {app_name!r}" if app_name else "its requirements"
    return f"no site satisfies {what}: {shown}{extra}"


def load_candidates(db: SqliteDatabase) -> list[Candidate]:
    """Every site with its capabilities, by name."""
    rows = db.execute_sql("SELECT id, name, settings FROM site ORDER BY name")
    return [Candidate(site_id, name, SiteSpec.from_stored(name, settings).capability_table())
            for site_id, name, settings in rows]


def _apps(db: SqliteDatabase, app_ids: list[int]) -> dict[int, tuple[str, dict[str, Any]]]:
    if not app_ids:
        return {}
    marks = ",".join("?" * len(app_ids))
    sql = f"SELECT id, name, requirements FROM app WHERE id IN ({marks})"  # noqa: S608
    return {app_id: (name, json.loads(requirements or "{}"))
            for app_id, name, requirements in db.execute_sql(sql, tuple(app_ids))}

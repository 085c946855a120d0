"""The backlog of a site in SQL aggregates: what the elastic policy and `queue backlog` read.

Both must stay cheap on a database of a million jobs, so nothing here loads job rows: one
aggregate over the (site, state) index sums up the jobs that wait for pilots, another the open
pilots; `queue backlog` groups by site, app and jobgroup in one pass. Jobs without a walltime
count 0 minutes of work (the count of such jobs is reported beside the estimate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peewee import SqliteDatabase

from megarun.config.inputs import printable
from megarun.core.states import JobState
from megarun.engine.batch_poll import OPEN_STATES
from megarun.engine.elastic import Backlog, Fit, Pilot
from megarun.errors import NotFoundError
from megarun.schedulers.base import BatchState

#: How many jobs that never fit are named by id (the rest are counted).
NAMED = 5
_READY = JobState.READY.value
_QUEUED = JobState.QUEUED.value
_RUNNING = (JobState.LAUNCHED.value, JobState.RUNNING.value, JobState.KILLREQ.value)
_WAITING = JobState.AWAITING_PARENTS.value
_WALL = "coalesce(walltime, 0)"
# One pass: the jobs some pilot can take, summed; the others counted by why they cannot.
_FITS = f"nodes <= ? AND {_WALL} <= ?"
_AGGREGATE = (
    f"SELECT sum({_FITS}), sum(({_FITS}) AND nodes <= 1), "  # noqa: S608
    f"sum(CASE WHEN {_FITS} AND nodes > 1 THEN nodes ELSE 0 END), "
    f"max(CASE WHEN {_FITS} THEN nodes ELSE 0 END), max(CASE WHEN {_FITS} THEN {_WALL} ELSE 0 END), "
    f"sum(CASE WHEN {_FITS} THEN (CASE WHEN nodes > 1 THEN nodes ELSE 1 END) * {_WALL} ELSE 0 END), "
    f"sum(nodes > ?), sum(nodes <= ? AND {_WALL} > ?) FROM ({{rows}})")


def waiting_jobs(db: SqliteDatabase, sid: int, fit: Fit, ready_limit: int | None) -> Backlog:
    """The site's jobs waiting for a pilot: READY (at most `ready_limit` of them, the launch
    gates' allowance, by priority) and QUEUED (dispatched, not yet claimed)."""
    order = "" if ready_limit is None else " ORDER BY priority DESC, id LIMIT ?"
    rows = (f"SELECT nodes, walltime FROM job WHERE site_id = ? AND state = '{_READY}'{order} "  # noqa: S608
            f"UNION ALL SELECT nodes, walltime FROM job WHERE site_id = ? AND state = '{_QUEUED}'")
    limit = () if ready_limit is None else (ready_limit,)
    nodes, minutes = fit.max_nodes, fit.max_job_walltime
    params = (*([nodes, minutes] * 6), nodes, nodes, minutes, sid, *limit, sid)
    found = db.execute_sql(_AGGREGATE.format(rows=rows), params).fetchone()
    jobs, single, multi, largest, longest, work, wide, long_ = (value or 0 for value in found)
    return Backlog(int(jobs), int(single), int(multi), int(largest), float(longest),
                   float(work), int(wide), int(long_),
                   _named(db, sid, "nodes > ?", (nodes,)) if wide else (),
                   _named(db, sid, f"nodes <= ? AND {_WALL} > ?", (nodes, minutes))
                   if long_ else ())


def _named(db: SqliteDatabase, sid: int, where: str, params: tuple[float, ...]) -> tuple[int, ...]:
    found = db.execute_sql(
        f"SELECT id FROM job WHERE site_id = ? AND state IN ('{_READY}', '{_QUEUED}') AND {where} "  # noqa: S608
        "ORDER BY id LIMIT ?", (sid, *params, NAMED)).fetchall()
    return tuple(int(row[0]) for row in found)


def open_pilots(db: SqliteDatabase, sid: int) -> list[Pilot]:
    """The site's pilots being submitted, queued or running."""
    marks = ",".join("?" * len(OPEN_STATES))
    found = db.execute_sql(
        f"SELECT id, state, nodes, walltime, started, elastic FROM batch_job WHERE site_id = ? "  # noqa: S608
        f"AND mode = 'pilot' AND state IN ({marks}) ORDER BY id", (sid, *OPEN_STATES))
    return [Pilot(int(row_id), _pilot_state(state), int(nodes), float(walltime or 0), started,
                  bool(elastic))
            for row_id, state, nodes, walltime, started, elastic in found]


def _pilot_state(state: str) -> BatchState:
    """Being submitted counts as queued: the scheduler may have it already."""
    found = BatchState(state)
    return BatchState.QUEUED if found is BatchState.PENDING_SUBMISSION else found


def last_elastic_submit(db: SqliteDatabase, sid: int) -> float | None:
    """When the elastic policy last submitted a pilot to the site (epoch seconds)."""
    found = db.execute_sql("SELECT max(created) FROM batch_job WHERE site_id = ? AND elastic = 1",
                           (sid,)).fetchone()
    return None if found is None or found[0] is None else float(found[0])


# -- `queue backlog` -------------------------------------------------------------------------
@dataclass
class BacklogGroup:
    """Jobs of one site (and one app and jobgroup) by what they wait for."""

    ready: int = 0
    waiting_on_dependencies: int = 0
    queued: int = 0  # dispatched to the site's spool, not yet claimed by an agent
    running: int = 0
    single_node: int = 0  # READY and QUEUED jobs of one node
    multi_node_nodes: int = 0  # nodes of the READY and QUEUED multi-node jobs
    node_minutes: float = 0.0  # READY, QUEUED and waiting jobs: nodes x walltime
    without_walltime: int = 0  # READY, QUEUED and waiting jobs with no walltime


@dataclass
class SiteBacklog:
    """One site's backlog, with its app/jobgroup groups (app name, jobgroup) -> counts."""

    site_id: int
    total: BacklogGroup = field(default_factory=BacklogGroup)
    groups: dict[tuple[str, str], BacklogGroup] = field(default_factory=dict)


_GROUPED = (
    "SELECT job.site_id, coalesce(app.name, ''), coalesce(job.jobgroup, ''), job.state, "
    "count(*), sum(job.nodes <= 1), sum(CASE WHEN job.nodes > 1 THEN job.nodes ELSE 0 END), "
    "sum(job.nodes * coalesce(job.walltime, 0)), sum(job.walltime IS NULL) "
    "FROM job LEFT JOIN app ON app.id = job.app_id "
    "WHERE job.state IN ({marks}){where} GROUP BY job.site_id, job.app_id, job.jobgroup, "
    "job.state")


def app_id_of(db: SqliteDatabase, name: str) -> int:
    """The id of the app named `name`; NotFoundError naming the apps there are."""
    found = db.execute_sql("SELECT id FROM app WHERE name = ?", (name,)).fetchone()
    if found is None:
        names = [row[0] for row in db.execute_sql("SELECT name FROM app ORDER BY name LIMIT 20")]
        raise NotFoundError(f"unknown app {printable(name)!r}; apps: {', '.join(names) or 'none'}")
    return int(found[0])


def site_backlogs(db: SqliteDatabase, sid: int | None = None,
                  app_id: int | None = None) -> dict[int, SiteBacklog]:
    """Every site's (or one site's, one app's) backlog by state, app and jobgroup."""
    states = (_READY, _QUEUED, _WAITING, *_RUNNING)
    where = ""
    params: list[object] = list(states)
    for column, value in (("site_id", sid), ("app_id", app_id)):
        if value is not None:
            where += f" AND job.{column} = ?"
            params.append(value)
    sql = _GROUPED.format(marks=",".join("?" * len(states)), where=where)
    result: dict[int, SiteBacklog] = {}
    for site_id, app, group, state, count, single, multi, minutes, bare in db.execute_sql(
            sql, params):
        if site_id is None:
            continue  # not matched to a site yet
        site = result.setdefault(int(site_id), SiteBacklog(int(site_id)))
        for target in (site.total, site.groups.setdefault((app, group), BacklogGroup())):
            _add(target, state, int(count), int(single or 0), int(multi or 0),
                 float(minutes or 0), int(bare or 0))
    return result


def _add(group: BacklogGroup, state: str, count: int, single: int, multi: int,
         minutes: float, bare: int) -> None:
    if state in _RUNNING:
        group.running += count
        return
    if state == _WAITING:
        group.waiting_on_dependencies += count
    elif state == _READY:
        group.ready += count
    else:
        group.queued += count
    if state != _WAITING:
        group.single_node += single
        group.multi_node_nodes += multi
    group.node_minutes += minutes
    group.without_walltime += bare

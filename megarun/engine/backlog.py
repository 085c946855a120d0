"""The backlog of a site in SQL aggregates: what the elastic policy and `queue backlog` read.

Both must stay cheap on a database of a million jobs, so neither scans the job table: they read
the job tally (megarun.db.tally: job counts per site, state, app, jobgroup and shape, kept by
triggers), and the open pilots. Jobs without a walltime count 0 minutes of work (the count of
such jobs is reported beside the estimate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peewee import SqliteDatabase

from megarun.config.inputs import printable
from megarun.core.states import JobState
from megarun.engine.batch_poll import NEVER_RUNS, OPEN_STATES
from megarun.engine.elastic import Backlog, Fit, Pilot
from megarun.errors import NotFoundError
from megarun.schedulers.base import BatchState

#: How many jobs that never fit are named by id (the rest are counted).
NAMED = 5
_READY = JobState.READY.value
_QUEUED = JobState.QUEUED.value
_RUNNING = (JobState.LAUNCHED.value, JobState.RUNNING.value, JobState.KILLREQ.value)
_WAITING = JobState.AWAITING_PARENTS.value
#: A job shape of the backlog: (nodes, walltime in minutes, how many jobs).
Shape = tuple[int, float, int]


def waiting_jobs(db: SqliteDatabase, sid: int, fit: Fit, ready_limit: int | None) -> Backlog:
    """The site's jobs waiting for a pilot: READY (at most `ready_limit` of them, the launch
    gates' allowance, by priority) and QUEUED (dispatched, not yet claimed), split by whether
    a pilot within `fit` can run them. Read from the job tally (megarun.db.tally), but for a
    gate's allowance, which reads that many READY rows."""
    shapes = _tally_shapes(db, sid, (_QUEUED,) if ready_limit is not None else (_READY, _QUEUED))
    if ready_limit is not None:
        shapes += _first_ready(db, sid, ready_limit)
    fits = [(n, w, c) for n, w, c in shapes if n <= fit.max_nodes and w <= fit.max_job_walltime]
    wide = sum(c for n, _w, c in shapes if n > fit.max_nodes)
    long_ = sum(c for n, w, c in shapes if n <= fit.max_nodes and w > fit.max_job_walltime)
    return Backlog(
        sum(c for _n, _w, c in fits), sum(c for n, _w, c in fits if n <= 1),
        sum(n * c for n, _w, c in fits if n > 1), max((n for n, _w, _c in fits), default=0),
        max((w for _n, w, _c in fits), default=0.0),
        sum(max(1, n) * w * c for n, w, c in fits), wide, long_,
        _named(db, sid, "nodes > ?", (fit.max_nodes,)) if wide else (),
        _named(db, sid, "nodes <= ? AND coalesce(walltime, 0) > ?",
               (fit.max_nodes, fit.max_job_walltime)) if long_ else ())


def _tally_shapes(db: SqliteDatabase, sid: int, states: tuple[str, ...]) -> list[Shape]:
    marks = ",".join("?" * len(states))
    found = db.execute_sql(
        f"SELECT nodes, walltime, sum(jobs) FROM job_tally WHERE site_id = ? AND state IN ({marks}) "  # noqa: S608
        "AND jobs > 0 GROUP BY nodes, walltime", (sid, *states))
    return [(int(n), float(w), int(c)) for n, w, c in found]


def _first_ready(db: SqliteDatabase, sid: int, limit: int) -> list[Shape]:
    found = db.execute_sql(
        "SELECT nodes, coalesce(walltime, 0), count(*) FROM (SELECT nodes, walltime FROM job "  # noqa: S608
        f"WHERE site_id = ? AND state = '{_READY}' ORDER BY priority DESC, id LIMIT ?) "
        "GROUP BY 1, 2", (sid, limit))
    return [(int(n), float(w), int(c)) for n, w, c in found]


def _named(db: SqliteDatabase, sid: int, where: str, params: tuple[float, ...]) -> tuple[int, ...]:
    # No ORDER BY: the first few found are enough, and the scan stops there.
    found = db.execute_sql(
        f"SELECT id FROM job WHERE site_id = ? AND state IN ('{_READY}', '{_QUEUED}') AND {where} "  # noqa: S608
        "LIMIT ?", (sid, *params, NAMED)).fetchall()
    return tuple(sorted(int(row[0]) for row in found))


def open_pilots(db: SqliteDatabase, sid: int) -> list[Pilot]:
    """The site's pilots being submitted, queued or running."""
    marks = ",".join("?" * len(OPEN_STATES))
    found = db.execute_sql(
        "SELECT id, state, nodes, walltime, started, elastic, substr(message, 1, ?) = ? "  # noqa: S608
        f"FROM batch_job WHERE site_id = ? AND mode = 'pilot' AND state IN ({marks}) ORDER BY id",
        (len(NEVER_RUNS), NEVER_RUNS, sid, *OPEN_STATES))
    return [Pilot(int(row_id), _pilot_state(state), int(nodes), float(walltime or 0), started,
                  bool(elastic), bool(never))
            for row_id, state, nodes, walltime, started, elastic, never in found]


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
    "SELECT t.site_id, coalesce(app.name, ''), t.jobgroup, t.state, sum(t.jobs), "
    "sum(CASE WHEN t.nodes <= 1 THEN t.jobs ELSE 0 END), "
    "sum(CASE WHEN t.nodes > 1 THEN t.nodes * t.jobs ELSE 0 END), "
    "sum(t.nodes * t.walltime * t.jobs), sum(t.without_walltime) "
    "FROM job_tally AS t LEFT JOIN app ON app.id = t.app_id "
    "WHERE t.jobs > 0 AND t.state IN ({marks}){where} GROUP BY t.site_id, t.app_id, t.jobgroup, "
    "t.state")


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
            where += f" AND t.{column} = ?"
            params.append(value)
    sql = _GROUPED.format(marks=",".join("?" * len(states)), where=where)
    result: dict[int, SiteBacklog] = {}
    for site_id, app, group, state, count, single, multi, minutes, bare in db.execute_sql(
            sql, params):
        if not site_id:
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

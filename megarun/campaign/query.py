"""Job selection: the filters of `job ls` and `job show`, listing, counting, one job's details.

Rows are plain data (TypedDicts) in the order `job ls --json` and `job show --json` have always
printed them; the CLI prints them as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from peewee import SqliteDatabase

from megarun.campaign import app_registry as app_service
from megarun.campaign.steps import job_steps
from megarun.config.area import Area
from megarun.config.inputs import INT64_MAX
from megarun.core.states import FAILING_STATUSES, parse_state, parse_status
from megarun.db.models import Job, Run
from megarun.errors import NotFoundError, UsageError
from megarun.sites import registry as site_service

FAILED_ALIAS = "FAILED"


class JobListing(TypedDict):
    """One job as `job ls` lists it."""

    id: int
    name: str
    state: str
    status: str
    attempt: int
    exit_code: int | None
    tags: dict[str, str]
    created: float
    started: float | None
    ended: float | None
    message: str
    app: str
    site: str | None  # None: not matched to a site yet
    run: str | None  # TARGET/RUNNAME of a suite job; None for a job of an app
    test: str | None
    item: str | None
    params: NotRequired[dict[str, Any]]  # only when asked for (iter_jobs with_params)


class StateCount(TypedDict):
    """`job ls --by-state`: how many jobs have one (state, status)."""

    state: str
    status: str
    count: int


class PlaceCount(TypedDict):
    """`watch`: how many jobs of one site and app have one (state, status)."""

    site: str | None  # None: not matched to a site yet
    app: str
    state: str
    status: str
    count: int


#: One event of a job's trail (`from` is a keyword: the functional form).
JobEvent = TypedDict("JobEvent", {"time": float, "from": str, "to": str, "status": str,
                                  "attempt": int, "message": str})

@dataclass
class JobFilter:
    """What `job ls` selects."""

    tags: dict[str, str] = field(default_factory=dict)
    state: str | None = None
    status: str | None = None
    app: str | None = None
    site: str | None = None
    ids: list[int] | None = None
    run: str | None = None  # TARGET/RUNNAME of a test-suite run
    test: str | None = None  # a test of a suite (its jobs in every run, or in `run`)


def run_id_of(db: SqliteDatabase, run: str) -> int:
    """The id of a run named TARGET/RUNNAME (the target may hold '/' itself)."""
    target, _, runname = run.rpartition("/")
    if not target or not runname:
        raise UsageError(f"--run {run!r}: give TARGET/RUNNAME, e.g. linux/x86_64/nightly")
    found = Run.select(Run.id).where((Run.target == target) & (Run.runname == runname)).first(db)
    if found is None:
        raise NotFoundError(f"--run {run!r}: no such run; runs: {known_runs(db)}")
    return int(found.id)


def known_runs(db: SqliteDatabase) -> str:
    """The area's runs as TARGET/RUNNAME, for a message naming what exists."""
    known = [f"{t}/{r}" for t, r in db.execute_sql(
        "SELECT target, runname FROM run ORDER BY target, runname")]
    return ", ".join(known) if known else "none yet"


def check_filter(db: SqliteDatabase, area: Area, flt: JobFilter) -> None:
    """Refuse a filter naming an unknown state, status, app, site or run (UsageError or
    NotFoundError listing the valid names) before any job is read."""
    _where(db, area, flt)


def _where(db: SqliteDatabase, area: Area, flt: JobFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if flt.state:
        if flt.state.upper() == FAILED_ALIAS:
            marks = ",".join("?" * len(FAILING_STATUSES))
            clauses.append(f"status IN ({marks})")
            params.extend(sorted(s.value for s in FAILING_STATUSES))
        else:
            clauses.append("state = ?")
            params.append(_parse(parse_state, flt.state).value)
    if flt.status:
        clauses.append("status = ?")
        params.append(_parse(parse_status, flt.status).value)
    if flt.app:
        clauses.append("app_id = ?")
        params.append(app_service.get_app(db, flt.app).id)
    if flt.site:
        clauses.append("site_id = ?")
        params.append(site_service.site_id(site_service.OpenArea(area, db), flt.site))
    for key, value in flt.tags.items():
        clauses.append("id IN (SELECT job_id FROM job_tag WHERE key = ? AND value = ?)")
        params.extend((key, value))
    if flt.ids is not None:
        clauses.append(f"id IN ({','.join('?' * len(flt.ids))})")
        params.extend(flt.ids)
    if flt.run:
        clauses.append("run_id = ?")
        params.append(run_id_of(db, flt.run))
    if flt.test:
        clauses.append("test = ?")
        params.append(flt.test)
    return (" AND ".join(clauses) or "1"), params


class JobDetail(TypedDict):
    """`job show`: one job's columns (in this order), names, links, steps and event trail."""

    id: int
    name: str
    command: str
    state: str
    status: str
    attempt: int
    runs: int
    max_attempts: int
    nodes: int
    ranks_per_node: int
    threads_per_rank: int
    gpus_per_rank: int
    node_packing_count: int
    walltime: float | None  # minutes
    priority: int
    workdir: str | None
    exit_code: int | None
    message: str
    agent: str | None
    created: float
    started: float | None
    ended: float | None
    test: str | None
    item: str | None
    app: str
    site: str | None
    params: dict[str, Any]
    tags: dict[str, str]
    env: dict[str, str]
    parents: list[int]
    children: list[int]
    steps: list[dict[str, Any]]
    events: list[JobEvent]


def _parse(parser: Any, name: str) -> Any:
    try:
        return parser(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


_LIST_COLUMNS = ("id", "name", "app_id", "site_id", "state", "status", "attempt", "exit_code",
                 "tags", "created", "started", "ended", "message", "run_id", "test", "item")


#: `job ls` lists at most this many jobs unless told otherwise (--limit 0: all).
DEFAULT_LIST_LIMIT = 1000


def iter_jobs(db: SqliteDatabase, area: Area, flt: JobFilter, limit: int = 0,
              with_params: bool = False) -> Iterator[JobListing]:
    """Jobs matching the filter, oldest first, one at a time from the SQLite cursor (a million
    jobs never sit in memory at once); `limit` 0 means all; `with_params` adds each job's
    parameters (the Python API's jobs have them; `job ls` does not list them). (The area:
    naming the default local site creates it, as everywhere.)"""
    where, params = _where(db, area, flt)
    columns = ", ".join(_LIST_COLUMNS + (("params",) if with_params else ()))
    sql = f"SELECT {columns} FROM job WHERE {where} ORDER BY id"  # noqa: S608
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    apps, sites = _names(db)
    runs = _run_names(db)
    with _small_page_cache(db):
        cursor = db.execute_sql(sql, tuple(params))
        if with_params:
            for row in cursor:
                listing = _listing(row[:-1], apps, sites, runs)
                listing["params"] = json.loads(row[-1])
                yield listing
            return
        for row in cursor:
            yield _listing(row, apps, sites, runs)


def _listing(row: tuple[Any, ...], apps: dict[int, str], sites: dict[int, str],
             runs: dict[int, str]) -> JobListing:
    """One dict literal per row, keys in the order `job ls --json` has always had them (then
    run, test and item: null for a job of an app)."""
    (job_id, name, app_id, site_id, state, status, attempt, exit_code, tags, created,
     started, ended, message, run_id, test, item) = row
    return {"id": job_id, "name": name, "state": state, "status": status,
            "attempt": attempt, "exit_code": exit_code,
            "tags": {} if tags == "{}" else json.loads(tags),  # most jobs have none
            "created": created, "started": started, "ended": ended, "message": message,
            "app": apps.get(app_id, ""),
            "site": sites.get(site_id),  # None: not matched to a site yet
            "run": runs.get(run_id), "test": test,
            "item": item if run_id is not None else None}


#: Page cache (KiB) while a listing scans the job table once.
SCAN_CACHE_KIB = 2048


@contextmanager
def _small_page_cache(db: SqliteDatabase) -> Iterator[None]:
    """A one-pass scan gains nothing from the connection's large page cache, which would fill
    with every page read (64 MB on a big table): keep it small meanwhile, so that a listing's
    memory is flat in the number of jobs."""
    before = db.execute_sql("PRAGMA cache_size").fetchone()[0]
    db.execute_sql(f"PRAGMA cache_size = -{SCAN_CACHE_KIB}")
    try:
        yield
    finally:
        db.execute_sql(f"PRAGMA cache_size = {int(before)}")


def list_jobs(db: SqliteDatabase, area: Area, flt: JobFilter,
              limit: int = 0) -> list[JobListing]:
    """Jobs matching the filter, oldest first; `limit` 0 means all."""
    return list(iter_jobs(db, area, flt, limit))


def count_jobs(db: SqliteDatabase, area: Area, flt: JobFilter) -> int:
    """How many jobs match the filter."""
    where, params = _where(db, area, flt)
    sql = f"SELECT count(*) FROM job WHERE {where}"  # noqa: S608
    return int(db.execute_sql(sql, tuple(params)).fetchone()[0])


def count_by_state(db: SqliteDatabase, area: Area, flt: JobFilter) -> list[StateCount]:
    """(state, status, count) for the jobs matching the filter."""
    where, params = _where(db, area, flt)
    sql = (f"SELECT state, status, count(*) FROM job WHERE {where} "  # noqa: S608
           "GROUP BY state, status ORDER BY state, status")
    return [{"state": s, "status": st, "count": n}
            for s, st, n in db.execute_sql(sql, tuple(params))]


def count_by_place(db: SqliteDatabase, area: Area, flt: JobFilter) -> list[PlaceCount]:
    """(site, app, state, status, count) for the jobs matching the filter: one aggregate
    query, however many jobs, so that `watch` can ask it every second."""
    where, params = _where(db, area, flt)
    sql = (f"SELECT site_id, app_id, state, status, count(*) FROM job WHERE {where} "  # noqa: S608
           "GROUP BY site_id, app_id, state, status")
    rows = db.execute_sql(sql, tuple(params)).fetchall()
    apps, sites = _names(db)
    return [{"site": sites.get(site) if site is not None else None, "app": apps.get(app, ""),
             "state": state, "status": status, "count": int(n)}
            for site, app, state, status, n in rows]


def _names(db: SqliteDatabase) -> tuple[dict[int, str], dict[int, str]]:
    apps = {int(i): str(n) for i, n in db.execute_sql("SELECT id, name FROM app")}
    sites = {int(i): str(n) for i, n in db.execute_sql("SELECT id, name FROM site")}
    return apps, sites


def _run_names(db: SqliteDatabase) -> dict[int, str]:
    """TARGET/RUNNAME of every run, by id."""
    return {int(i): f"{t}/{r}" for i, t, r in db.execute_sql(
        "SELECT id, target, runname FROM run")}


def get_job(db: SqliteDatabase, job_id: int) -> JobDetail:
    """Everything about one job, with its parents, children and event trail."""
    job = Job.select().where(Job.id == job_id).first(db) if abs(job_id) <= INT64_MAX else None
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    apps, sites = _names(db)
    return JobDetail(
        id=job.id, name=job.name, command=job.command, state=job.state, status=job.status,
        attempt=job.attempt, runs=job.runs, max_attempts=job.max_attempts, nodes=job.nodes,
        ranks_per_node=job.ranks_per_node, threads_per_rank=job.threads_per_rank,
        gpus_per_rank=job.gpus_per_rank, node_packing_count=job.node_packing_count,
        walltime=job.walltime, priority=job.priority, workdir=job.workdir,
        exit_code=job.exit_code, message=job.message, agent=job.agent, created=job.created,
        started=job.started, ended=job.ended, test=job.test, item=job.item,
        app=apps.get(job.app_id or 0, ""),
        site=sites.get(job.site_id) if job.site_id is not None else None,
        params=json.loads(job.params), tags=json.loads(job.tags), env=json.loads(job.env),
        parents=[p for (p,) in db.execute_sql(
            "SELECT parent_id FROM job_dependency WHERE child_id = ? ORDER BY parent_id",
            (job_id,))],
        children=[c for (c,) in db.execute_sql(
            "SELECT child_id FROM job_dependency WHERE parent_id = ? ORDER BY child_id",
            (job_id,))],
        steps=_steps_of(db, job_id, job.steps, job.command),
        events=[JobEvent({"time": t, "from": f, "to": to, "status": st, "attempt": a,
                          "message": m})
                for t, f, to, st, a, m in db.execute_sql(
                    "SELECT time, from_state, to_state, status, attempt, message FROM event "
                    "WHERE job = ? ORDER BY id", (job_id,))])


def _steps_of(db: SqliteDatabase, job_id: int, steps_json: str | None,
              command: str) -> list[dict[str, Any]]:
    """Every step of a job with its command and how it went in the job's latest run."""
    commands = [str(s.get("cmd", "")) for s in json.loads(steps_json)] if steps_json else [command]
    results = job_steps(db, [job_id]).get(job_id, [])
    return [{**result.as_dict(), "cmd": cmd} for result, cmd in zip(results, commands, strict=False)]

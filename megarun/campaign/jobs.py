"""Jobs: bulk creation, selection, kill, remove, reset."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.campaign import app_registry as app_service
from megarun.campaign.app_stale import rerender_ended
from megarun.campaign.rerun_step import set_first_step
from megarun.config.apps import AppSpec, render_command, resolve_params
from megarun.config.area import MAX_SECONDS
from megarun.config.inputs import INT64_MAX, find_bad_value, printable
from megarun.core.lifecycle import Chain, parents_outcome
from megarun.core.states import (
    ACTIVE_STATES,
    FAILING_STATUSES,
    JobState,
    JobStatus,
    parse_state,
    parse_status,
)
from megarun.db.connection import execute_many, write_transaction
from megarun.db.jobstore import JobRow, chunks, load_rows, save_rows
from megarun.db.models import App, Job, Run, Site
from megarun.db.transitions import (
    apply_chain,
    ended_ids,
    preq_fail_message,
    settle_children,
)
from megarun.engine.matching import satisfies, site_capabilities
from megarun.errors import MegarunError, NotFoundError, UsageError
from megarun.homehost.context import Context
from megarun.sites import registry as site_service

FAILED_ALIAS = "FAILED"


@dataclass
class JobRequest:
    """What one `job create` (or one line of --from-file) asks for."""

    app: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    site: str | None = None
    nodes: int | None = None
    ranks_per_node: int | None = None
    threads_per_rank: int | None = None
    gpus_per_rank: int | None = None
    node_packing_count: int | None = None
    walltime: float | None = None
    after: list[int] = field(default_factory=list)
    priority: int = 0
    name: str = ""
    count: int = 1
    #: Where the request came from ("jobs.jsonl:3"), named in errors; "" for the options.
    origin: str = field(default="", compare=False)


@dataclass(frozen=True)
class CreatedJobs:
    first_id: int
    last_id: int
    count: int
    states: dict[str, int]
    unmatched: int = 0  # jobs with no site yet: site matching gives them one

    def as_dict(self) -> dict[str, Any]:
        return {"first_id": self.first_id, "last_id": self.last_id, "count": self.count,
                "states": self.states, "unmatched": self.unmatched}


_INSERT_COLUMNS = (
    "name, app_id, site_id, command, params, tags, env, nodes, ranks_per_node, threads_per_rank, "
    "gpus_per_rank, node_packing_count, walltime, priority, state, status, max_attempts, created, "
    "message, attempt, runs"
)
_MARKS = ", ".join("?" * 19) + ", 0, 0"
_INSERT = f"INSERT INTO job ({_INSERT_COLUMNS}) VALUES ({_MARKS})"  # noqa: S608 - constants only
#: --count N: SQLite generates the N identical rows itself.
_COUNT_TO = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
_INSERT_MANY = _COUNT_TO + f"INSERT INTO job ({_INSERT_COLUMNS}) SELECT {_MARKS} FROM n"  # noqa: S608


@dataclass
class _Prepared:
    """A validated request, ready to become `count` rows."""

    row: tuple[Any, ...]  # the INSERT values without state, max_attempts, created, message
    tags: dict[str, str]
    after: list[int]
    max_attempts: int
    count: int


def _resource(request_value: int | float | None, app: AppSpec, key: str, default: Any) -> Any:
    value = request_value if request_value is not None else app.resources.get(key, default)
    least = 0 if key in ("gpus_per_rank", "node_packing_count") else 1
    if value is not None and value < least and key != "walltime":
        raise UsageError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
    if key == "walltime" and value is not None and value <= 0:
        raise UsageError(f"--walltime must be positive minutes, got {value}")
    return value


class _Resolver:
    """Caches apps and sites by name while a batch of requests is validated."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.apps: dict[str, tuple[int, AppSpec]] = {}
        self.sites: dict[str | None, int] = {}
        self.rendered: dict[tuple[str, str], str] = {}
        self.fits: set[tuple[str, str]] = set()  # (site, app) pairs checked by site_for

    def app(self, name: str) -> tuple[int, AppSpec]:
        if name not in self.apps:
            row = app_service.get_app(self.ctx, name)
            self.apps[name] = (row.id, app_service.spec_from_row(row))
        return self.apps[name]

    def site(self, name: str | None) -> int:
        if name not in self.sites:
            if name is None:
                self.sites[name] = self.site(site_service.ensure_default_site(self.ctx).name)
            else:
                self.sites[name] = site_service.site_id(self.ctx, name)
        return self.sites[name]

    def site_for(self, spec: AppSpec, name: str | None) -> int | None:
        """The site of a new job of `spec`: the named one, which must satisfy the app's
        requirements; else None (site matching picks one later) when the app has
        requirements; else the area's default site."""
        if not spec.requirements:
            return self.site(name)
        if name is None:
            return None
        site = self.site(name)
        if (name, spec.name) not in self.fits:
            info = site_service.get_site(self.ctx, name)
            reason = satisfies(spec.requirements, site_capabilities(info.settings), name)
            if reason:
                raise UsageError(f"site {name!r} cannot run app {spec.name!r}: {reason}",
                                 "leave out --site to let site matching choose one")
            self.fits.add((name, spec.name))
        return site

    def command(self, spec: AppSpec, params: dict[str, Any]) -> str:
        key = (spec.name, json.dumps(params, sort_keys=True))
        if key not in self.rendered:
            self.rendered[key] = render_command(spec.command, params, spec.name)
        return self.rendered[key]


#: One request makes at most this many jobs: a typo of a few zeros should not fill the disk.
MAX_COUNT = 10_000_000
_INT_FIELDS = ("nodes", "ranks_per_node", "threads_per_rank", "gpus_per_rank",
               "node_packing_count")
_OPTION_OF = {"params": "-p", "tags": "-t", "app": "--app"}


def _field(request: JobRequest, name: str) -> str:
    """How an error names a field: the option, or the file line and the JSON field."""
    if request.origin:
        return f"{request.origin}: field '{name}'"
    base = name.split(".", 1)[0].split("[", 1)[0]
    rest = name[len(base):].lstrip(".")
    option = _OPTION_OF.get(base, f"--{base.replace('_', '-')}")
    return f"{option} {rest}" if rest and not rest.startswith("[") else option


def validate_request(request: JobRequest) -> None:
    """Refuse a request whose fields have the wrong type or a value megarun cannot store or
    pass to a process (NUL, undecodable text, beyond 64 bits, not finite), naming the field."""
    bad = find_bad_value(request.__dict__)
    if bad is not None:
        raise UsageError(f"{_field(request, bad[0])} {bad[1]}")
    if not isinstance(request.app, str) or not request.app:
        raise UsageError(f"{_field(request, 'app')} must be the name of an app")
    _check_table(request, "params", request.params, (str, int, float))
    _check_table(request, "tags", request.tags, (str,))
    if not isinstance(request.site, (str, type(None))):
        raise UsageError(f"{_field(request, 'site')} must be the name of a site")
    if not isinstance(request.name, str):
        raise UsageError(f"{_field(request, 'name')} must be a string")
    for name in _INT_FIELDS:
        _check_int(request, name, getattr(request, name), optional=True)
    _check_int(request, "priority", request.priority)
    _check_int(request, "count", request.count)
    if not 1 <= request.count <= MAX_COUNT:
        raise UsageError(f"{_field(request, 'count')} must be 1 to {MAX_COUNT}, "
                         f"got {request.count}")
    _check_walltime(request)
    _check_after(request)


def _check_table(request: JobRequest, name: str, table: Any,
                 kinds: tuple[type, ...]) -> None:
    what = "a string" if kinds == (str,) else "a string or a number"
    if not isinstance(table, dict):
        raise UsageError(f"{_field(request, name)} must be an object of name: value")
    for key, value in table.items():
        if not key:
            raise UsageError(f"{_field(request, name)} has an empty name")
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise UsageError(f"{_field(request, f'{name}.{key}')} must be {what}, "
                             f"got {value!r}")


def _check_int(request: JobRequest, name: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{_field(request, name)} must be a whole number, got {value!r}")


def _check_walltime(request: JobRequest) -> None:
    walltime = request.walltime
    if walltime is None:
        return
    if isinstance(walltime, bool) or not isinstance(walltime, (int, float)) \
            or not 0 < walltime <= MAX_SECONDS / 60:
        raise UsageError(f"{_field(request, 'walltime')} must be positive minutes (at most "
                         f"{MAX_SECONDS / 60:g}), got {walltime!r}")


def _check_after(request: JobRequest) -> None:
    if not isinstance(request.after, list):
        raise UsageError(f"{_field(request, 'after')} must be a list of job ids")
    for parent in request.after:
        if isinstance(parent, bool) or not isinstance(parent, int) \
                or not 1 <= parent <= INT64_MAX:
            raise UsageError(f"{_field(request, 'after')}: no job {printable(str(parent))}")


def _prepare(resolver: _Resolver, request: JobRequest, default_retries: int) -> _Prepared:
    validate_request(request)
    app_id, spec = resolver.app(request.app)
    params = resolve_params(spec, request.params)
    command = resolver.command(spec, params)
    site_id = resolver.site_for(spec, request.site)
    row = (
        request.name, app_id, site_id, command,
        json.dumps(params, separators=(",", ":")),
        json.dumps(request.tags, separators=(",", ":")),
        json.dumps(spec.env, separators=(",", ":")),
        _resource(request.nodes, spec, "nodes", 1),
        _resource(request.ranks_per_node, spec, "ranks_per_node", 1),
        _resource(request.threads_per_rank, spec, "threads_per_rank", 1),
        _resource(request.gpus_per_rank, spec, "gpus_per_rank", 0),
        _resource(request.node_packing_count, spec, "node_packing_count", 0),
        _resource(request.walltime, spec, "walltime", None),
        request.priority,
    )
    max_attempts = 1 + max(spec.retries, default_retries)
    return _Prepared(row, request.tags, sorted(set(request.after)), max_attempts, request.count)


def create_jobs(ctx: Context, requests: Iterable[JobRequest]) -> CreatedJobs:
    """Validate every request first, then create all their jobs in one transaction."""
    resolver = _Resolver(ctx)
    retries = ctx.area.config.launcher.retries
    prepared = [_prepare(resolver, request, retries) for request in requests]
    if not prepared:
        raise UsageError("no jobs to create")
    db = ctx.db
    with write_transaction(db):
        return _insert(db, prepared)


def _initial_state(db: SqliteDatabase, parents: dict[int, JobRow],
                   after: list[int]) -> tuple[JobState, str]:
    """A new job's state, and the message of one its parents already failed (PREQ_FAIL)."""
    if not after:
        return JobState.READY, ""
    links = [(p, parents[p].snapshot.state, parents[p].snapshot.status, "normal") for p in after]
    outcome = parents_outcome([(state, status) for _, state, status, _ in links])
    if outcome == "failed":
        return JobState.COMPLETED, preq_fail_message(db, links)
    return (JobState.READY if outcome == "ready" else JobState.AWAITING_PARENTS), ""


def _insert(db: SqliteDatabase, prepared: list[_Prepared]) -> CreatedJobs:
    """Insert all jobs, their CREATED events, tags and dependencies (inside a transaction).

    Ids are consecutive (the table is AUTOINCREMENT and the transaction holds the write lock),
    so a request with --count N becomes N rows generated inside SQLite, and events, tags and
    dependency links are derived from id ranges rather than built row by row in Python.
    """
    parent_ids = {p for item in prepared for p in item.after}
    parents = load_rows(db, parent_ids)
    missing = parent_ids - parents.keys()
    if missing:
        raise NotFoundError(f"--after: no job {min(missing)}")
    first = next_job_id(db)
    now = time.time()
    singles: list[tuple[Any, ...]] = []
    ranges: list[tuple[_Prepared, int, int]] = []
    states: dict[str, int] = {}
    next_id = first
    for item in prepared:
        state, message = _initial_state(db, parents, item.after)
        status = JobStatus.PREQ_FAIL if state is JobState.COMPLETED else JobStatus.NA
        values = (*item.row, state.value, status.value, item.max_attempts, now, message)
        states[state.value] = states.get(state.value, 0) + item.count
        if item.count == 1:
            singles.append(values)
        else:
            execute_many(db, _INSERT, singles)
            singles = []
            db.execute_sql(_INSERT_MANY, (item.count, *values))
        ranges.append((item, next_id, next_id + item.count - 1))
        next_id += item.count
    execute_many(db, _INSERT, singles)
    for item, low, high in ranges:
        _insert_tags_and_links(db, item, low, high)
    _check_ids(db, first, next_id - 1)
    db.execute_sql(_CREATED_EVENTS, (now, first, next_id - 1))
    unmatched = sum(item.count for item in prepared if item.row[2] is None)
    return CreatedJobs(first, next_id - 1, next_id - first, states, unmatched)


_CREATED_EVENTS = (
    "INSERT INTO event (job, time, from_state, to_state, status, attempt, message, data) "  # noqa: S608
    f"SELECT id, ?, '{JobState.CREATED.value}', state, status, 0, message, NULL FROM job "
    "WHERE id BETWEEN ? AND ?"
)


def _insert_tags_and_links(db: SqliteDatabase, item: _Prepared, first: int, last: int) -> None:
    for key, value in item.tags.items():
        db.execute_sql("INSERT INTO job_tag (job_id, key, value) SELECT id, ?, ? FROM job "
                       "WHERE id BETWEEN ? AND ?", (key, value, first, last))
    for parent in item.after:
        db.execute_sql("INSERT INTO job_dependency (parent_id, child_id) SELECT ?, id FROM job "
                       "WHERE id BETWEEN ? AND ?", (parent, first, last))


def next_job_id(db: SqliteDatabase) -> int:
    row = db.execute_sql("SELECT seq FROM sqlite_sequence WHERE name = 'job'").fetchone()
    return (row[0] if row else 0) + 1


def _check_ids(db: SqliteDatabase, first: int, last: int) -> None:
    seq = db.execute_sql("SELECT seq FROM sqlite_sequence WHERE name = 'job'").fetchone()[0]
    if seq != last:
        raise RuntimeError(f"job ids {first}..{last} expected, database ended at {seq}")


def requests_from_file(path: Path, defaults: JobRequest) -> Iterator[JobRequest]:
    """JSON Lines: one object per job (app, params, tags, site, resources, after, count...)."""
    allowed = set(JobRequest.__dataclass_fields__) - {"origin"}
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise UsageError(f"--from-file {path}: {exc.strerror}") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            data = _json_line(raw, where)
            if data is None:
                continue
            if not isinstance(data, dict):
                raise UsageError(f"{where}: each line must be a JSON object")
            unknown = set(data) - allowed
            if unknown:
                raise UsageError(f"{where}: unknown field '{printable(sorted(unknown)[0])}' "
                                 f"(fields: {', '.join(sorted(allowed))})")
            merged = {**defaults.__dict__, **data, "origin": where}
            if not merged.get("app"):
                raise UsageError(f"{where}: no app (give \"app\" or --app)")
            yield JobRequest(**merged)  # checked by create_jobs, named by its origin


def _json_line(raw: bytes, where: str) -> Any:
    """One line of a JSON Lines file, decoded and parsed; None for a blank line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                         f"{exc.start + 1})") from None
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except RecursionError:
        raise UsageError(f"{where}: not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise UsageError(f"{where}: not valid JSON: {exc}") from exc


# -- selection ------------------------------------------------------------------------------


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


def run_id_of(ctx: Context, run: str) -> int:
    """The id of a run named TARGET/RUNNAME (the target may hold '/' itself)."""
    target, _, runname = run.rpartition("/")
    if not target or not runname:
        raise UsageError(f"--run {run!r}: give TARGET/RUNNAME, e.g. linux/x86_64/nightly")
    ctx.db  # noqa: B018 - opens the database and binds the models
    found = Run.get_or_none((Run.target == target) & (Run.runname == runname))
    if found is None:
        raise NotFoundError(f"--run {run!r}: no such run; runs: {known_runs()}")
    return int(found.id)


def known_runs() -> str:
    """The area's runs as TARGET/RUNNAME, for a message naming what exists (the db is bound)."""
    known = [f"{r.target}/{r.runname}" for r in Run.select().order_by(Run.target, Run.runname)]
    return ", ".join(known) if known else "none yet"


def _where(ctx: Context, flt: JobFilter) -> tuple[str, list[Any]]:
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
        params.append(app_service.get_app(ctx, flt.app).id)
    if flt.site:
        clauses.append("site_id = ?")
        params.append(site_service.site_id(ctx, flt.site))
    for key, value in flt.tags.items():
        clauses.append("id IN (SELECT job_id FROM job_tag WHERE key = ? AND value = ?)")
        params.extend((key, value))
    if flt.ids is not None:
        clauses.append(f"id IN ({','.join('?' * len(flt.ids))})")
        params.extend(flt.ids)
    if flt.run:
        clauses.append("run_id = ?")
        params.append(run_id_of(ctx, flt.run))
    if flt.test:
        clauses.append("test = ?")
        params.append(flt.test)
    return (" AND ".join(clauses) or "1"), params


def _parse(parser: Any, name: str) -> Any:
    try:
        return parser(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


_LIST_COLUMNS = ("id", "name", "app_id", "site_id", "state", "status", "attempt", "exit_code",
                 "tags", "created", "started", "ended", "message", "run_id", "test", "item")


#: `job ls` lists at most this many jobs unless told otherwise (--limit 0: all).
DEFAULT_LIST_LIMIT = 1000


def iter_jobs(ctx: Context, flt: JobFilter, limit: int = 0) -> Iterator[dict[str, Any]]:
    """Jobs matching the filter, oldest first, one at a time from the SQLite cursor (a million
    jobs never sit in memory at once); `limit` 0 means all."""
    where, params = _where(ctx, flt)
    sql = f"SELECT {', '.join(_LIST_COLUMNS)} FROM job WHERE {where} ORDER BY id"  # noqa: S608
    if limit:
        sql += " LIMIT ?"
        params.append(limit)
    apps, sites = _names(ctx)
    runs = _run_names(ctx)
    with _small_page_cache(ctx.db):
        # One dict literal per row, keys in the order `job ls --json` has always had them
        # (then run, test and item: null for a job of an app).
        for (job_id, name, app_id, site_id, state, status, attempt, exit_code, tags, created,
             started, ended, message, run_id, test, item) in ctx.db.execute_sql(sql,
                                                                             tuple(params)):
            yield {"id": job_id, "name": name, "state": state, "status": status,
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


def list_jobs(ctx: Context, flt: JobFilter, limit: int = 0) -> list[dict[str, Any]]:
    """Jobs matching the filter, oldest first; `limit` 0 means all."""
    return list(iter_jobs(ctx, flt, limit))


def count_jobs(ctx: Context, flt: JobFilter) -> int:
    """How many jobs match the filter."""
    where, params = _where(ctx, flt)
    sql = f"SELECT count(*) FROM job WHERE {where}"  # noqa: S608
    return int(ctx.db.execute_sql(sql, tuple(params)).fetchone()[0])


def count_by_state(ctx: Context, flt: JobFilter) -> list[dict[str, Any]]:
    """(state, status, count) for the jobs matching the filter."""
    where, params = _where(ctx, flt)
    sql = (f"SELECT state, status, count(*) FROM job WHERE {where} "  # noqa: S608
           "GROUP BY state, status ORDER BY state, status")
    return [{"state": s, "status": st, "count": n}
            for s, st, n in ctx.db.execute_sql(sql, tuple(params))]


def _names(ctx: Context) -> tuple[dict[int, str], dict[int, str]]:
    ctx.db  # noqa: B018 - opens the database and binds the models
    apps = {a.id: a.name for a in App.select(App.id, App.name)}
    sites = {s.id: s.name for s in Site.select(Site.id, Site.name)}
    return apps, sites


def _run_names(ctx: Context) -> dict[int, str]:
    """TARGET/RUNNAME of every run, by id."""
    return {int(i): f"{t}/{r}" for i, t, r in ctx.db.execute_sql(
        "SELECT id, target, runname FROM run")}


def get_job(ctx: Context, job_id: int) -> dict[str, Any]:
    """Everything about one job, with its parents, children and event trail."""
    ctx.db  # noqa: B018
    job = Job.get_or_none(Job.id == job_id) if abs(job_id) <= INT64_MAX else None
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    apps, sites = _names(ctx)
    data = {name: getattr(job, name) for name in (
        "id", "name", "command", "state", "status", "attempt", "runs", "max_attempts",
        "nodes", "ranks_per_node", "threads_per_rank", "gpus_per_rank", "node_packing_count",
        "walltime", "priority",
        "workdir", "exit_code", "message", "agent", "created", "started", "ended", "test",
        "item")}
    data["app"] = apps.get(job.app_id or 0, "")
    data["site"] = sites.get(job.site_id) if job.site_id is not None else None
    for key in ("params", "tags", "env"):
        data[key] = json.loads(getattr(job, key))
    data["parents"] = [p for (p,) in ctx.db.execute_sql(
        "SELECT parent_id FROM job_dependency WHERE child_id = ? ORDER BY parent_id", (job_id,))]
    data["children"] = [c for (c,) in ctx.db.execute_sql(
        "SELECT child_id FROM job_dependency WHERE parent_id = ? ORDER BY child_id", (job_id,))]
    data["steps"] = _steps_of(ctx, job_id, job.steps, job.command)
    data["events"] = [
        {"time": t, "from": f, "to": to, "status": st, "attempt": a, "message": m}
        for t, f, to, st, a, m in ctx.db.execute_sql(
            "SELECT time, from_state, to_state, status, attempt, message FROM event "
            "WHERE job = ? ORDER BY id", (job_id,))
    ]
    return data


def _steps_of(ctx: Context, job_id: int, steps_json: str | None,
              command: str) -> list[dict[str, Any]]:
    """Every step of a job with its command and how it went in the job's latest run."""
    from megarun.campaign.steps import job_steps

    commands = [str(s.get("cmd", "")) for s in json.loads(steps_json)] if steps_json else [command]
    results = job_steps(ctx.db, [job_id]).get(job_id, [])
    return [{**result.as_dict(), "cmd": cmd} for result, cmd in zip(results, commands, strict=False)]


def _existing_rows(ctx: Context, job_ids: list[int]) -> dict[int, JobRow]:
    rows = load_rows(ctx.db, [job_id for job_id in job_ids if abs(job_id) <= INT64_MAX])
    missing = sorted(set(job_ids) - rows.keys())
    if missing:
        raise NotFoundError(f"no job {missing[0]}")
    return rows


def kill_jobs(ctx: Context, job_ids: list[int]) -> dict[str, list[int]]:
    """Kill jobs: waiting ones at once, active ones through the agent's spool (KILLREQ)."""
    db = ctx.db
    result: dict[str, list[int]] = {"killed": [], "requested": [], "skipped": []}
    to_signal: list[tuple[int, int]] = []
    with write_transaction(db):
        rows = _existing_rows(ctx, job_ids)
        for row in rows.values():
            state = row.snapshot.state
            if state in (JobState.READY, JobState.AWAITING_PARENTS, JobState.CREATED):
                apply_chain(row, Chain(row.snapshot).to(JobState.KILLED, message="killed by user"))
                row.message = "killed by user"
                result["killed"].append(row.id)
            elif state in ACTIVE_STATES and state is not JobState.KILLREQ:
                apply_chain(row, Chain(row.snapshot).to(JobState.KILLREQ, message="kill requested"))
                result["requested"].append(row.id)
                to_signal.append((row.id, _site_of(db, row.id)))
            elif state is JobState.KILLREQ:
                result["requested"].append(row.id)
                to_signal.append((row.id, _site_of(db, row.id)))
            else:
                result["skipped"].append(row.id)
        settle_children(db, rows, ended_ids(rows.values()))
        save_rows(db, rows.values())
    undelivered = _signal_kills(ctx, to_signal)
    if undelivered:
        result["undelivered"] = undelivered
    return result


def _site_of(db: SqliteDatabase, job_id: int) -> int:
    return int(db.execute_sql("SELECT site_id FROM job WHERE id = ?", (job_id,)).fetchone()[0])


def _signal_kills(ctx: Context, kills: list[tuple[int, int]]) -> list[int]:
    """Write the kill requests; deliver those for SSH sites now. Returns undelivered job ids."""
    sites = {s.id: s for s in Site.select()}
    by_site: dict[int, list[int]] = {}
    for job_id, site_id in kills:
        by_site.setdefault(site_id, []).append(job_id)
    undelivered: list[int] = []
    for site_id, job_ids in by_site.items():
        spool = site_service.get_site(ctx, sites[site_id].name).spool()
        for job_id in job_ids:
            spool.request_kill(job_id)
        if not spool.delivers_later:
            continue
        try:
            spool.deliver()
        except MegarunError:
            undelivered.extend(job_ids)  # the next launch or sync cycle delivers them
    return undelivered


def remove_jobs(ctx: Context, job_ids: list[int]) -> list[int]:
    """Delete finished or waiting jobs (their event trail stays); active jobs are refused."""
    db = ctx.db
    with write_transaction(db):
        rows = _existing_rows(ctx, job_ids)
        active = [row.id for row in rows.values() if row.snapshot.state in ACTIVE_STATES]
        if active:
            raise UsageError(f"job {active[0]} is {rows[active[0]].snapshot.state.value}; "
                             "kill it first (megarun job kill)")
        for row in rows.values():
            if row.snapshot.state is not JobState.DELETED:
                apply_chain(row, Chain(row.snapshot).to(JobState.DELETED, message="removed"))
        settle_children(db, rows, set(rows))
        save_rows(db, rows.values())
        for part in chunks(sorted(rows)):
            marks = ",".join("?" * len(part))
            db.execute_sql(f"DELETE FROM job WHERE id IN ({marks})", tuple(part))  # noqa: S608
    return sorted(rows)


def reset_jobs(ctx: Context, job_ids: list[int], from_step: str | None = None) -> list[int]:
    """Send ended jobs back to READY with a fresh set of attempts, each plain job with the
    command its app renders now (megarun.campaign.app_stale: a job the app cannot render
    refuses the whole reset, naming it).

    The set is granted, not restarted: `runs` goes on counting every start and
    `max_attempts` grows to runs + 1 + retries (as now configured), so that a job's attempt
    numbers never pass its max_attempts after a rerun. `from_step` (rerun --step) makes the
    next attempts start at that step; None runs every step (megarun.campaign.rerun_step).
    """
    db = ctx.db
    with write_transaction(db):
        rows = _existing_rows(ctx, job_ids)
        active = [row.id for row in rows.values() if row.snapshot.state in ACTIVE_STATES]
        if active:
            raise UsageError(f"job {active[0]} is {rows[active[0]].snapshot.state.value}; "
                             "kill it first (megarun job kill)")
        rerender_ended(db, _app_specs(), sorted(row.id for row in rows.values()
                                                if row.snapshot.state not in _NOT_RESET))
        set_first_step(db, sorted(rows), from_step)
        grants = _attempt_grants(ctx, sorted(rows))
        granted = []
        for row in rows.values():
            if row.snapshot.state in _NOT_RESET:
                continue
            chain = Chain(row.snapshot).to(JobState.READY, message="reset by user")
            apply_chain(row, chain)
            total = min(INT64_MAX, row.snapshot.runs + grants[row.id])
            row.snapshot = replace(row.snapshot, max_attempts=total)
            granted.append((total, row.id))
            row.exit_code = None
            row.message = ""
        save_rows(db, rows.values())
        execute_many(db, "UPDATE job SET max_attempts = ? WHERE id = ?", granted)
    return sorted(rows)


#: Jobs `job reset` leaves as they are: they wait to run already (and an app change gave them
#: its new command when it was saved).
_NOT_RESET = (JobState.READY, JobState.AWAITING_PARENTS)


def _app_specs() -> dict[int, AppSpec]:
    """Every app by id, as it is now (the app table is small; the models are bound)."""
    return {int(app.id): app_service.spec_from_row(app) for app in App.select()}


def _attempt_grants(ctx: Context, job_ids: list[int]) -> dict[int, int]:
    """1 + retries per job, as a new job would get now: its app's or the area's retries."""
    retries = ctx.area.config.launcher.retries
    grants: dict[int, int] = {}
    for part in chunks(job_ids):
        marks = ",".join("?" * len(part))
        sql = (f"SELECT job.id, app.retries FROM job LEFT JOIN app ON app.id = job.app_id "  # noqa: S608
               f"WHERE job.id IN ({marks})")
        for job_id, app_retries in ctx.db.execute_sql(sql, tuple(part)):
            grants[job_id] = 1 + max(app_retries or 0, retries)
    return grants


def fail_status_values() -> list[str]:
    return sorted(s.value for s in FAILING_STATUSES)

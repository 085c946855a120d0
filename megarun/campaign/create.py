"""Job creation: requests (from the options or a JSON Lines file), their validation, and the
one transaction that creates all their jobs, tags and dependencies."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.campaign import app_registry as app_service
from megarun.config.apps import AppSpec, render_command, resolve_params
from megarun.config.area import Area
from megarun.config.inputs import INT64_MAX, find_bad_value, printable
from megarun.config.requirements import satisfies
from megarun.core.lifecycle import parents_outcome
from megarun.core.quantities import MAX_SECONDS, MINUTE, parse_duration
from megarun.core.states import JobState, JobStatus
from megarun.db.connection import execute_many, write_transaction
from megarun.db.jobstore import JobRow, load_rows
from megarun.db.transitions import preq_fail_message
from megarun.errors import NotFoundError, UsageError
from megarun.sites import registry as site_service


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

    def __init__(self, db: SqliteDatabase, area: Area) -> None:
        self.db = db
        self.open = site_service.OpenArea(area, db)
        self.apps: dict[str, tuple[int, AppSpec]] = {}
        self.sites: dict[str | None, int] = {}
        self.rendered: dict[tuple[str, str], str] = {}
        self.fits: set[tuple[str, str]] = set()  # (site, app) pairs checked by site_for

    def app(self, name: str) -> tuple[int, AppSpec]:
        if name not in self.apps:
            row = app_service.get_app(self.db, name)
            self.apps[name] = (row.id, app_service.spec_from_row(row))
        return self.apps[name]

    def site(self, name: str | None) -> int:
        if name not in self.sites:
            if name is None:
                self.sites[name] = self.site(site_service.ensure_default_site(self.open).name)
            else:
                self.sites[name] = site_service.site_id(self.open, name)
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
            info = site_service.get_site(self.open, name)
            reason = satisfies(spec.requirements, info.spec.capability_table(), name)
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


def create_jobs(db: SqliteDatabase, area: Area, requests: Iterable[JobRequest]) -> CreatedJobs:
    """Validate every request first, then create all their jobs in one transaction (sites
    and the retries a job gets come from the area)."""
    resolver = _Resolver(db, area)
    retries = area.config.launcher.retries
    prepared = [_prepare(resolver, request, retries) for request in requests]
    if not prepared:
        raise UsageError("no jobs to create")
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
            if isinstance(data.get("walltime"), str):  # a duration; a bare number is minutes
                merged["walltime"] = parse_duration(data["walltime"], f"{where}: field "
                                                    "'walltime'", MINUTE) / MINUTE
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

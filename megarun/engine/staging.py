"""Stage-in and stage-out: copying an app's declared files between the home host and a job's
run dir on its site (docs/concepts.md, "Staging files").

- Stage-in runs in dispatch, before a job is put in a bundle: the files are in the run dir
  before any agent can see the job. A failed stage-in ends the job FAIL ("stage-in failed:
  <reason>"), retried while attempts remain, like a job that failed to start.
- Stage-out runs after ingest, for jobs that ended COMPLETED with a good status (PASS, WARN,
  WAIVED, SKIP); a job that ended badly keeps its files on the site and copies nothing home, so a
  failed attempt never overwrites the results of a good one. Dispatch records each attempt that
  owes a stage-out (table stage_out_due); the files are copied (atomically, file by file, so
  copying twice is harmless), and only then is the record removed: a crash in between copies
  again, never loses the copy. A failed stage-out turns the job's status to FAIL
  ("stage-out failed: <reason>"), retried while attempts remain, and its children that were
  released but not yet dispatched wait again.
- No database transaction is open while files move. A lost connection to the site is an
  environment problem (the jobs keep their state); a missing or unreadable file fails the job.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.config.apps import job_path_problem, render_path
from megarun.core.lifecycle import Chain, JobSnapshot, Transition
from megarun.core.states import ACTIVE_STATES, GOOD_STATUSES, JobState, JobStatus, sql_list
from megarun.db.connection import execute_many, write_transaction
from megarun.db.jobstore import JobRow, children_of, chunks, load_rows, save_rows
from megarun.db.transitions import apply_chain, settle_children
from megarun.errors import EnvironmentProblem, MegarunError
from megarun.sites.connect import transport_for
from megarun.sites.registry import SiteInfo
from megarun.transport.base import Transport

#: At most this many jobs are staged in per dispatch call, and staging stops starting new
#: transfers after STAGE_SECONDS: the launcher goes on taking in events meanwhile.
STAGE_IN_MAX_JOBS = 100
STAGE_SECONDS = 10.0

_REASONS = {
    errno.ENOENT: "no such file",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "not a directory",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}

_DUE_SQL = (
    # CROSS JOIN keeps SQLite from starting at the job table: the due table drives, so an
    # empty one costs nothing however many jobs the site has.
    "SELECT d.job_id, d.attempt, j.state, j.status, j.attempt, j.workdir, j.params, j.app_id "  # noqa: S608
    "FROM stage_out_due AS d CROSS JOIN job AS j ON j.id = d.job_id "
    "CROSS JOIN site AS s ON s.id = j.site_id "
    f"WHERE s.name = ? AND j.state NOT IN ({sql_list(ACTIVE_STATES)}) "
    "ORDER BY d.job_id"
)


class StagingError(MegarunError):
    """One file could not be staged; `reason` is one line naming the path and the cause."""

    def __init__(self, direction: str, reason: str) -> None:
        super().__init__(f"{direction}: {reason}")
        self.direction = direction
        self.reason = reason


@dataclass(frozen=True)
class StageItem:
    """One rendered entry: `src` and `dest` as they will be used (see stage_in/stage_out)."""

    src: str
    dest: str


@dataclass(frozen=True)
class AppStaging:
    """The raw (template) staging entries of one app."""

    stage_in: list[dict[str, str]]
    stage_out: list[dict[str, str]]


# -- transfers -------------------------------------------------------------------------------
def stage_in(transport: Transport, job_dir: str, items: list[StageItem]) -> None:
    """Copy home-host files or folders (`src`, absolute) into `job_dir` (`dest`, relative)."""
    for item in items:
        try:
            kind = os.stat(item.src).st_mode
        except OSError as exc:
            raise StagingError("stage-in", f"{item.src}: {_why(exc)}") from None
        target = posixpath.join(job_dir, item.dest)
        with _failing_as("stage-in", f"{item.src} -> {_on(transport, target)}", transport):
            transport.makedirs(posixpath.dirname(target))
            if stat.S_ISDIR(kind):
                transport.put_tree(item.src, target)
            else:
                transport.put(item.src, target)


def stage_out(transport: Transport, job_dir: str, items: list[StageItem]) -> None:
    """Copy files or folders of `job_dir` (`src`, relative) to the home host (`dest`, absolute)."""
    for item in items:
        source = posixpath.join(job_dir, item.src)
        where = f"{_on(transport, source)} -> {item.dest}"
        with _failing_as("stage-out", where, transport):
            if not transport.exists(source):
                raise StagingError("stage-out", f"{_on(transport, source)}: no such file")
            os.makedirs(os.path.dirname(item.dest) or ".", exist_ok=True)
            if transport.is_dir(source):
                transport.get_tree(source, item.dest)
            else:
                transport.get(source, item.dest)


@contextmanager
def _failing_as(direction: str, where: str, transport: Transport) -> Iterator[None]:
    """Turn a file error into a StagingError; a lost connection into an EnvironmentProblem."""
    try:
        yield
    except (ConnectionError, TimeoutError, EOFError) as exc:
        raise EnvironmentProblem(f"{direction}: lost the connection to "
                                 f"{transport.description}: {exc}") from None
    except OSError as exc:
        raise StagingError(direction, f"{where}: {_why(exc)}") from None


def _why(exc: OSError) -> str:
    reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc) or type(exc).__name__
    return " ".join(str(reason).split())[:300]


def _on(transport: Transport, path: str) -> str:
    return path if transport.description == "local" else f"{path} on {transport.description}"


# -- rendering an app's entries for one job --------------------------------------------------
def render_items(entries: list[dict[str, str]], params: dict[str, Any], home: Path,
                 direction: str) -> list[StageItem]:
    """Render templates with the job's parameters; check the run-dir side, anchor the home side.

    A relative home-host path is relative to `home` (the area's root); `~` is expanded.
    """
    job_side = "dest" if direction == "stage-in" else "src"
    items = []
    for entry in entries:
        try:
            src, dest = (render_path(entry[part], params) for part in ("src", "dest"))
        except MegarunError as exc:
            raise StagingError(direction, exc.message) from None
        inside = dest if job_side == "dest" else src
        problem = job_path_problem(inside)
        if problem:
            raise StagingError(direction, f"{inside!r} {problem}")
        if job_side == "dest":
            items.append(StageItem(_home_path(src, home), posixpath.normpath(dest)))
        else:
            items.append(StageItem(posixpath.normpath(src), _home_path(dest, home)))
    return items


def _home_path(path: str, home: Path) -> str:
    return os.path.normpath(os.path.join(home, os.path.expanduser(path)))


def staging_apps(db: SqliteDatabase) -> dict[int, AppStaging]:
    """The apps that stage anything, by id (one query on the small app table)."""
    rows = db.execute_sql("SELECT id, stage_in, stage_out FROM app "
                          "WHERE stage_in IS NOT NULL OR stage_out IS NOT NULL").fetchall()
    return {app_id: AppStaging(json.loads(ins or "[]"), json.loads(outs or "[]"))
            for app_id, ins, outs in rows}


def site_transport_for(site: SiteInfo) -> Transport:
    """The transport that reaches the site's files: this machine, or its pooled SSH one."""
    return transport_for(site)


def area_of(db: SqliteDatabase) -> Path:
    """The area root of a working database (<area>/.megarun/work.db)."""
    return Path(str(db.database)).resolve().parent.parent


# -- stage-in for dispatch -------------------------------------------------------------------
def stage_in_ready(db: SqliteDatabase, site: SiteInfo, jobs: dict[int, str],
                   apps: dict[int, AppStaging], home: Path,
                   transport: Transport | None = None) -> dict[int, str | None]:
    """Stage in the files of READY jobs ({id: run dir}) before they are queued.

    Returns {job id: None when staged, else the failure reason}; jobs left out (over
    STAGE_IN_MAX_JOBS or STAGE_SECONDS) stay READY for the next call. Reads only: the caller
    queues or fails the jobs in its own transaction afterwards.
    """
    details = _job_details(db, list(jobs)[:STAGE_IN_MAX_JOBS])
    deadline = time.monotonic() + STAGE_SECONDS
    outcome: dict[int, str | None] = {}
    for job_id, (app_id, params) in details.items():
        if time.monotonic() > deadline:
            break
        transport = transport or site_transport_for(site)
        try:
            items = render_items(apps[app_id].stage_in, params, home, "stage-in")
            stage_in(transport, jobs[job_id], items)
        except StagingError as exc:
            outcome[job_id] = exc.reason
        else:
            outcome[job_id] = None
    return outcome


def _job_details(db: SqliteDatabase, ids: list[int]) -> dict[int, tuple[int, dict[str, Any]]]:
    found: dict[int, tuple[int, dict[str, Any]]] = {}
    for part in chunks(ids):
        marks = ",".join("?" * len(part))
        sql = f"SELECT id, app_id, params FROM job WHERE id IN ({marks})"  # noqa: S608
        for job_id, app_id, params in db.execute_sql(sql, tuple(part)):
            found[job_id] = (app_id, json.loads(params or "{}"))
    return {job_id: found[job_id] for job_id in ids if job_id in found}


def owe_stage_out(db: SqliteDatabase, rows: list[JobRow]) -> None:
    """Record that these just-queued attempts owe a stage-out (inside the queuing transaction)."""
    execute_many(db, "INSERT OR REPLACE INTO stage_out_due (job_id, attempt) VALUES (?, ?)",
                 [(row.id, row.snapshot.attempt) for row in rows])


# -- stage-out after ingest ------------------------------------------------------------------
@dataclass
class StageOutResult:
    """What one stage-out pass did."""

    copied: int = 0
    failed: int = 0
    dropped: int = 0  # owed by attempts that ended badly or were replaced: nothing to copy
    left: int = 0  # not reached within STAGE_SECONDS: next pass
    #: (status counted before, status now) of each job whose stage-out failed; "n/a" now
    #: when the job went back to READY for a retry.
    rejudged: list[tuple[str, str]] = field(default_factory=list)

    def adjust(self, by_status: dict[str, int]) -> int:
        """Move a launcher's per-status counts of finished jobs; return the change of 'done'."""
        done = 0
        for before, now in self.rejudged:
            by_status[before] = by_status.get(before, 0) - 1
            if by_status[before] <= 0:
                del by_status[before]
            if now == JobStatus.NA.value:
                done -= 1
            else:
                by_status[now] = by_status.get(now, 0) + 1
        return done


def stage_out_due(db: SqliteDatabase, site: SiteInfo, home: Path,
                  transport: Transport | None = None) -> StageOutResult:
    """Copy home what finished jobs of the site owe (module docstring); `home` is the area
    root. Call after ingest. Costs one query on a table of in-flight staging jobs when
    nothing is owed."""
    result = StageOutResult()
    due = db.execute_sql(_DUE_SQL, (site.name,)).fetchall()
    if not due:
        return result
    apps = staging_apps(db)
    settled: list[tuple[int, int]] = []
    failures: dict[int, tuple[int, str]] = {}
    deadline = time.monotonic() + STAGE_SECONDS
    for job_id, owed, state, status, attempt, workdir, params, app_id in due:
        staging = apps.get(app_id)
        if (state != JobState.COMPLETED.value or JobStatus(status) not in GOOD_STATUSES
                or attempt != owed or staging is None or not staging.stage_out or not workdir):
            settled.append((job_id, owed))
            result.dropped += 1
            continue
        if time.monotonic() > deadline:
            result.left += 1
            continue
        transport = transport or site_transport_for(site)
        try:
            items = render_items(staging.stage_out, json.loads(params or "{}"), home, "stage-out")
            stage_out(transport, workdir, items)
        except StagingError as exc:
            failures[job_id] = (owed, exc.reason)
        else:
            settled.append((job_id, owed))
            result.copied += 1
    _record_stage_out(db, settled, failures, result)
    return result


def _record_stage_out(db: SqliteDatabase, settled: list[tuple[int, int]],
                      failures: dict[int, tuple[int, str]], result: StageOutResult) -> None:
    if not settled and not failures:
        return
    with write_transaction(db):
        done = settled + [(job_id, owed) for job_id, (owed, _) in failures.items()]
        execute_many(db, "DELETE FROM stage_out_due WHERE job_id = ? AND attempt = ?", done)
        if not failures:
            return
        rows = load_rows(db, failures)
        failed: set[int] = set()
        for job_id, (owed, reason) in failures.items():
            row = rows.get(job_id)
            snap = row.snapshot if row is not None else None
            if (row is None or snap is None or snap.state is not JobState.COMPLETED
                    or snap.attempt != owed or snap.status not in GOOD_STATUSES):
                continue  # changed meanwhile (reset, rerun): this outcome is old news
            message = f"stage-out failed: {reason}"
            apply_chain(row, stage_out_failed(snap, message))
            row.message = message
            result.rejudged.append((snap.status.value, row.snapshot.status.value))
            failed.add(job_id)
        result.failed = len(failed)
        _recall_children(db, rows, failed)
        settle_children(db, rows, failed)
        save_rows(db, rows.values())


def stage_out_failed(job: JobSnapshot, message: str) -> Chain:
    """A COMPLETED job whose results could not be copied home: status FAIL, then a retry
    while attempts remain.

    The state stays COMPLETED (the job did run to its end), so this is a new judgement of
    the outcome rather than a move in the state table; it is recorded as an event all the
    same (COMPLETED -> COMPLETED, status FAIL) so `job show` tells what happened.
    """
    judged = replace(job, status=JobStatus.FAIL)
    chain = Chain(judged)
    chain.records.append(Transition(job.id, job.state, job.state, JobStatus.FAIL, job.attempt,
                                    message, {"reason": "stage-out"}))
    return chain.retry_if_allowed()


def _recall_children(db: SqliteDatabase, rows: dict[int, JobRow], parents: set[int]) -> None:
    """Children the parents' good outcome released, not yet dispatched, wait again."""
    if not parents:
        return
    children = children_of(db, parents)
    rows.update(load_rows(db, children - rows.keys()))
    for child in children:
        row = rows[child]
        if row.snapshot.state is JobState.READY:
            apply_chain(row, Chain(row.snapshot).to(JobState.AWAITING_PARENTS,
                                                    message="a parent's stage-out failed"))

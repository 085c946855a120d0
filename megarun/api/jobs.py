"""Jobs as the `job` commands read and make them, for the CLI and the Python API.

One path for both: selecting and counting jobs, one job's record, creating jobs, and reading
their logs (framed step by step as `megarun job logs` prints them, here or over SSH). The CLI
prints what these return; megarun.api.area turns them into typed records.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from megarun.campaign import joblogs, query
from megarun.campaign.create import CreatedJobs, JobRequest, create_jobs
from megarun.campaign.query import JobDetail, JobFilter, JobListing, StateCount
from megarun.errors import UsageError
from megarun.homehost.context import Context


def job_filter(tags: Mapping[str, str] | None = None, state: str | None = None,
               status: str | None = None, app: str | None = None, site: str | None = None,
               run: str | None = None, test: str | None = None) -> JobFilter:
    """A JobFilter from values of any origin: each must be a string (a state or status may be
    an enum of megarun.core.states, which is one); UsageError naming the one that is not.
    Unknown states and statuses are refused when the filter is used, listing the valid ones."""
    named = {"state": state, "status": status, "app": app, "site": site, "run": run,
             "test": test}
    for name, value in named.items():
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{name}: expected a name, got {value!r}")
    pairs = dict(tags or {})
    for key, value in pairs.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UsageError(f"tags: expected names and values as strings, got {key!r}: {value!r}")
    return JobFilter(tags=pairs, state=state, status=status, app=app, site=site, run=run,
                     test=test)


def job_rows(ctx: Context, flt: JobFilter, limit: int = 0,
             with_params: bool = False) -> Iterator[JobListing]:
    """The jobs `job ls` lists, oldest first, streamed from the database (limit 0: all)."""
    return query.iter_jobs(ctx.db, ctx.area, flt, limit, with_params)


def more_jobs(ctx: Context, flt: JobFilter, shown: int, limit: int) -> int:
    """How many jobs a listing cut at `limit` left out (0 when it was not cut)."""
    if not limit or shown < limit:
        return 0
    return max(query.count_jobs(ctx.db, ctx.area, flt) - shown, 0)


def state_counts(ctx: Context, flt: JobFilter) -> list[StateCount]:
    """`job ls --by-state`: jobs per (state, status)."""
    return query.count_by_state(ctx.db, ctx.area, flt)


def job_detail(ctx: Context, job_id: int) -> JobDetail:
    """`job show`: one job's record, steps and event trail (NotFoundError: no such job)."""
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise UsageError(f"job id: expected a whole number, got {job_id!r}")
    return query.get_job(ctx.db, job_id)


def run_name(detail: JobDetail, ctx: Context) -> str | None:
    """TARGET/RUNNAME of a test-suite job's run (None for a job of an app)."""
    row = ctx.db.execute_sql("SELECT run.target, run.runname FROM job JOIN run ON "
                             "run.id = job.run_id WHERE job.id = ?", (detail["id"],)).fetchone()
    return None if row is None else f"{row[0]}/{row[1]}"


def create(ctx: Context, requests: list[JobRequest]) -> CreatedJobs:
    """Create the jobs of every request in one transaction (all validated first)."""
    return create_jobs(ctx.db, ctx.area, requests)


def write_logs(ctx: Context, job_id: int, out: BinaryIO, head: int | None = None,
               tail: int | None = None, step: str | None = None) -> None:
    """Write a job's logs to `out` as `megarun job logs` prints them: each step's stdout,
    then its stderr, each after a `==> name <==` line, in chunks (constant memory); UsageError
    when there are none."""
    first = True

    def announce(log: joblogs.LogFile) -> None:
        nonlocal first
        # on the same stream, as tail(1) does, so that a redirected log keeps its separators
        out.write(f"{'' if first else chr(10)}==> {log.name} <==\n".encode())
        first = False

    joblogs.write_job_logs(ctx.db, ctx.area, job_id, out, head, tail, announce, step)


def logs_text(ctx: Context, job_id: int, step: str | None = None,
              tail: int | None = None) -> str:
    """write_logs into a string (bytes that are not UTF-8 read as U+FFFD)."""
    if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int) or tail < 0):
        raise UsageError(f"tail: expected a whole number of lines, got {tail!r}")
    buffer = io.BytesIO()
    write_logs(ctx, job_id, buffer, None, tail, step)
    return buffer.getvalue().decode("utf-8", "replace")


def log_excerpts(ctx: Context, job_id: int, head: int | None, tail: int | None,
                 step: str | None) -> list[joblogs.LogExcerpt]:
    """`job logs --json`: each log's selected lines, at most 64 KiB of each."""
    return joblogs.job_log_excerpts(ctx.db, ctx.area, job_id, head, tail, step=step)


def requests_for(app: str, params: list[Mapping[str, Any]] | None,
                 fields: Mapping[str, Any]) -> list[JobRequest]:
    """One JobRequest per parameter set (one with none), each with the same other fields;
    errors name the parameter set (`create_jobs params[2]: ...`)."""
    sets = [{}] if params is None else list(params)
    if not sets:
        raise UsageError("create_jobs: params is empty: give at least one parameter set")
    requests = []
    for index, values in enumerate(sets):
        if not isinstance(values, Mapping):
            raise UsageError(f"create_jobs params[{index}]: expected a mapping of name: value, "
                             f"got {values!r}")
        origin = "create_jobs" if params is None else f"create_jobs params[{index}]"
        requests.append(JobRequest(app=app, params=dict(values), origin=origin, **fields))
    return requests

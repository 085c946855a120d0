"""`megarun.open_area()`: an area from Python, read and written as the CLI does.

An Area holds the same Context a CLI command builds (megarun.homehost.context): the area found
from a path or the working directory, its database opened once. On the home host that is the
working database, and the mirror is refreshed when the Area closes; on any other host it is
the mirror, read-only: opening says so with a ReadingMirror warning, and every write is
refused with the CLI's message. Errors are the CLI's own (megarun.errors).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from megarun.api import jobs as job_api
from megarun.api import runs as run_api
from megarun.api.frames import frame
from megarun.api.records import (
    JOB_FIELDS,
    Item,
    Job,
    Run,
    item_from_status,
    job_from_detail,
    job_from_listing,
    run_from_summary,
)
from megarun.campaign.query import check_filter
from megarun.config.inputs import INT64_MAX
from megarun.core.quantities import parse_duration
from megarun.errors import UsageError
from megarun.homehost.context import Context
from megarun.homehost.home import not_home
from megarun.homehost.mirror import reading_notice
from megarun.report import metrics
from megarun.transport.pool import close_all


class ReadingMirror(UserWarning):
    """This host is not the area's home host: reads come from the mirror, writes are refused."""


def open_area(path: str | Path | None = None) -> Area:
    """The area whose folder is `path` (as the CLI's --area), or when None the one the CLI
    finds without --area ($MEGARUN_AREA, else the working directory or a parent of it).

    Its database is opened now, so that a missing area or mirror is an error here. On a host
    that is not the area's home host a ReadingMirror warning names the home host and the
    mirror's age, `read_only` is True, and every write raises NotHomeHost.
    """
    notices: list[str] = []
    context = Context(area_override=_area_path(path),
                      on_mirror=lambda host, age: notices.append(reading_notice(host, age)))
    area = Area(context)
    try:
        context.db  # noqa: B018 - opened now: errors belong to open_area, not the first read
    except BaseException:
        area.close()
        raise
    for notice in notices:
        warnings.warn(notice, ReadingMirror, stacklevel=2)
    return area


def _area_path(path: str | Path | None) -> str | None:
    """The area's path as the CLI's --area takes it; UsageError for what no path can be."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
        raise UsageError(f"open_area: expected a path as text, got {path!r}")
    text = os.fspath(path)
    if "\0" in text or not text:
        raise UsageError(f"open_area: not a path: {text!r}")
    return text


class Area:
    """One megarun area: its jobs and test-suite runs. Close it (or use `with`) when done: on
    the home host that refreshes the mirror other hosts read."""

    def __init__(self, context: Context) -> None:
        self._open_context: Context | None = context

    @property
    def _context(self) -> Context:
        """The open area's context; UsageError once the area is closed (a closed area never
        opens its database again behind the caller's back)."""
        if self._open_context is None:
            raise UsageError("this area is closed: open it again with megarun.open_area()")
        return self._open_context

    # -- the area ---------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The area's folder (where megarun.toml is)."""
        return self._context.area.root

    @property
    def home_host(self) -> str:
        """The host that holds the area's working database."""
        return self._context.home.host

    @property
    def read_only(self) -> bool:
        """True on a host that is not the home host: reads come from the mirror."""
        return not self._context.is_home

    def close(self) -> None:
        """Close the database (on the home host: then refresh the mirror), and the SSH
        connections to sites that reading logs opened (another open Area opens them again
        when it needs them)."""
        context, self._open_context = self._open_context, None
        if context is None:
            return
        try:
            context.close()
        finally:
            close_all()  # a notebook lives long: no connection idles until it exits

    def __enter__(self) -> Area:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._open_context is None:
            return "<megarun.Area (closed)>"
        return f"<megarun.Area {self.root}{' (mirror, read-only)' if self.read_only else ''}>"

    def _check_writable(self) -> None:
        if not self._context.is_home:
            raise not_home(self._context.area, self._context.home)

    # -- jobs -------------------------------------------------------------------------------
    def jobs(self, state: str | None = None, status: str | None = None, app: str | None = None,
             site: str | None = None, tags: Mapping[str, str] | None = None,
             limit: int | None = None, run: str | None = None,
             test: str | None = None) -> Iterator[Job]:
        """Jobs matching every filter given, oldest first, read from the database as they are
        iterated (memory stays flat however many there are).

        `state` and `status` are names (any case) or the enums of megarun.core.states; state
        FAILED means any failing status. `tags` must all match. `run` is TARGET/RUNNAME, `test`
        a test of a suite. `limit` None means all. A bad value raises UsageError (an unknown
        app, site or run: NotFoundError), before any job is read.
        """
        flt = job_api.job_filter(tags, state, status, app, site, run, test)
        rows = _limit(limit)
        check_filter(self._context.db, self._context.area, flt)
        return (job_from_listing(row, row.get("params", {}), self)
                for row in job_api.job_rows(self._context, flt, rows, with_params=True))

    def job(self, job_id: int) -> Job:
        """One job by id (NotFoundError when there is none)."""
        detail = job_api.job_detail(self._context, job_id)
        return job_from_detail(detail, job_api.run_name(detail, self._context), self)

    def job_logs(self, job_id: int, step: str | None = None, tail: int | None = None) -> str:
        """A job's logs as `megarun job logs` prints them (see Job.logs)."""
        return job_api.logs_text(self._context, job_id, step, tail)

    def job_frame(self, state: str | None = None, status: str | None = None,
                  app: str | None = None, site: str | None = None,
                  tags: Mapping[str, str] | None = None, limit: int | None = None,
                  run: str | None = None, test: str | None = None) -> Any:
        """The jobs `jobs()` yields as a pandas DataFrame, one column per Job field (pandas
        must be installed: ImportError saying `pip install pandas` when it is not)."""
        return frame((job.as_dict() for job in self.jobs(state, status, app, site, tags, limit,
                                                         run, test)), JOB_FIELDS)

    def create_jobs(self, app: str, params: list[Mapping[str, Any]] | None = None,
                    tags: Mapping[str, str] | None = None, site: str | None = None,
                    nodes: int | None = None, ranks_per_node: int | None = None,
                    threads_per_rank: int | None = None, gpus_per_rank: int | None = None,
                    node_packing_count: int | None = None, walltime: float | None = None,
                    after: list[int] | None = None, priority: int = 0) -> list[int]:
        """Create one job of `app` per parameter set in `params` (one job when None), all with
        the same tags, site and resources, as `megarun job create` does: every one is
        validated before any is created, in one transaction. `walltime` is in minutes.
        Returns the new jobs' ids."""
        self._check_writable()
        fields: dict[str, Any] = {
            "tags": dict(tags or {}), "site": site, "nodes": nodes,
            "ranks_per_node": ranks_per_node, "threads_per_rank": threads_per_rank,
            "gpus_per_rank": gpus_per_rank, "node_packing_count": node_packing_count,
            "walltime": walltime, "after": list(after or []), "priority": priority}
        created = job_api.create(self._context, job_api.requests_for(app, params, fields))
        return list(range(created.first_id, created.last_id + 1))

    # -- test-suite runs --------------------------------------------------------------------
    def run(self, target: str, runname: str) -> Run:
        """The run TARGET/RUNNAME as `megarun status` shows it: its roll-up status and counts,
        when its items started and ended, and its items (`run.items()`)."""
        found = run_api.find_run(self._context, target, runname)
        report = run_api.run_report(self._context, found, None, _warn)
        items = [item_from_status(item) for item in report.items]
        return run_from_summary(report.summary(), run_api.times_of(self._context, found), self,
                                items)

    def runs(self, target: str | None = None, runname: str | None = None) -> list[Run]:
        """Every run (of the targets and runnames matching these globs, e.g. "linux/*"),
        oldest first, as `megarun runs ls` lists them; `run.items()` reads a run's items."""
        times = run_api.run_times(self._context, target, runname)
        return [run_from_summary(summary, times.get((summary["target"], summary["runname"]),
                                                    (None, None)), self)
                for summary in run_api.run_summaries(self._context, target, runname, _warn)]

    def run_items(self, target: str, runname: str) -> list[Item]:
        """The items of the run TARGET/RUNNAME, by test and item."""
        found = run_api.find_run(self._context, target, runname)
        return [item_from_status(item)
                for item in run_api.items_of(self._context, found, None, _warn)]

    # -- campaign metrics (the HTML report plots the same) -----------------------------------
    def throughput(self, interval: str | float = "1m", app: str | None = None,
                   site: str | None = None, tags: Mapping[str, str] | None = None,
                   batch_job: int | None = None) -> list[tuple[datetime, float]]:
        """Jobs finished per interval: (the interval's start, a UTC datetime; how many),
        from the first interval with a finished job to the last, empty ones as 0. `interval` is
        a duration ("30s", "1m", "1h") or a number of seconds."""
        seconds = parse_duration(interval, "interval")
        return metrics.throughput(self._context.db, seconds,
                                  _metric_filter(app, site, tags, batch_job))

    def utilization(self, batch_job: int | None = None, app: str | None = None,
                    site: str | None = None,
                    tags: Mapping[str, str] | None = None) -> list[tuple[datetime, float]]:
        """Busy slots over allocated slots, from 0 to 1, at each time a job or batch job
        started or ended: of one batch job, of every batch job (None), or of the sites' own
        slots for jobs that ran in no batch job (the local site)."""
        return metrics.utilization(self._context.db, batch_job,
                                   _metric_filter(app, site, tags, None))

    def durations(self, app: str | None = None, site: str | None = None,
                  tags: Mapping[str, str] | None = None,
                  batch_job: int | None = None) -> list[float]:
        """Run seconds (ended - started) of every ended job matching the filters, by job id."""
        return metrics.durations(self._context.db, _metric_filter(app, site, tags, batch_job))


def _metric_filter(app: str | None, site: str | None, tags: Mapping[str, str] | None,
                   batch_job: int | None) -> metrics.JobFilter:
    return metrics.JobFilter(app=app, site=site, tags=tuple(sorted((tags or {}).items())),
                             batch_job=batch_job)


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def _limit(limit: int | None) -> int:
    """A listing's limit as the wings take it (0: all); UsageError for anything but a whole
    number from 1 to 2**63 - 1 (or None)."""
    if limit is None:
        return 0
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= INT64_MAX:
        raise UsageError(f"limit: expected a whole number from 1 to {INT64_MAX} or None, "
                         f"got {limit!r}")
    return limit

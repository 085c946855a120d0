"""What the engine needs, built from a command's Context: the area scope and site scopes.

The engine takes its database, area and sites as arguments (megarun.engine.scope); the CLI is
where they come from.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from megarun.engine import batch
from megarun.engine.batch import (
    BatchJobRow,
    SubmitRequest,
    batch_job_site,
    cancel,
    list_batch_jobs,
    submit,
)
from megarun.engine.elastic import ElasticOutcome
from megarun.engine.elastic_run import BacklogReport, run_elastic
from megarun.engine.elastic_run import backlog_reports as site_backlog_reports
from megarun.engine.locks import launcher_busy, sync_lock
from megarun.engine.reports import LaunchProgress, SiteReport
from megarun.engine.scope import AreaScope, SiteScope
from megarun.engine.service import LaunchService
from megarun.engine.spawn import start_in_background
from megarun.engine.sync import sync_all
from megarun.errors import AlreadyRunning
from megarun.homehost.context import Context
from megarun.sites.registry import get_site, list_sites, site_id
from megarun.suites.run_prepare import run_root

if TYPE_CHECKING:
    from megarun.schedulers.base import BatchState


def area_scope(ctx: Context) -> AreaScope:
    """The area's database (opened here), the area and its run root."""
    return AreaScope(ctx.db, ctx.area, run_root(ctx.area), ctx.check_still_home)


def site_scope(ctx: Context, name: str) -> SiteScope:
    """One site of the area; NotFoundError for an unknown one."""
    return area_scope(ctx).on(get_site(ctx, name), site_id(ctx, name))


def site_scopes(ctx: Context, name: str | None = None) -> list[SiteScope]:
    """The named site, or every site of the area."""
    if name is not None:
        return [site_scope(ctx, name)]
    home = area_scope(ctx)
    return [home.on(site, site_id(ctx, site.name)) for site in list_sites(ctx)]


def settle_defunct(ctx: Context) -> None:
    """On every site: take in new events, then make the jobs of agents that are gone DEAD.

    Nothing on the mirror (another host): what it shows is as the home host last wrote it.
    """
    if ctx.read_only or not ctx.is_home:
        return
    sync_all(area_scope(ctx), site_scopes(ctx), dispatch=False)


def area_sync_lock(ctx: Context) -> AbstractContextManager[None]:
    """The area's sync lock, beside its working database (AlreadyRunning when held)."""
    return sync_lock(ctx.home.db)


def sync_sites(ctx: Context, site: str | None,
               rules: Callable[[], list[str]]) -> tuple[list[SiteReport], list[str]]:
    """One `sync` pass over the site (or every site), then the area's rules."""
    return sync_all(area_scope(ctx), site_scopes(ctx, site), rules=rules)


def launch_service(ctx: Context, site: str,
                   on_progress: Callable[[LaunchProgress], None] | None = None,
                   run_id: int | None = None) -> LaunchService:
    """The launch service of one site (of one run's jobs with `run_id`)."""
    return LaunchService(site_scope(ctx, site), on_progress, run_id)


def detach_launcher(ctx: Context, site_name: str) -> tuple[int, Path]:
    """Start `megarun launch` for the site in the background; return its pid and log file."""
    get_site(ctx, site_name)
    if launcher_busy(ctx.area, site_name):
        raise AlreadyRunning(f"a launcher is already running for site {site_name!r}")
    return start_in_background(ctx.area, ["launch", "--site", site_name, "--quiet"],
                               f"launcher-{site_name}.log")


def submit_batch_jobs(ctx: Context, request: SubmitRequest) -> list[BatchJobRow]:
    """`queue submit`: the batch jobs submitted to the request's site."""
    return submit(site_scope(ctx, request.site), request)


def batch_jobs(ctx: Context, site: str | None, history: bool, state: BatchState | None = None,
               limit: int = 0) -> list[BatchJobRow]:
    """`queue ls`: the open batch jobs of the site (or of every site; all with `history`;
    those in `state`), at most `limit` (0: all)."""
    return list_batch_jobs(ctx.db, None if site is None else site_id(ctx, site), history, state,
                           limit)


def count_batch_jobs(ctx: Context, site: str | None, history: bool,
                     state: BatchState | None = None) -> int:
    """How many batch jobs `batch_jobs` lists without a limit."""
    return batch.count_batch_jobs(ctx.db, None if site is None else site_id(ctx, site), history,
                                  state)


def cancel_batch_job(ctx: Context, batch_id: int) -> BatchJobRow:
    """`queue rm`: cancel the batch job on its site."""
    return cancel(site_scope(ctx, batch_job_site(ctx.db, batch_id)), batch_id)


def elastic_step(ctx: Context, site: str, dry_run: bool) -> ElasticOutcome:
    """`queue elastic`: the site's elastic decision, applied unless `dry_run`."""
    return run_elastic(site_scope(ctx, site), dry_run=dry_run)


def backlog_reports(ctx: Context, site: str | None, app: str | None) -> list[BacklogReport]:
    """`queue backlog`: the backlog of the site (or of every site), of one app's jobs."""
    return site_backlog_reports(ctx.db, site_scopes(ctx, site), app)

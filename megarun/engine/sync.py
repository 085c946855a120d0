"""`sync`: the site cycle once over every site (megarun.engine.cycle), then the area's rules.

On an SSH site a pass costs at most two round trips, whatever the number of jobs: one
exchange brings the new events and heartbeats (and delivers kill and stop requests); after
ingest, when no launcher is running for the site, READY jobs are dispatched and a second
exchange publishes them and starts an agent there if none lives.

Safe from cron: one sync at a time per area (megarun.engine.locks.sync_lock), and one broken
site is reported without stopping the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from megarun.engine.batch_poll import has_open
from megarun.engine.cycle import site_kind
from megarun.engine.matching import match_jobs
from megarun.engine.reports import SiteReport
from megarun.engine.scope import AreaScope, SiteScope
from megarun.engine.site_kinds import build_cycle
from megarun.errors import MegarunError


def sync_site(scope: SiteScope, dispatch: bool = True) -> SiteReport:
    """One pass of the site's cycle: take in its events, settle defunct jobs, and (with
    `dispatch`, when no launcher runs for it) feed it."""
    started = time.monotonic()
    kind = site_kind(scope, pilots_open=has_open(scope))  # pilots of a local site too
    report = build_cycle(scope, kind).sync_pass(dispatch)
    report.seconds = time.monotonic() - started
    return report


def sync_all(home: AreaScope, sites: Sequence[SiteScope], dispatch: bool = True,
             rules: Callable[[], list[str]] | None = None) -> tuple[list[SiteReport], list[str]]:
    """One pass over the sites; a site that fails is reported, the rest go on.

    Without `dispatch`, only events are taken in and defunct jobs settled (what `status`
    needs). With `dispatch`, jobs waiting for a site get one first, and `rules` (the area's
    archive and migration rules) run after the sites; returns the reports and the lines the
    rules wrote.
    """
    home.check_home()  # a `sync --loop` stops once `homehost migrate` moved the db away
    if dispatch:
        match_jobs(home.db, home.area)  # a job waiting for a site gets one before they are fed
    reports = []
    for scope in sites:
        try:
            reports.append(sync_site(scope, dispatch))
        except MegarunError as exc:
            reports.append(SiteReport(scope.name, error=str(exc)))
    lines = rules() if rules is not None and dispatch else []
    return reports, lines

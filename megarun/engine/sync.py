"""One sync cycle: for every site, take in the agents' new events and settle defunct jobs.

On an SSH site the cycle costs at most two round trips, whatever the number of jobs: one
exchange brings the new events and heartbeats (and delivers kill and stop requests); after
ingest, when no launcher is running for the site, READY jobs are dispatched and a second
exchange publishes them and starts an agent there if none lives.

Safe from cron: one cycle at a time per area (a second concurrent one returns at once), and one
broken site is reported without stopping the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from megarun.agent.private import make_private_dirs
from megarun.core.filelocks import hold_or_refuse
from megarun.core.states import ACTIVE_STATES, SITE_LOAD_STATES, names, sql_list
from megarun.engine import agent_starts
from megarun.engine import batch as batch_service
from megarun.engine.agents import clear_finished_kills, live_agents, settle_gone_agents
from megarun.engine.gates import LaunchGates
from megarun.engine.housekeeping import tidy_site
from megarun.engine.ingest import ingest_site_events
from megarun.engine.launch_loop import agent_args, dispatch_round, launcher_lock, open_counts
from megarun.engine.matching import match_jobs
from megarun.engine.staging import stage_out_finished
from megarun.errors import AlreadyRunning, EnvironmentProblem, MegarunError
from megarun.homehost.context import Context
from megarun.sites.local_spool import LocalSpool
from megarun.sites.registry import SiteInfo, get_site, list_sites, site_id
from megarun.sites.remote_spool import AgentLaunch, RemoteSpool
from megarun.suites.run_prepare import run_root


@dataclass
class SiteSync:
    """What one cycle did on one site; `error` set when the site could not be synced."""

    site: str
    events: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    agents_settled: list[str] = field(default_factory=list)
    agents_tidied: int = 0  # ended agents whose spool files were removed (housekeeping)
    dispatched: int = 0
    staged_out: int = 0
    started_agent: str = ""
    round_trips: int = 0
    status_commands: int = 0  # scheduler status commands run (batch sites: at most one)
    batch_jobs: dict[int, str] = field(default_factory=dict)  # batch id -> its new state
    error: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "ok": not self.error, "events": self.events,
                "finished": self.finished, "agents_settled": self.agents_settled,
                "agents_tidied": self.agents_tidied,
                "dispatched": self.dispatched, "staged_out": self.staged_out,
                "started_agent": self.started_agent,
                "round_trips": self.round_trips, "status_commands": self.status_commands,
                "batch_jobs": {str(k): v for k, v in self.batch_jobs.items()},
                "error": self.error,
                "seconds": round(self.seconds, 3)}


def sync_site(ctx: Context, site: SiteInfo, dispatch: bool = True) -> SiteSync:
    """Ingest the site's new events, then make the jobs of agents that are gone DEAD."""
    started = time.monotonic()
    result = SiteSync(site.name)
    spool = site.spool()
    if site.scheduler != "local" or batch_service.has_open(ctx, site):
        _sync_batch(ctx, site, spool, result, dispatch)  # pilots of a local site too
    elif isinstance(spool, RemoteSpool):
        _sync_remote(ctx, site, spool, result, dispatch)
    elif spool.events.is_dir():  # otherwise no agent ever ran there
        _take_in(ctx, site, site_id(ctx, site.name), spool, result)
    result.seconds = time.monotonic() - started
    return result


def _take_in(ctx: Context, site: SiteInfo, sid: int, spool: LocalSpool,
             result: SiteSync) -> None:
    ingested = ingest_site_events(ctx.db, sid, spool)
    result.events, result.finished = ingested.events, dict(ingested.finished)

    def ingest_again() -> None:  # the ends a dead agent's settler found in megarun.exit files
        more = ingest_site_events(ctx.db, sid, spool)
        result.events += more.events
        for status, count in more.finished.items():
            result.finished[status] = result.finished.get(status, 0) + count

    result.agents_settled = settle_gone_agents(ctx.db, sid, spool,
                                               ctx.area.config.launcher.dead_after, ingest_again)
    clear_finished_kills(ctx.db, spool)
    result.agents_tidied = tidy_site(ctx.db, sid, spool, ctx.area.config.launcher.dead_after)
    result.staged_out = stage_out_finished(ctx, site).copied


def _sync_remote(ctx: Context, site: SiteInfo, spool: RemoteSpool, result: SiteSync,
                 dispatch: bool) -> None:
    """Exchange, ingest, settle; then dispatch and start an agent unless a launcher does."""
    sid = site_id(ctx, site.name)
    if not _site_has_work(ctx, sid, spool):
        return  # nothing open there and nothing to deliver: no connection at all
    try:
        spool.exchange()
        _take_in(ctx, site, sid, spool, result)
        if not dispatch:
            return
        with launcher_lock(ctx, site.name) as free:
            if not free:
                return  # a launcher runs for this site: dispatch and agents are its business
            settings = ctx.area.config.launcher
            by_state = open_counts(ctx, sid)
            gates = LaunchGates(ctx.area.config.limits, ctx.area.root, run_root(ctx.area), site.name)
            _, result.dispatched = dispatch_round(ctx, sid, site, gates, by_state)
            active = sum(by_state.get(s, 0) for s in names(ACTIVE_STATES))
            want_agent = active > 0 and not live_agents(spool, settings.dead_after)
            if want_agent:  # bounded: an agent that keeps dying is not started for ever
                result.error = agent_starts.refusal(ctx.db, spool, site.name)
            if result.dispatched or want_agent:
                may_start = active > 0 and not result.error
                if may_start:
                    spool.clear_stop("all")  # a finished launcher's stop must not stop this agent
                launch = AgentLaunch(agent_args(site, settings), settings.dead_after)
                answer = spool.exchange(start_agent=launch if may_start else None)
                result.started_agent = answer.started_agent or ""
                if result.started_agent:
                    agent_starts.record_start(spool, result.started_agent)
    finally:
        result.round_trips = spool.round_trips


def _sync_batch(ctx: Context, site: SiteInfo, spool: LocalSpool, result: SiteSync,
                dispatch: bool) -> None:
    """A batch site: exchange, one scheduler status command for all its batch jobs, ingest,
    settle; then feed the pools of the open pilots (the pilots are its only agents)."""
    sid = site_id(ctx, site.name)
    remote = spool if isinstance(spool, RemoteSpool) else None
    if remote is not None and not batch_service.has_open(ctx, site) and not _site_has_work(
            ctx, sid, remote):
        return
    poll_error = ""
    try:
        if remote is not None:
            remote.exchange()
        try:
            poll = batch_service.poll_site(ctx, site)
            result.status_commands, result.batch_jobs = poll.status_commands, poll.changed
        except EnvironmentProblem as exc:
            result.status_commands = 1
            poll_error = str(exc)  # recoverable: ingest and dispatch still run
        spool.ensure()
        _take_in(ctx, site, sid, spool, result)
        if dispatch:
            _feed_pilots(ctx, site, sid, spool, result)
    finally:
        if remote is not None:
            result.round_trips = remote.round_trips
    result.error = poll_error or result.error  # a refused direct submission otherwise


def _feed_pilots(ctx: Context, site: SiteInfo, sid: int, spool: LocalSpool,
                 result: SiteSync) -> None:
    from megarun.engine.batch import active_pools
    from megarun.engine.direct_levels import submit_next_levels

    with launcher_lock(ctx, site.name) as free:
        if not free:
            return  # a launcher feeds this site
        levels = submit_next_levels(ctx, site)  # direct mode: the next dependency level
        result.dispatched += levels.jobs
        if levels.refused:
            first = levels.refused[0]
            result.error = f"batch job {first['id']} not submitted: {first['message']}"
        by_state = open_counts(ctx, sid)
        gates = LaunchGates(ctx.area.config.limits, ctx.area.root, run_root(ctx.area), site.name)
        for target in active_pools(ctx, site):
            _, sent = dispatch_round(ctx, sid, site, gates, by_state, target=target)
            result.dispatched += sent
        if result.dispatched and isinstance(spool, RemoteSpool):
            spool.exchange()  # publish; the pilots start no agent but their own


def _site_has_work(ctx: Context, sid: int, spool: RemoteSpool) -> bool:
    """Whether an SSH site has open jobs, or requests waiting in its mirror (bundles, drops,
    kills, and ended agents whose files it should forget)."""
    spool.ensure()
    pending = any(True for folder in (spool.queue, spool.drops, spool.kill_dir, spool.forgets)
                  for _ in folder.glob("[!.]*"))
    if pending:
        return True
    found = ctx.db.execute_sql(
        f"SELECT 1 FROM job WHERE site_id = ? AND state IN ({sql_list(SITE_LOAD_STATES)}) "  # noqa: S608
        "LIMIT 1", (sid,)).fetchone()
    if found:
        return True
    beats = live_agents(spool, ctx.area.config.launcher.dead_after)
    return bool(beats)  # an agent still winding down: take in its last events


def sync_all(ctx: Context, site_name: str | None = None, dispatch: bool = True,
             rules: list[str] | None = None) -> list[SiteSync]:
    """One cycle over every site (or one); a site that fails is reported, the rest go on.

    Without `dispatch`, only events are taken in and defunct jobs settled (what `status` needs).
    With `rules` (a list), the area's archive and migration rules run after the sites, and
    what they did is appended to it (megarun.archive.automation).
    """
    ctx.check_still_home()  # a `sync --loop` stops once `homehost migrate` moved the db away
    if dispatch:
        match_jobs(ctx)  # a job waiting for a site gets one before the sites are fed
    sites = [get_site(ctx, site_name)] if site_name else list_sites(ctx)
    results = []
    for site in sites:
        try:
            results.append(sync_site(ctx, site, dispatch))
        except MegarunError as exc:
            results.append(SiteSync(site.name, error=str(exc)))
    if rules is not None and dispatch:
        from megarun.archive.automation import apply_rules
        from megarun.archive.runselect import RunStore

        rules.extend(apply_rules(RunStore(ctx.db, ctx.area, ctx.home.db.parent / "locks",
                                          ctx.read_only)))
    return results


@contextmanager
def sync_lock(ctx: Context) -> Iterator[None]:
    """Hold the area's sync lock; AlreadyRunning when another sync holds it.

    The lock lives next to the working database (a local disk: file locks on a network file
    system are not to be trusted), as only the home host syncs.
    """
    folder = ctx.home.db.parent / "locks"
    make_private_dirs(str(folder))
    with hold_or_refuse(folder / "sync.lock",
                        AlreadyRunning("another megarun sync is running in this area")):
        yield

"""One sync cycle: for every site, take in the agents' new events and settle defunct jobs.

Safe from cron: one cycle at a time per area (a second concurrent one returns at once), and one
broken site is reported without stopping the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout

from megarun.errors import AlreadyRunning, MegarunError
from megarun.services.agents import settle_gone_agents
from megarun.services.context import Context
from megarun.services.ingest import ingest_site_events
from megarun.services.sites import SiteInfo, get_site, list_sites, site_id


@dataclass
class SiteSync:
    """What one cycle did on one site; `error` set when the site could not be synced."""

    site: str
    events: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    agents_settled: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "ok": not self.error, "events": self.events,
                "finished": self.finished, "agents_settled": self.agents_settled,
                "error": self.error, "seconds": round(self.seconds, 3)}


def sync_site(ctx: Context, site: SiteInfo) -> SiteSync:
    """Ingest the site's new events, then make the jobs of agents that are gone DEAD."""
    started = time.monotonic()
    result = SiteSync(site.name)
    spool = site.spool()
    if spool.events.is_dir():  # otherwise no agent ever ran there
        sid = site_id(ctx, site.name)
        ingested = ingest_site_events(ctx.db, sid, spool)
        result.events, result.finished = ingested.events, ingested.finished
        result.agents_settled = settle_gone_agents(ctx.db, sid, spool,
                                                   ctx.area.config.launcher.dead_after)
    result.seconds = time.monotonic() - started
    return result


def sync_all(ctx: Context, site_name: str | None = None) -> list[SiteSync]:
    """One cycle over every site (or one); a site that fails is reported, the rest go on."""
    sites = [get_site(ctx, site_name)] if site_name else list_sites(ctx)
    results = []
    for site in sites:
        try:
            results.append(sync_site(ctx, site))
        except MegarunError as exc:
            results.append(SiteSync(site.name, error=str(exc)))
    return results


@contextmanager
def sync_lock(ctx: Context) -> Iterator[None]:
    """Hold the area's sync lock; AlreadyRunning when another sync holds it."""
    folder = ctx.area.state_dir / "locks"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = FileLock(str(folder / "sync.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise AlreadyRunning("another megarun sync is running in this area") from None
    try:
        yield
    finally:
        lock.release()

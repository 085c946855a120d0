"""What the engine needs, built from a command's Context: the area scope and site scopes.

The engine takes its database, area and sites as arguments (megarun.engine.scope); the CLI is
where they come from.
"""

from __future__ import annotations

from megarun.engine.scope import AreaScope, SiteScope
from megarun.engine.sync import sync_all
from megarun.homehost.context import Context
from megarun.sites.registry import get_site, list_sites, site_id
from megarun.suites.runs import run_root


def area_scope(ctx: Context) -> AreaScope:
    """The area's database (opened here), the area and its run root."""
    return AreaScope(ctx.db, ctx.area, run_root(ctx), ctx.check_still_home)


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

"""The site cycle (megarun.engine.cycle): its kind is chosen once from the site, `sync` runs it
once and `launch` in a loop, and the engine works from explicit scopes, with no Context."""

from __future__ import annotations

import json
from pathlib import Path

from megarun.engine.cycle import SiteKind, site_kind
from megarun.engine.reports import SiteReport
from megarun.engine.scope import AreaScope, SiteScope
from megarun.engine.service import LaunchService
from megarun.engine.site_kinds import (
    BatchCycle,
    LocalCycle,
    RemoteBatchCycle,
    SshCycle,
    build_cycle,
)
from megarun.engine.sync import sync_all
from megarun.homehost.context import Context
from megarun.sites.registry import SiteInfo, ensure_default_site, site_id
from tests.conftest import megarun_process


def _home(ctx: Context, tmp_path: Path) -> AreaScope:
    return AreaScope(ctx.db, ctx.area, tmp_path / "runs")


def _site(scheduler: str, host: str | None, tmp_path: Path) -> SiteInfo:
    return SiteInfo("s", "p", scheduler, host, str(tmp_path / "work"), {}, tmp_path / "mirror")


def test_the_kind_and_its_steps_are_chosen_once_from_the_site(ctx: Context,
                                                              tmp_path: Path) -> None:
    home = _home(ctx, tmp_path)
    cases = {("local", None): (SiteKind.LOCAL, LocalCycle),
             ("local", "me@login"): (SiteKind.SSH, SshCycle),
             ("slurm", None): (SiteKind.BATCH, BatchCycle),
             ("slurm", "me@login"): (SiteKind.BATCH, RemoteBatchCycle)}
    for (scheduler, host), (kind, steps) in cases.items():
        scope = SiteScope(home, _site(scheduler, host, tmp_path), 0)
        assert site_kind(scope) is kind
        cycle = build_cycle(scope, kind)
        assert type(cycle) is steps and cycle.kind is kind
        assert cycle.exchanges == bool(host)  # only an SSH host is exchanged with
    local = SiteScope(home, _site("local", None, tmp_path), 0)
    assert site_kind(local, pilots_open=True) is SiteKind.BATCH  # sync feeds open pilots


def test_sync_takes_a_local_site_in_once_and_launch_runs_its_cycle_until_done(
        ctx: Context, area: Path, tmp_path: Path) -> None:
    assert megarun_process(area, "app", "add", "hi", "--command", "echo hi").returncode == 0
    assert megarun_process(area, "job", "create", "--app", "hi", "--count", "3").returncode == 0
    home = _home(ctx, tmp_path)
    site = ensure_default_site(ctx)
    scope = home.on(site, site_id(ctx, site.name))

    reports, lines = sync_all(home, [scope], rules=lambda: ["rules ran"])
    assert lines == ["rules ran"]
    [report] = reports
    assert isinstance(report, SiteReport) and report.ok
    assert report.dispatched == 3 and report.started_agent  # sync feeds a local site too

    summary = LaunchService(scope).run()  # it takes over the agent the sync started
    assert summary.by_status == {"PASS": 3} and summary.done == 3 and not summary.blocked

    [after] = sync_all(home, [scope], dispatch=False)[0]
    assert (after.events, after.dispatched, after.error) == (0, 0, "")


def test_sync_json_keeps_its_fields(area: Path) -> None:
    assert megarun_process(area, "site", "add", "here", "--preset", "local").returncode == 0
    result = megarun_process(area, "sync", "--json")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert list(row) == ["site", "ok", "events", "finished", "agents_settled", "agents_tidied",
                         "dispatched", "staged_out", "started_agent", "left_to_launcher",
                         "round_trips",
                         "status_commands", "batch_jobs", "error", "seconds", "elastic"]
    assert row["elastic"] is None  # a local site has no elastic step

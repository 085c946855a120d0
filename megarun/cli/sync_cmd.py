"""`megarun sync`: one cron-safe cycle over the sites, or a loop in the foreground."""

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.common import JSON_HELP, context, duration_option
from megarun.cli.formats import print_document
from megarun.cli.output import note, render
from megarun.errors import AlreadyRunning, UsageError

if TYPE_CHECKING:
    from megarun.engine.reports import SiteReport


def report_json(report: "SiteReport") -> dict[str, Any]:
    """One site's row of `sync --json` (and of its table)."""
    from megarun.cli.queue_cmd import elastic_json

    return {"site": report.site, "ok": report.ok, "events": report.events,
            "finished": report.finished, "agents_settled": report.agents_settled,
            "agents_tidied": report.agents_tidied,
            "dispatched": report.dispatched, "staged_out": report.staged_out,
            "started_agent": report.started_agent, "left_to_launcher": report.left_to_launcher,
            "round_trips": report.round_trips, "status_commands": report.status_commands,
            "batch_jobs": {str(k): v for k, v in report.batch_jobs.items()},
            "error": report.error,
            "seconds": round(report.seconds, 3),
            "elastic": None if report.elastic is None else elastic_json(report.elastic)}


def register(app: typer.Typer) -> None:
    @app.command("sync")
    def sync(
        ctx: typer.Context,
        site: Annotated[str | None, typer.Option(help="Only this site (default: every site).")] = None,
        loop_every: Annotated[str | None, typer.Option(
            "--loop", metavar="DURATION", help="Repeat this often in the foreground (30s, 5m; a "
            "bare number is seconds).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    ) -> None:
        """Take in every site's events, settle defunct jobs, feed the sites (one cycle; cron-safe)."""
        from megarun.archive.automation import apply_rules, rules_failed
        from megarun.cli.archive_cmd import run_store
        from megarun.cli.engine_deps import area_sync_lock, sync_sites
        from megarun.cli.report_cmd import refresh_after_sync

        loop = duration_option(loop_every, "--loop", 1.0)
        if loop is not None and loop <= 0:
            raise UsageError("--loop takes a number of seconds greater than 0")
        mctx = context(ctx)
        failed = False
        try:
            with area_sync_lock(mctx):
                while True:
                    reports, rules = sync_sites(mctx, site, lambda: apply_rules(run_store(mctx)))
                    results = [report_json(r) for r in reports]
                    failed = any(not r["ok"] for r in results) or rules_failed(rules)
                    refreshed = refresh_after_sync(mctx)  # the area's report, if it has one
                    if refreshed is not None and as_json:
                        results.append({"site": None, "report": refreshed})
                    render(results, ["site", "ok", "events", "agents_settled", "dispatched", "error",
                                     "seconds"],
                           as_json, empty="no sites yet")
                    for line in rules:  # what the area's archive and migration rules did
                        note(f"rules: {line}")
                    if refreshed is not None:
                        note(f"report: {len(refreshed['written'])} page(s) written, "
                             f"{len(refreshed['removed'])} removed")
                    if loop is None:
                        break
                    time.sleep(loop)
        except AlreadyRunning as exc:  # cron started us while the last cycle still runs
            if as_json:
                print_document({"skipped": str(exc)})
            else:
                note(f"{exc}; nothing to do")
            return
        if failed:
            raise typer.Exit(3)

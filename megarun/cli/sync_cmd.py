"""`megarun sync`: one cron-safe cycle over the sites, or a loop in the foreground."""

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.common import JSON_HELP, context
from megarun.cli.output import note, print_json, render
from megarun.errors import AlreadyRunning, UsageError

if TYPE_CHECKING:
    from megarun.engine.reports import SiteReport


def report_json(report: "SiteReport") -> dict[str, Any]:
    """One site's row of `sync --json` (and of its table)."""
    return {"site": report.site, "ok": report.ok, "events": report.events,
            "finished": report.finished, "agents_settled": report.agents_settled,
            "agents_tidied": report.agents_tidied,
            "dispatched": report.dispatched, "staged_out": report.staged_out,
            "started_agent": report.started_agent,
            "round_trips": report.round_trips, "status_commands": report.status_commands,
            "batch_jobs": {str(k): v for k, v in report.batch_jobs.items()},
            "error": report.error,
            "seconds": round(report.seconds, 3)}


def register(app: typer.Typer) -> None:
    @app.command("sync")
    def sync(
        ctx: typer.Context,
        site: Annotated[str | None, typer.Option(help="Only this site (default: every site).")] = None,
        loop: Annotated[float | None, typer.Option(
            "--loop", metavar="SECONDS", help="Repeat every SECONDS in the foreground.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    ) -> None:
        """Take in every site's events, settle defunct jobs, feed SSH sites (one cycle; cron-safe)."""
        from megarun.archive.automation import apply_rules, rules_failed
        from megarun.cli.engine_deps import area_sync_lock, sync_sites

        if loop is not None and loop <= 0:
            raise UsageError("--loop takes a number of seconds greater than 0")
        mctx = context(ctx)
        failed = False
        try:
            with area_sync_lock(mctx):
                while True:
                    reports, rules = sync_sites(mctx, site, lambda: apply_rules(mctx))
                    results = [report_json(r) for r in reports]
                    failed = any(not r["ok"] for r in results) or rules_failed(rules)
                    render(results, ["site", "ok", "events", "agents_settled", "dispatched", "error",
                                     "seconds"],
                           as_json, False, empty="no sites yet")
                    for line in rules:  # what the area's archive and migration rules did
                        note(f"rules: {line}")
                    if loop is None:
                        break
                    time.sleep(loop)
        except AlreadyRunning as exc:  # cron started us while the last cycle still runs
            if as_json:
                print_json({"skipped": str(exc)})
            else:
                note(f"{exc}; nothing to do")
            return
        if failed:
            raise typer.Exit(3)

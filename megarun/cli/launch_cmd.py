"""`megarun launch`: run READY jobs with a live progress bar."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from megarun.cli.common import JSON_HELP, context
from megarun.cli.output import console, err_console, print_json, print_table
from megarun.services.context import Context
from megarun.services.launcher import Launcher, LaunchProgress, LaunchSummary, detach_launcher
from megarun.services.sites import ensure_default_site


def launch_with_progress(ctx: Context, site_name: str, quiet: bool) -> LaunchSummary:
    """Run the launcher; draw a progress bar on stderr unless quiet."""
    if quiet or not err_console.is_terminal:
        return Launcher(ctx, site_name).run()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(f"site {site_name}", total=None, detail="starting")

        def update(snapshot: LaunchProgress) -> None:
            running = snapshot.by_state.get("RUNNING", 0)
            detail = (f"running {running}  queued {snapshot.by_state.get('QUEUED', 0)}  "
                      f"failed {_failed(snapshot)}  {snapshot.rate:,.0f} jobs/s")
            progress.update(task, completed=snapshot.done, total=snapshot.total, detail=detail)

        return Launcher(ctx, site_name, on_progress=update).run()


def _failed(snapshot: LaunchProgress) -> int:
    return sum(n for s, n in snapshot.by_status.items()
               if s in ("FAIL", "TIMEOUT", "DEAD", "ABORT", "PREQ_FAIL"))


def print_summary(summary: LaunchSummary) -> None:
    rows = [{"status": status, "jobs": count} for status, count in sorted(summary.by_status.items())]
    print_table(rows, ["status", "jobs"], title=f"site {summary.site}: {summary.done} job(s) "
                f"in {summary.elapsed:.1f} s", empty="no job ran")
    if summary.stuck:
        err_console.print(f"[yellow]{summary.stuck} job(s) still wait for parents that are not "
                          "on this site or will never finish[/yellow]")
    if summary.interrupted:
        err_console.print("[yellow]interrupted: running jobs were killed, queued jobs are READY "
                          "again[/yellow]")


def register(app: typer.Typer) -> None:
    @app.command("launch")
    def launch(
        ctx: typer.Context,
        site: Annotated[str | None, typer.Option(
            help="Site whose READY jobs to run (default: the area's default site).")] = None,
        detach: Annotated[bool, typer.Option(
            "--detach", help="Start the launcher in the background and return.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    ) -> None:
        """Run READY jobs until none is left; Ctrl-C kills running jobs and stops cleanly."""
        mctx = context(ctx)
        site_name = site or ensure_default_site(mctx).name
        if detach:
            pid, log = detach_launcher(mctx, site_name)
            if as_json:
                print_json({"pid": pid, "log": str(log), "site": site_name})
            else:
                console.print(f"launcher started in the background (pid {pid}); log: {log}")
            return
        summary = launch_with_progress(mctx, site_name, quiet or as_json)
        if as_json:
            print_json(summary.as_dict())
        else:
            print_summary(summary)
        if summary.interrupted:
            raise typer.Exit(130)
        if summary.failed:
            raise typer.Exit(1)

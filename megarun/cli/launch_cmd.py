"""`megarun launch`: run READY jobs with a live progress bar."""

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.board import build_board
from megarun.cli.common import JSON_HELP, context
from megarun.cli.formats import print_document
from megarun.cli.output import note, print_table, rich_console, say
from megarun.cli.progress import Bar, StatusLines, launch_counts, progress_every
from megarun.errors import EnvironmentProblem
from megarun.homehost.context import Context
from megarun.sites.registry import ensure_default_site
from megarun.suites.run_report import ItemStatus, run_items

if TYPE_CHECKING:  # the launcher and rich.progress load only when a launch happens
    from megarun.engine.reports import LaunchProgress, LaunchSummary


def launch_with_progress(ctx: Context, site_name: str, quiet: bool,
                         run_id: int | None = None) -> "LaunchSummary":
    """Run the launcher; unless quiet, draw a progress bar on a terminal's stderr (for a run,
    with the live tests x items board under it), else write a status line now and then."""
    from megarun.cli.engine_deps import launch_service

    if quiet:
        return launch_service(ctx, site_name, run_id=run_id).run()
    board = None if run_id is None else RunBoardView(ctx, run_id)
    if not sys.stderr.isatty():
        lines = StatusLines(f"site {site_name}", progress_every())

        def log(snapshot: "LaunchProgress") -> None:
            lines.update(lambda: launch_counts(snapshot, board.items(fresh=True) if board else None))

        return launch_service(ctx, site_name, log, run_id).run()
    bar = Bar(f"site {site_name}")

    def update(snapshot: "LaunchProgress") -> None:
        bar.show(launch_counts(snapshot, board.items() if board else None))

    if board is None:
        with bar.progress:
            return launch_service(ctx, site_name, update, run_id).run()
    from rich.console import Group
    from rich.live import Live

    with Live(Group(bar.progress, board), console=rich_console(stderr=True),
              refresh_per_second=4, transient=True):
        return launch_service(ctx, site_name, update, run_id).run()


class RunBoardView:
    """The run's tests x items board, re-read from the database at most twice a second; the
    progress bar counts the same items."""

    REFRESH_SECONDS = 0.5

    def __init__(self, ctx: Context, run_id: int) -> None:
        self.ctx = ctx
        self.run_id = run_id
        self._read_at = -self.REFRESH_SECONDS
        self._items: list[ItemStatus] = []
        self._renderable: Any = ""

    def items(self, fresh: bool = False) -> "list[ItemStatus]":
        """The run's items, read again when fresh or the last read is older than
        REFRESH_SECONDS."""
        now = time.monotonic()
        if fresh or now - self._read_at >= self.REFRESH_SECONDS:
            self._read_at = now
            self._items = run_items(self.ctx.db, self.run_id)
            self._renderable = None
        return self._items

    def __rich__(self) -> Any:
        items = self.items()
        if self._renderable is None:
            size = rich_console(stderr=True).size
            self._renderable = build_board(items, size.width, max(3, size.height - 3))
        return self._renderable


def print_summary(summary: "LaunchSummary") -> None:
    rows = [{"status": status, "jobs": count} for status, count in sorted(summary.by_status.items())]
    print_table(rows, ["status", "jobs"], title=f"site {summary.site}: {summary.done} job(s) "
                f"in {summary.elapsed:.1f} s", empty="no job ran")
    if summary.agent_restarts:
        note(f"the agent died and was restarted {summary.agent_restarts} time(s): see the agent "
             "logs in the site's work dir (logs/)")
    if summary.stuck:
        note(f"{summary.stuck} job(s) still wait for parents that are not on this site "
             "or will never finish", "yellow")
    if summary.interrupted:
        note("interrupted: running jobs were killed, queued jobs are READY again", "yellow")


def summary_json(summary: "LaunchSummary") -> dict[str, Any]:
    """The JSON document of `launch --json`."""
    return {"site": summary.site, "done": summary.done, "by_status": summary.by_status,
            "elapsed": round(summary.elapsed, 3), "interrupted": summary.interrupted,
            "stuck": summary.stuck, "failed": summary.failed, "recovered": summary.recovered,
            "blocked": summary.blocked, "blocked_hint": summary.blocked_hint,
            "agent_restarts": summary.agent_restarts,
            "jobs_per_second": round(summary.jobs_per_second, 1)}


def raise_if_blocked(summary: "LaunchSummary") -> None:
    """A launch gate that waiting cannot lift (a full disk), or a batch site without an open
    batch job, left jobs READY: exit 3 with what to do."""
    if summary.blocked:
        raise EnvironmentProblem(summary.blocked, summary.blocked_hint or None)


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
            from megarun.cli.engine_deps import detach_launcher

            pid, log = detach_launcher(mctx, site_name)
            if as_json:
                print_document({"pid": pid, "log": str(log), "site": site_name})
            else:
                say(f"launcher started in the background (pid {pid}); log: {log}")
            return
        summary = launch_with_progress(mctx, site_name, quiet or as_json)
        if as_json:
            print_document(summary_json(summary))
        else:
            print_summary(summary)
        if summary.interrupted:
            raise typer.Exit(130)
        raise_if_blocked(summary)
        if summary.failed:
            raise typer.Exit(1)

"""`megarun report`: write the area's static HTML report (index, runs, items, history,
campaign and batch views) into a folder that opens from file:// or any static web server."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.common import JSON_HELP, context
from megarun.cli.formats import print_document
from megarun.cli.output import note
from megarun.errors import MegarunError

if TYPE_CHECKING:
    from megarun.homehost.context import Context
    from megarun.report.html.site import WriteResult


def result_json(result: "WriteResult") -> dict[str, Any]:
    """What a build wrote (`report --json`, and the report element of `sync --json`)."""
    return {"out": str(result.out), "index": str(result.out / "index.html"),
            "written": result.written, "unchanged": result.unchanged, "removed": result.removed}


def refresh_after_sync(mctx: "Context") -> dict[str, Any] | None:
    """Refresh the area's report at its default place after a `sync` cycle (only pages whose
    data changed are rewritten); None when the area has no report there, or when it cannot be
    refreshed (said on stderr: the cycle itself went well)."""
    from megarun.report.html.build import refresh_report

    try:
        result = refresh_report(mctx.db, mctx.area)
    except MegarunError as exc:  # the sites were synced all the same: say it, do not fail them
        note(f"report not refreshed: {exc}", "yellow")
        return None
    return None if result is None else result_json(result)


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        ctx: typer.Context,
        out: Annotated[Path | None, typer.Option(
            "--out", metavar="DIR", help="Write the report here (default: report/ in the area); "
            "only pages whose data changed are rewritten.")] = None,
        target: Annotated[str | None, typer.Option(
            "--target", help="Only runs of this target (a glob: linux/*).")] = None,
        runname: Annotated[str | None, typer.Option(
            "--runname", help="Only runs of this name (a glob: nightly-*).")] = None,
        history: Annotated[int, typer.Option(
            "--history", metavar="N", help="How many runs of each target its history page "
            "shows.")] = 20,
        as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    ) -> None:
        """Write the area's HTML report: runs, items, history, campaign and batch views."""
        from megarun.report.html.build import build_report

        mctx = context(ctx)
        result = build_report(mctx.db, mctx.area, out, target=target, runname=runname,
                              history=history)
        index = result.out / "index.html"
        if as_json:
            print_document(result_json(result))
            return
        note(f"{len(result.written)} page(s) written, {result.unchanged} unchanged, "
             f"{len(result.removed)} removed")
        typer.echo(index.resolve().as_uri())

"""`megarun archive ...`: move finished runs into completed-runs.db and back, list them."""

from typing import TYPE_CHECKING, Annotated

import typer

from megarun.cli.common import JSON_HELP, context
from megarun.cli.output import note, print_json, render, say

if TYPE_CHECKING:
    from megarun.services.archive import ArchiveResult
    from megarun.services.context import Context

app = typer.Typer(help="The completed-runs archive: finished runs out of the working database "
                  "and back.", no_args_is_help=True)

TARGET = Annotated[str | None, typer.Option(
    "--target", help="Only runs of this target (a glob: linux/*).")]
RUNNAME = Annotated[str | None, typer.Option(
    "--runname", help="Only runs of this name (a glob: nightly-*).")]
AS_JSON = Annotated[bool, typer.Option("--json", help=JSON_HELP)]


@app.command("reduce")
def reduce(
    ctx: typer.Context,
    older_than: Annotated[str, typer.Option(
        "--older-than", help="Only runs idle this long (30d, 12h, 90m, 2w; 0: any finished run).",
        metavar="AGE")] = "30d",
    target: TARGET = None,
    runname: RUNNAME = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show which runs would move; move nothing.")] = False,
    as_json: AS_JSON = False,
) -> None:
    """Move finished runs (jobs, tags, dependencies, events) into completed-runs.db."""
    from megarun.core.ages import parse_age
    from megarun.services.archive import reduce_runs
    from megarun.services.runselect import RunSelection

    selection = RunSelection(target, runname, parse_age(older_than))
    _show(reduce_runs(context(ctx), selection, dry_run), as_json)


@app.command("restore")
def restore(ctx: typer.Context, target: TARGET = None, runname: RUNNAME = None,
            as_json: AS_JSON = False) -> None:
    """Move archived runs back into the working database (every run, unless narrowed)."""
    from megarun.services.archive import restore_runs
    from megarun.services.runselect import RunSelection

    _show(restore_runs(context(ctx), RunSelection(target, runname)), as_json)


@app.command("ls")
def ls(ctx: typer.Context, target: TARGET = None, runname: RUNNAME = None,
       as_json: AS_JSON = False) -> None:
    """The archived runs: target, runname, created, jobs and their statuses."""
    from megarun.services.archive import list_archived, recover
    from megarun.services.runselect import RunSelection

    mctx = context(ctx)
    for line in recover(mctx):
        note(line, "yellow")
    rows = list_archived(mctx, RunSelection(target, runname))
    if not as_json:
        rows = [{**row, "statuses": " ".join(f"{k}:{v}" for k, v in sorted(
            row["statuses"].items()))} for row in rows]
    render(rows, ["id", "target", "runname", "created", "jobs", "status", "statuses"], as_json,
           False, empty="no archived runs")


def _show(result: "ArchiveResult", as_json: bool) -> None:
    if as_json:
        print_json(result.as_dict())
        return
    for line in result.recovered:
        note(line, "yellow")
    verb = "would move" if result.dry_run else "moved"
    where = "to completed-runs.db" if result.direction == "reduce" else "back to the working db"
    render([run.__dict__ for run in result.moved], ["id", "target", "runname", "jobs"], False,
           False, title=f"{verb} {where}", empty="no run to move")
    for line in result.refused:
        note(f"left in place: {line}", "yellow")
    if result.moved:
        say(f"{verb} {len(result.moved)} run(s), {result.jobs} job(s) {where} "
            f"in {result.seconds:.1f} s")


FULL_DB = Annotated[bool, typer.Option(
    "--full-db", help="Include the runs archived in completed-runs.db.")]


def with_archive(mctx: "Context", full_db: bool) -> None:
    """`--full-db`: from here on the command's reads include archived runs (call it after
    the command's last write)."""
    if full_db:
        from megarun.services.archive import include_archive

        include_archive(mctx)

"""`megarun migrate`: move finished runs into another area."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.common import JSON_HELP, context, duration_option
from megarun.cli.formats import print_document
from megarun.cli.output import note, render
from megarun.core.quantities import DAY, MAX_AGE

if TYPE_CHECKING:
    from megarun.archive.migrate import MigrateResult


def migrate_json(result: "MigrateResult") -> dict[str, Any]:
    """`migrate --json`."""
    return {"destination": result.destination, "selection": result.selection,
            "dry_run": result.dry_run, "moved": result.moved, "refused": result.refused,
            "recovered": result.recovered, "error": result.error}


def register(app: typer.Typer) -> None:
    @app.command("migrate")
    def migrate(
        ctx: typer.Context,
        destination: Annotated[str, typer.Option(
            "--destination", metavar="AREA_PATH", help="The area that takes the runs.")],
        target: Annotated[str | None, typer.Option(
            help="Only runs of this target (a glob such as 'linux/*').")] = None,
        runname: Annotated[str | None, typer.Option(
            help="Only runs of this name (a glob).")] = None,
        older_than: Annotated[str | None, typer.Option(
            "--older-than", metavar="DURATION",
            help="Only runs idle for this long, a duration (30d, 12h, 1d12h; a bare number is "
            "days; default: any age).")] = None,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Show what would move; change nothing.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    ) -> None:
        """Copy finished runs into another area and mark them MOVED here (files stay put)."""
        from megarun.archive.migrate import migrate_runs
        from megarun.archive.runselect import RunSelection
        from megarun.cli.archive_cmd import run_store

        age = duration_option(older_than, "--older-than", DAY, MAX_AGE)
        result = migrate_runs(run_store(context(ctx)), destination,
                              RunSelection(target, runname, age), dry_run=dry_run)
        if as_json:
            print_document(migrate_json(result))
            return
        for line in result.recovered:
            note(line)
        rows = [{**m, "result": "would move" if dry_run else "moved"} for m in result.moved]
        rows += [{**r, "jobs": "", "result": f"refused: {r['reason']}"} for r in result.refused]
        render(rows, ["run", "target", "runname", "jobs", "result"], False,
               empty=f"no finished run matches ({result.selection})")
        note(result.summary())

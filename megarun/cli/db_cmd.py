"""`megarun db ...`: check the area's database files, restore the working database from the
mirror."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.common import JSON_HELP, context
from megarun.cli.formats import print_document
from megarun.cli.output import render, say

if TYPE_CHECKING:
    from megarun.homehost.dbcheck import CheckReport, FileReport, RestoreResult

app = typer.Typer(help="The area's database files: check them, restore the working database "
                  "from the mirror.", no_args_is_help=True)

AS_JSON = Annotated[bool, typer.Option("--json", help=JSON_HELP)]


@app.command("check")
def check(
    ctx: typer.Context,
    full: Annotated[bool, typer.Option(
        "--full", help="PRAGMA integrity_check (also checks indexes against tables; slower) "
        "instead of quick_check.")] = False,
    as_json: AS_JSON = False,
) -> None:
    """Integrity of the working database, the mirror, its previous generation and
    completed-runs.db (exit 3 when one is damaged)."""
    from megarun.homehost.dbcheck import check_area

    report = check_area(context(ctx), full)
    if as_json:
        print_document(check_json(report))
    else:
        _show(report)
    if not report.ok:
        raise typer.Exit(3)


def _show(report: "CheckReport") -> None:
    rows = [{"file": r.role, "health": r.health.value, "jobs": "" if r.jobs is None else r.jobs,
             "path": str(r.path), "problems": "; ".join(r.problems)} for r in report.files]
    render(rows, ["file", "health", "jobs", "path", "problems"], False)
    if report.ok:
        say("all database files are sound")
    else:
        say("damaged: recover the working database with 'megarun db restore --from-mirror'")


@app.command("restore")
def restore(
    ctx: typer.Context,
    from_mirror: Annotated[bool, typer.Option(
        "--from-mirror", help="Restore from the mirror (the only source there is; required).")
    ] = False,
    generation: Annotated[int | None, typer.Option(
        "--generation", help="0: the mirror, 1: the one before it (default: the newest sound "
        "one).", min=0, max=1)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the working database even when it is sound.")] = False,
    as_json: AS_JSON = False,
) -> None:
    """Move the working database aside (work.db.damaged-<time>, never deleted) and put a
    verified copy of the mirror in its place."""
    from megarun.errors import UsageError
    from megarun.homehost.dbcheck import restore_from_mirror

    if not from_mirror:
        raise UsageError("say where to restore from: --from-mirror")
    result = restore_from_mirror(context(ctx), generation, force)
    if as_json:
        print_document(restore_json(result))
        return
    for path in result.moved_aside:
        say(f"kept the old file as {path}")
    say(f"restored {result.working} from {result.source} (generation {result.generation}): "
        f"{result.jobs:,} jobs")


def check_json(report: "CheckReport") -> dict[str, Any]:
    """`db check --json`."""
    return {"ok": report.ok, "full": report.full, "files": [file_json(r) for r in report.files]}


def file_json(report: "FileReport") -> dict[str, Any]:
    return {"role": report.role, "path": str(report.path), "health": report.health.value,
            "problems": report.problems, "jobs": report.jobs, "size": report.size}


def restore_json(result: "RestoreResult") -> dict[str, Any]:
    """`db restore --json`."""
    return {"working": str(result.working), "source": str(result.source),
            "generation": result.generation, "moved_aside": [str(p) for p in result.moved_aside],
            "jobs": result.jobs}

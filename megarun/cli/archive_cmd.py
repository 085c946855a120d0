"""`megarun archive ...`: move finished runs into completed-runs.db and back, list them."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.common import CSV_HELP, JSON_HELP, context, duration_option, one_format
from megarun.cli.formats import LIST_LIMIT, Limited, print_document, render_listing, with_status
from megarun.cli.output import note, render, say
from megarun.config.inputs import INT64_MAX
from megarun.core.quantities import DAY, MAX_AGE

if TYPE_CHECKING:
    from megarun.archive.completed import ArchiveResult
    from megarun.archive.runselect import RunStore
    from megarun.homehost.context import Context

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
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="Only runs idle this long, a duration (30d, 12h, 1d12h; a bare "
        "number is days; 0: any finished run). Default: 30d, or any age when --runname names "
        "one run exactly (no glob).", metavar="DURATION")] = None,
    target: TARGET = None,
    runname: RUNNAME = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show which runs would move; move nothing.")] = False,
    as_json: AS_JSON = False,
) -> None:
    """Move finished runs (jobs, tags, dependencies, events) into completed-runs.db."""
    from megarun.archive.completed import reduce_age, reduce_runs
    from megarun.archive.runselect import RunSelection

    age = reduce_age(duration_option(older_than, "--older-than", DAY, MAX_AGE), runname)
    selection = RunSelection(target, runname, age)
    _show(reduce_runs(run_store(context(ctx)), selection, dry_run), as_json,
          bool(target or runname))


@app.command("restore")
def restore(ctx: typer.Context, target: TARGET = None, runname: RUNNAME = None,
            as_json: AS_JSON = False) -> None:
    """Move archived runs back into the working database (every run, unless narrowed)."""
    from megarun.archive.completed import restore_runs
    from megarun.archive.runselect import RunSelection

    _show(restore_runs(run_store(context(ctx)), RunSelection(target, runname)), as_json)


@app.command("ls")
def ls(ctx: typer.Context, target: TARGET = None, runname: RUNNAME = None,
       status: Annotated[str | None, typer.Option(
           "--status", help="Only runs whose roll-up status is this (PASS, FAIL, ...).")] = None,
       limit: Annotated[int, typer.Option(
           help="At most this many runs (0: all); stderr says how many more there are.",
           min=0, max=INT64_MAX)] = LIST_LIMIT,
       as_json: AS_JSON = False,
       as_csv: Annotated[bool, typer.Option("--csv", help=CSV_HELP)] = False) -> None:
    """The archived runs, oldest first: target, runname, created, jobs and their statuses."""
    from megarun.archive.completed import list_archived, recover
    from megarun.archive.runselect import RunSelection

    one_format(as_json, as_csv)
    store = run_store(context(ctx))
    for line in recover(store):
        note(line, "yellow")
    rows = Limited(with_status(list_archived(store, RunSelection(target, runname)), status),
                   limit)
    shown = rows if as_json or as_csv else (
        {**row, "statuses": " ".join(f"{k}:{v}" for k, v in sorted(row["statuses"].items()))}
        for row in rows)
    render_listing(shown, ["id", "target", "runname", "created", "jobs", "status", "statuses"],
                   as_json, as_csv, empty="no archived runs")
    rows.note_more()


def run_store(mctx: "Context") -> "RunStore":
    """What the archive and migrate commands act on, from the command's context (the database
    first: opening it tells whether this host reads the mirror)."""
    from megarun.archive.runselect import RunStore

    db = mctx.db
    return RunStore(db, mctx.area, mctx.home.db.parent / "locks", mctx.read_only)


def archive_json(result: "ArchiveResult") -> dict[str, Any]:
    """`archive reduce|restore --json`."""
    return {"direction": result.direction, "archive": result.archive,
            "dry_run": result.dry_run, "runs": [run.__dict__ for run in result.moved],
            "jobs": result.jobs, "refused": result.refused, "recovered": result.recovered,
            "older_than": result.older_than,
            "matched_but_left": {"too_young": result.held_back.too_young,
                                 "unfinished": result.held_back.unfinished},
            "seconds": round(result.seconds, 3)}


def _show(result: "ArchiveResult", as_json: bool, named: bool = False) -> None:
    if as_json:
        print_document(archive_json(result))
        return
    for line in result.recovered:
        note(line, "yellow")
    verb = "would move" if result.dry_run else "moved"
    where = "to completed-runs.db" if result.direction == "reduce" else "back to the working db"
    render([run.__dict__ for run in result.moved], ["id", "target", "runname", "jobs"], False,
           title=f"{verb} {where}", empty="no run to move")
    for line in result.refused:
        note(f"left in place: {line}", "yellow")
    if named:  # the user picked runs: say why those that matched did not move
        for line in held_back_lines(result):
            note(line, "yellow")
    if result.moved:
        say(f"{verb} {len(result.moved)} run(s), {result.jobs} job(s) {where} "
            f"in {result.seconds:.1f} s")


def held_back_lines(result: "ArchiveResult") -> list[str]:
    """One line per reason that kept matching runs out of a reduce, with what to do."""
    from megarun.core.quantities import format_age

    held, lines = result.held_back, []
    if held.too_young:
        age = format_age(result.older_than or 0.0)
        lines.append(f"{_runs(held.too_young)} matched but {_is(held.too_young)} younger than "
                     f"{age}; add --older-than 0 to move {_it(held.too_young)}")
    if held.unfinished:
        lines.append(f"{_runs(held.unfinished)} matched but {_is(held.unfinished)} not finished: "
                     "jobs still wait or run (they move once those end; megarun kill stops "
                     "them)")
    return lines


def _runs(count: int) -> str:
    return f"{count} run" + ("" if count == 1 else "s")


def _is(count: int) -> str:
    return "is" if count == 1 else "are"


def _it(count: int) -> str:
    return "it" if count == 1 else "them"


FULL_DB = Annotated[bool, typer.Option(
    "--full-db", help="Include the runs archived in completed-runs.db.")]


def with_archive(mctx: "Context", full_db: bool) -> None:
    """`--full-db`: from here on the command's reads include archived runs (call it after
    the command's last write)."""
    if full_db:
        mctx.include_archive()

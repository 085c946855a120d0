"""`megarun queue ...`: batch jobs (scheduler allocations) of batch sites."""

from typing import Annotated

import typer

from megarun.cli.common import CSV_HELP, JSON_HELP, context, duration_option, one_format, parse_pairs
from megarun.cli.formats import LIST_LIMIT, print_document, render_listing, stamped_rows
from megarun.cli.output import note, print_json, say
from megarun.config.inputs import INT64_MAX
from megarun.core.quantities import MINUTE, SECOND
from megarun.errors import EnvironmentProblem

app = typer.Typer(help="Batch jobs: scheduler allocations (pilot or direct).",
                  no_args_is_help=True)

_COLUMNS = ["id", "site", "scheduler_id", "mode", "state", "nodes", "walltime", "queue",
            "message"]


@app.command("submit")
def submit(
    ctx: typer.Context,
    site: Annotated[str, typer.Option(help="Batch site to submit to.")],
    nodes: Annotated[int | None, typer.Option(
        help="Nodes of the allocation (pilot; direct: largest job to take).", min=1,
        max=INT64_MAX)] = None,
    walltime: Annotated[str | None, typer.Option(
        help="Length of the allocation, a duration (2h, 1h30m; a bare number is minutes); "
        "direct: the default for jobs without a walltime.", metavar="DURATION")] = None,
    queue: Annotated[str | None, typer.Option(
        help="Queue/partition (default: the site's default_queue, else the first of its queues "
        "that takes the nodes and walltime).")] = None,
    account: Annotated[str | None, typer.Option(
        help="Account/project to charge (default: the site's account).")] = None,
    mode: Annotated[str, typer.Option(
        help="pilot: one agent packs many jobs into the allocation; direct: one batch job "
        "per READY job.")] = "pilot",
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", "-t", help="Only jobs with this tag key=value (repeatable).",
        metavar="KEY=VALUE")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Extra scheduler directive key=value, e.g. qos=debug (repeatable).",
        metavar="KEY=VALUE")] = None,
    idle_exit: Annotated[str | None, typer.Option(
        "--idle-exit", metavar="DURATION",
        help="A pilot with nothing to do for this long exits (default: 2m; a bare number is "
        "seconds).")] = None,
    limit: Annotated[int | None, typer.Option(
        help="Direct mode: at most this many jobs.", min=1, max=INT64_MAX)] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Submit a pilot, or one direct batch job per READY job of the site (exit 3 when the
    scheduler refused one)."""
    from megarun.cli.engine_deps import submit_batch_jobs
    from megarun.engine.batch import SubmitRequest

    minutes = duration_option(walltime, "--walltime", MINUTE)
    request = SubmitRequest(site, nodes, None if minutes is None else minutes / MINUTE, queue,
                            account, mode, parse_pairs(tag, "-t"), set_ or [],
                            duration_option(idle_exit, "--idle-exit", SECOND), limit)
    rows = submit_batch_jobs(context(ctx), request)
    if as_json:
        print_json(list(stamped_rows(rows)))
    else:
        for row in rows:
            if row["state"] == "submit_failed":
                continue
            say(f"batch job {row['id']} submitted to {row['site']} as "
                f"{row['scheduler_id']} ({row['mode']}, {row['nodes']} node(s), "
                f"{row['walltime']:g} min)")
    failed = [row for row in rows if row["state"] == "submit_failed"]
    if failed:
        first = failed[0]
        raise EnvironmentProblem(f"{len(failed)} of {len(rows)} batch job(s) not submitted: "
                                 f"batch job {first['id']}: {first['message']}")


@app.command("ls")
def ls(
    ctx: typer.Context,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    state: Annotated[str | None, typer.Option(
        help="Only batch jobs in this state (pending_submission, queued, running, finished, "
        "submit_failed, cancelled); ended states imply --history.")] = None,
    history: Annotated[bool, typer.Option(
        "--history", help="Also batch jobs that ended.")] = False,
    limit: Annotated[int, typer.Option(
        help="At most this many batch jobs (0: all); stderr says how many more there are.",
        min=0, max=INT64_MAX)] = LIST_LIMIT,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help=CSV_HELP)] = False,
) -> None:
    """List open batch jobs (with --history, every one), oldest first."""
    from megarun.cli.engine_deps import batch_jobs, count_batch_jobs
    from megarun.engine.batch import parse_batch_state

    one_format(as_json, as_csv)
    wanted = parse_batch_state(state)
    mctx = context(ctx)
    rows = batch_jobs(mctx, site, history, wanted, limit)
    shown = render_listing(rows, _COLUMNS, as_json, as_csv,
                           empty="no open batch jobs" + ("" if history else " (see also: --history)"))
    if limit and shown == limit:
        more = count_batch_jobs(mctx, site, history, wanted) - shown
        if more > 0:
            note(f"... {more:,} more; --limit 0 for all", "dim")


@app.command("rm")
def rm(
    ctx: typer.Context,
    batch_id: Annotated[int, typer.Argument(metavar="ID", help="Batch job id (queue ls).", min=1,
                                          max=INT64_MAX)],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Cancel a batch job; its unstarted jobs go back to READY, its running ones end."""
    from megarun.cli.engine_deps import cancel_batch_job

    row = cancel_batch_job(context(ctx), batch_id)
    if as_json:
        print_document(row)
    else:
        say(f"batch job {batch_id} cancelled")

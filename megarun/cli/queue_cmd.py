"""`megarun queue ...`: batch jobs (scheduler allocations) of batch sites."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.common import CSV_HELP, JSON_HELP, context, duration_option, one_format, parse_pairs
from megarun.cli.formats import LIST_LIMIT, print_document, render_listing, stamped_rows
from megarun.cli.output import note, print_json, say
from megarun.config.inputs import INT64_MAX
from megarun.core.quantities import MINUTE, SECOND
from megarun.errors import EnvironmentProblem

if TYPE_CHECKING:
    from megarun.engine.elastic import ElasticOutcome
    from megarun.engine.elastic_run import BacklogReport

app = typer.Typer(help="Batch jobs: scheduler allocations (pilot or direct).",
                  no_args_is_help=True)

_COLUMNS = ["id", "site", "scheduler_id", "mode", "state", "nodes", "walltime", "queue",
            "elastic", "message"]
_BACKLOG_COLUMNS = ["site", "elastic", "ready", "waiting_on_dependencies", "queued", "running",
                    "pilots_queued", "pilots_running", "pilot_nodes", "node_hours",
                    "wanted_nodes"]


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


@app.command("elastic")
def elastic(
    ctx: typer.Context,
    site: Annotated[str, typer.Option(help="Batch site whose elastic settings decide.")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only say what would be submitted or cancelled, and why.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Run the site's elastic policy once: submit the pilots its backlog wants, cancel queued
    ones nobody needs (with --dry-run, only say so)."""
    from megarun.cli.engine_deps import elastic_step

    outcome = elastic_step(context(ctx), site, dry_run)
    if as_json:
        print_document({"site": site, **elastic_json(outcome)})
        return
    for line in elastic_lines(site, outcome):
        say(line)


@app.command("backlog")
def backlog(
    ctx: typer.Context,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    app_name: Annotated[str | None, typer.Option(
        "--app", help="Only jobs of this app.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """The work waiting per site (and per app and jobgroup): READY, waiting on dependencies,
    queued and running jobs, the pilots, the backlog's node-hours and the nodes the elastic
    policy would want; for people and for autoscalers (--json)."""
    from megarun.cli.engine_deps import backlog_reports

    reports = backlog_reports(context(ctx), site, app_name)
    rows = [backlog_json(report) for report in reports]
    if as_json:
        print_document({"sites": rows})
        return
    render_listing(rows, _BACKLOG_COLUMNS, False, False, empty="no sites")


def elastic_json(outcome: "ElasticOutcome") -> dict[str, Any]:
    """An elastic step as `queue elastic --json` and `sync --json` print it."""
    decision = outcome.decision
    return {"enabled": decision.enabled, "dry_run": outcome.dry_run,
            "wanted_nodes": decision.wanted_nodes, "capacity_nodes": decision.capacity_nodes,
            "open_pilots": decision.open_pilots, "queued_pilots": decision.queued_pilots,
            "submit": [{"nodes": r.nodes, "walltime": r.walltime, "queue": r.queue,
                        "account": r.account, "reason": r.reason} for r in decision.submit],
            "cancel": [{"batch_id": c.batch_id, "reason": c.reason} for c in decision.cancel],
            "never_fit": [{"count": n.count, "job_ids": list(n.job_ids), "reason": n.reason}
                          for n in decision.never_fit],
            "held": decision.held, "submitted": outcome.submitted,
            "cancelled": outcome.cancelled,
            "failed": {str(key): message for key, message in outcome.failed.items()}}


def elastic_lines(site: str, outcome: "ElasticOutcome") -> list[str]:
    """What an elastic step did (or, dry, would do), one line each."""
    decision = outcome.decision
    verb = "would submit" if outcome.dry_run else "submit"
    lines = [f"site {site}: {decision.wanted_nodes} node(s) wanted, {decision.capacity_nodes} "
             f"held by {decision.open_pilots} open pilot(s)"] if decision.enabled else []
    lines += [f"{verb} a pilot of {r.nodes} node(s), {r.walltime:g} min"
              f"{f' in queue {r.queue}' if r.queue else ''}: {r.reason}" for r in decision.submit]
    verb = "would cancel" if outcome.dry_run else "cancel"
    lines += [f"{verb} batch job {c.batch_id}: {c.reason}" for c in decision.cancel]
    lines += [f"{n.count} job(s) can never run here ({n.reason}), e.g. "
              f"{', '.join(map(str, n.job_ids))}" for n in decision.never_fit]
    if decision.held:
        lines.append(f"held: {decision.held}")
    lines += [f"batch job {key or '-'} not submitted: {message}"
              for key, message in outcome.failed.items()]
    if len(lines) <= 1 and decision.enabled:
        lines.append("nothing to submit or cancel")
    return lines


def backlog_json(report: "BacklogReport") -> dict[str, Any]:
    """One site of `queue backlog --json`."""
    return {"site": report.site, "elastic": report.elastic, **_counts(report.total),
            "pilots_queued": report.pilots_queued, "pilots_running": report.pilots_running,
            "pilot_nodes": report.pilot_nodes, "pilot_slots": report.pilot_slots,
            "wanted_nodes": report.wanted_nodes,
            "groups": [{"app": app_name, "jobgroup": group, **_counts(counts)}
                       for (app_name, group), counts in sorted(report.groups.items())]}


def _counts(group: Any) -> dict[str, Any]:
    return {"ready": group.ready, "waiting_on_dependencies": group.waiting_on_dependencies,
            "queued": group.queued, "running": group.running,
            "node_hours": round(group.node_minutes / 60.0, 3),
            "without_walltime": group.without_walltime}

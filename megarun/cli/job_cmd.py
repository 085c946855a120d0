"""`megarun job ...`: create, select, inspect, kill, remove, reset jobs."""

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.api import jobs as job_api
from megarun.campaign import query
from megarun.campaign.control import KillResult, kill_jobs, remove_jobs, reset_jobs
from megarun.campaign.create import CreatedJobs, JobRequest, requests_from_file
from megarun.campaign.query import JobFilter
from megarun.cli.archive_cmd import FULL_DB, with_archive
from megarun.cli.common import CSV_HELP, JSON_HELP, context, duration_option, one_format, parse_pairs
from megarun.cli.formats import print_document, render_listing, stamped_rows
from megarun.cli.output import note, print_json, print_mapping, render, say
from megarun.config.inputs import INT64_MAX
from megarun.core.quantities import MINUTE

if TYPE_CHECKING:
    from megarun.engine.matching import MatchResult

app = typer.Typer(help="Jobs: single executions of an app.", no_args_is_help=True)

_LIST_COLUMNS = ["id", "app", "run", "item", "site", "state", "status", "attempt", "exit_code",
                 "tags", "message"]
TagOption = Annotated[list[str] | None, typer.Option(
    "--tag", "-t", help="Tag key=value (repeatable; all must match).", metavar="KEY=VALUE")]


def _minutes(walltime: str | None) -> float | None:
    seconds = duration_option(walltime, "--walltime", MINUTE)
    return None if seconds is None else seconds / MINUTE


@app.command("create")
def create(
    ctx: typer.Context,
    app_name: Annotated[str | None, typer.Option("--app", help="App to run.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="Parameter name=value (repeatable).", metavar="NAME=VALUE")] = None,
    tag: TagOption = None,
    site: Annotated[str | None, typer.Option(help="Site to run on (default: the area's).")] = None,
    nodes: Annotated[int | None, typer.Option(help="Nodes.", min=1)] = None,
    ranks_per_node: Annotated[int | None, typer.Option(help="MPI ranks per node.", min=1)] = None,
    threads_per_rank: Annotated[int | None, typer.Option(
        help="Threads per rank (OMP_NUM_THREADS).", min=1)] = None,
    gpus_per_rank: Annotated[int | None, typer.Option(help="GPUs per rank.", min=0)] = None,
    node_packing_count: Annotated[int | None, typer.Option(
        help="At most this many such jobs share one node in a pilot (0: no limit but cpus "
        "and gpus).", min=0)] = None,
    walltime: Annotated[str | None, typer.Option(
        help="Runtime limit, a duration (90m, 1h30m; a bare number is minutes); the job ends "
        "TIMEOUT past it.", metavar="DURATION")] = None,
    after: Annotated[list[int] | None, typer.Option(
        "--after", help="Run only after this job passed (repeatable).", metavar="JOB_ID")] = None,
    count: Annotated[int, typer.Option(help="How many identical jobs.", min=1)] = 1,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    from_file: Annotated[Path | None, typer.Option(
        "--from-file", help="JSON Lines file, one job per line (fields as the options).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Create jobs from an app (all are validated before any is created)."""
    defaults = JobRequest(app=app_name or "", params=parse_pairs(param, "-p"),
                          tags=parse_pairs(tag, "-t"), site=site, nodes=nodes,
                          ranks_per_node=ranks_per_node, threads_per_rank=threads_per_rank,
                          gpus_per_rank=gpus_per_rank, node_packing_count=node_packing_count,
                          walltime=_minutes(walltime), after=after or [],
                          priority=priority, count=count)
    mctx = context(ctx)
    if from_file is not None:
        requests = list(requests_from_file(from_file, defaults))
    elif not app_name:
        raise typer.BadParameter("give --app NAME or --from-file FILE", param_hint="--app")
    else:
        requests = [defaults]
    created = job_api.create(mctx, requests)
    if as_json:
        print_document(created_json(created))
    elif created.count == 1:
        say(f"job {created.first_id} created ({', '.join(created.states)})")
    else:
        states = ", ".join(f"{n} {s}" for s, n in created.states.items())
        say(f"{created.count} jobs created: {created.first_id}..{created.last_id} "
                      f"({states})")
    if created.unmatched and not as_json:
        note(f"{created.unmatched} job(s) wait for a site that satisfies their app's "
             "requirements (megarun job match, or the next launch or sync)", "dim")


@app.command("ls")
def ls(
    ctx: typer.Context,
    tag: TagOption = None,
    state: Annotated[str | None, typer.Option(
        help="Only this STATE (FAILED: any failing status).")] = None,
    status: Annotated[str | None, typer.Option(help="Only this STATUS.")] = None,
    app_name: Annotated[str | None, typer.Option("--app", help="Only jobs of this app.")] = None,
    site: Annotated[str | None, typer.Option(help="Only jobs of this site.")] = None,
    run: Annotated[str | None, typer.Option(
        "--run", help="Only jobs of this test-suite run.", metavar="TARGET/RUNNAME")] = None,
    test: Annotated[str | None, typer.Option(
        "--test", help="Only jobs of this test (of every run, or of --run).", metavar="NAME")
    ] = None,
    limit: Annotated[int, typer.Option(
        help="At most this many jobs (0: all); stderr says how many more there are.",
        min=0, max=INT64_MAX)] = query.DEFAULT_LIST_LIMIT,
    by_state: Annotated[bool, typer.Option(
        "--by-state", help="Count jobs per state and status instead of listing them.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help=CSV_HELP)] = False,
    full_db: FULL_DB = False,
) -> None:
    """List jobs, oldest first."""
    one_format(as_json, as_csv)
    flt = JobFilter(tags=parse_pairs(tag, "-t"), state=state, status=status, app=app_name,
                    site=site, run=run, test=test)
    mctx = context(ctx)
    with_archive(mctx, full_db)
    if by_state:
        counts = [dict(row) for row in job_api.state_counts(mctx, flt)]
        render_listing(counts, ["state", "status", "count"], as_json, as_csv, empty="no jobs")
        return
    rows: Iterator[Any] = job_api.job_rows(mctx, flt, limit)
    if not (as_json or as_csv):  # CSV has the fields and values of --json
        rows = (_shown_test(_shown_site(row)) for row in rows)
    shown = render_listing(rows, _LIST_COLUMNS, as_json, as_csv, empty="no jobs match")
    more = job_api.more_jobs(mctx, flt, shown, limit)
    if more > 0:
        note(f"... {more:,} more; --limit 0 for all", "dim")


UNMATCHED = "(unmatched)"


def created_json(created: CreatedJobs) -> dict[str, Any]:
    """`job create --json`."""
    return {"first_id": created.first_id, "last_id": created.last_id, "count": created.count,
            "states": created.states, "unmatched": created.unmatched}


def kill_json(result: KillResult) -> dict[str, list[int]]:
    """`job kill --json` and `kill --json`: "undelivered" only when some kill is."""
    data = {"killed": result.killed, "requested": result.requested, "skipped": result.skipped}
    return {**data, "undelivered": result.undelivered} if result.undelivered else data


def _shown_test(job: Mapping[str, Any]) -> dict[str, Any]:
    """In tables a test-suite job shows its test in the APP column (its run and item in
    their own); app jobs leave those empty."""
    if job.get("run") is None:
        return {**job, "run": "", "item": ""}
    return {**job, "app": job["test"], "item": job["item"] or ""}


def _shown_site(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job with no site yet reads "(unmatched)" in tables (null in --json)."""
    return {**job} if job.get("site") is not None else {**job, "site": UNMATCHED}


@app.command("show")
def show(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    full_db: FULL_DB = False,
) -> None:
    """Show everything about one job, with its event trail."""
    mctx = context(ctx)
    with_archive(mctx, full_db)
    data = job_api.job_detail(mctx, job_id)
    if as_json:
        print_document({**data, "events": list(stamped_rows(data["events"]))})
        return
    print_mapping(_shown_site(data), title=f"job {job_id}")
    render(data["steps"], ["name", "state", "status", "exit_code", "duration", "cmd"], False,
           title="steps")
    render([dict(event) for event in data["events"]],
           ["time", "from", "to", "status", "attempt", "message"], False, title="events")


@app.command("logs")
def logs(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    head: Annotated[int | None, typer.Option(
        help="Only the first N lines of each log.", metavar="N", min=0, max=INT64_MAX)] = None,
    tail: Annotated[int | None, typer.Option(
        help="Only the last N lines of each log.", metavar="N", min=0, max=INT64_MAX)] = None,
    step: Annotated[str | None, typer.Option(
        "--step", help="Only this step's logs (its .out, then its .err).", metavar="NAME")
    ] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON: per log its path, size, and at most the last 64 KiB of "
        "text (the first with --head alone), `truncated` when that is not the whole file.")
    ] = False,
) -> None:
    """Print a job's logs step by step (each step's stdout, then its stderr), each after a
    `==> name <==` line, streamed (constant memory whatever their size)."""
    mctx = context(ctx)
    if as_json:
        found = job_api.log_excerpts(mctx, job_id, head, tail, step)
        print_json({item.log.name: {"path": item.log.path, "size": item.log.size,
                                    "truncated": item.truncated, "text": item.text}
                    for item in found})
        return
    job_api.write_logs(mctx, job_id, sys.stdout.buffer, head, tail, step)
    sys.stdout.buffer.flush()


@app.command("kill")
def kill(
    ctx: typer.Context,
    job_ids: Annotated[list[int], typer.Argument(help="Job ids.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Kill jobs: waiting ones at once, running ones through their agent."""
    mctx = context(ctx)
    result = kill_jobs(mctx.db, mctx.area, job_ids)
    if as_json:
        print_document(kill_json(result))
        return
    for key, ids in (("killed", result.killed), ("requested", result.requested),
                     ("skipped", result.skipped)):
        if ids:
            say(f"{key}: {', '.join(map(str, ids))}")
    if result.undelivered:
        note(f"site unreachable: the kill of {', '.join(map(str, result.undelivered))} "
             "is delivered by the next `megarun launch` or `megarun sync`", "yellow")


@app.command("rm")
def rm(
    ctx: typer.Context,
    job_ids: Annotated[list[int], typer.Argument(help="Job ids.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Remove jobs that are not running (their event trail is kept)."""
    removed = remove_jobs(context(ctx).db, job_ids)
    if as_json:
        print_document({"removed": removed})
    else:
        say(f"removed {len(removed)} job(s)")


@app.command("reset")
def reset(
    ctx: typer.Context,
    job_ids: Annotated[list[int], typer.Argument(help="Job ids.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Send ended jobs back to READY with a fresh set of attempts."""
    mctx = context(ctx)
    done = reset_jobs(mctx.db, job_ids, mctx.area.config.launcher.retries)
    if as_json:
        print_document({"reset": done})
    else:
        say(f"reset {len(done)} job(s) to READY")


@app.command("match")
def match(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Give READY jobs with no site a site that satisfies their app's requirements."""
    from megarun.engine.matching import match_jobs

    mctx = context(ctx)
    result = match_jobs(mctx.db, mctx.area)
    if as_json:
        print_document(match_json(result))
        return
    rows: list[dict[str, Any]] = [{"site": site, "jobs": count, "reason": ""}
                                  for site, count in sorted(result.assigned.items())]
    rows += [{"site": UNMATCHED, "jobs": u.jobs, "reason": u.reason}
             for u in result.unmatched_apps]
    render(rows, ["site", "jobs", "reason"], False,
           title=f"policy {result.policy}", empty="no READY job waits for a site")


def match_json(result: "MatchResult") -> dict[str, Any]:
    """`job match --json`."""
    return {"policy": result.policy, "assigned": dict(result.assigned),
            "unmatched": result.unmatched,
            "unmatched_apps": [{"app": u.app, "jobs": u.jobs, "reason": u.reason}
                               for u in result.unmatched_apps]}

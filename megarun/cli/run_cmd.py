"""Test-suite run commands: run, rerun, clean, kill, status, runs ls/export."""

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.api import runs as run_api
from megarun.cli.archive_cmd import FULL_DB, with_archive
from megarun.cli.board import ended_count
from megarun.cli.common import CSV_HELP, JSON_HELP, context, one_format
from megarun.cli.follow import EVERY, every_seconds, follow_run
from megarun.cli.formats import (
    LIST_LIMIT,
    Limited,
    print_document,
    render_listing,
    with_status,
    write_csv,
)
from megarun.cli.output import note, print_json, render, say
from megarun.config.inputs import INT64_MAX
from megarun.core.states import JobState
from megarun.errors import UsageError, WorkFailed
from megarun.homehost.context import Context
from megarun.suites.run_report import run_items

if TYPE_CHECKING:
    from megarun.db.models import Run
    from megarun.engine.reports import LaunchSummary
    from megarun.suites.run_control import CleanPreview
    from megarun.suites.run_prepare import RunSetup
    from megarun.suites.run_report import ItemStatus

TARGET = Annotated[str, typer.Option("--target", help="Target: the area's key values joined by '/'.")]
RUNNAME = Annotated[str, typer.Option("--runname", help="Name of the run.")]
TESTPATT = Annotated[str | None, typer.Option(
    "--testpatt", help="Tests to include: comma-separated patterns, % matches anything.")]

QUIET = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
AS_JSON = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
AS_CSV = Annotated[bool, typer.Option("--csv", help=CSV_HELP)]
SITE = Annotated[str | None, typer.Option(help="Site to run on (default: the area's).")]
DETACH = Annotated[bool, typer.Option("--detach",
                                      help="Return at once; the run goes on in the background.")]
STATUSES = Annotated[str | None, typer.Option(
    "--status", help="Statuses to rerun, comma-separated (default: the non-good ones).")]
CLEAN = Annotated[bool, typer.Option("--clean", help="Wipe their run paths first.")]
DOWNSTREAM = Annotated[bool, typer.Option("--downstream",
                                          help="Also rerun everything that waits on them.")]
STALE = Annotated[bool, typer.Option("--stale", help="Rerun STALE jobs.")]
STEP = Annotated[str | None, typer.Option(
    "--step", help="Run the chosen jobs again from this step on, in their run path.")]
KEEP = Annotated[bool, typer.Option("--keep-records", help="Remove only the files.")]
FOLLOW = Annotated[bool, typer.Option("--follow", "-f", help="Stay until the run ends: the "
                                      "live board on a terminal, else a line every --every; "
                                      "then exit as `run` would.")]

runs_app = typer.Typer(help="List and export test-suite runs.", no_args_is_help=True)


def _settle_defunct(ctx: Context) -> None:
    from megarun.cli.engine_deps import settle_defunct

    settle_defunct(ctx)


def _warn(message: str) -> None:
    note(message, "yellow")


def _items(ctx: Context, run: "Run", testpatt: str | None) -> "list[ItemStatus]":
    """The run's items, those the area's current files make STALE shown so at once."""
    return run_api.items_of(ctx, run, testpatt, _warn)


def _print_matrix(ctx: Context, run: "Run", testpatt: str | None, as_json: bool,
                  as_csv: bool) -> bool:
    """Print the run's tests x items; return True when something failed."""
    from megarun.core.rollup import headline

    report = run_api.run_report(ctx, run, testpatt, _warn)
    items, tests, counts = report.items, report.tests, report.counts
    if as_json or as_csv:
        steps = run_api.item_steps(ctx, [i.id for i in items])
        records = [{"id": i.id, "test": i.test, "item": i.item, "state": i.state,
                    "status": i.status, "exit_code": i.exit_code, "message": i.message,
                    "steps": steps.get(i.id, [])} for i in items]
        if as_csv:
            write_csv(records, ["test", "item", "state", "status", "id", "message"])
        else:
            print_document({"target": run.target, "runname": run.runname,
                            "status": report.status, "counts": counts,
                            "tests": [{"test": name, **entry} for name, entry in tests.items()],
                            "items": records})
        return report.failed
    rows = [{"test": i.test, "item": i.item or "-", "state": i.state, "status": i.status,
             "id": i.id, "message": i.message} for i in items]
    render(rows, ["test", "item", "state", "status", "id", "message"], False,
           title=f"run {run.target}/{run.runname}", empty="no jobs in this run")
    summary = [{"test": name, "jobs": e["jobs"], "status": e["status"],
                "states": " ".join(f"{k}:{v}" for k, v in sorted(e["states"].items()))}
               for name, e in tests.items()]
    render(summary, ["test", "jobs", "status", "states"], False, title="by test")
    say(f"run status: {headline(counts)}")
    return report.failed


def _check_step(ctx: Context, run_id: int, statuses: list[str], stale: bool, downstream: bool,
                testpatt: str | None, ids: list[int], step: str) -> list[int]:
    """The jobs `rerun --step` starts at `step` (those chosen before --downstream adds the
    jobs waiting on them, which run whole); UsageError when one's test has no such step."""
    from megarun.campaign.rerun_step import check_step, check_step_of_tests
    from megarun.suites.run_control import select_for_rerun
    from megarun.suites.run_report import run_items

    chosen = select_for_rerun(ctx.db, run_id, statuses, stale, False, testpatt) if downstream else ids
    if chosen:
        check_step(ctx.db, chosen, step)
    else:  # nothing to rerun: a mistyped step is still worth saying
        tests = sorted({i.test for i in run_items(ctx.db, run_id, testpatt)})
        check_step_of_tests(ctx.db, run_id, tests, step)
    return chosen


def _junit(ctx: Context, run: "Run", items: "list[ItemStatus]") -> str:
    """The run's JUnit XML (megarun.report.junit), failing steps' logs read from each site."""
    from megarun.campaign.joblogs import log_tails
    from megarun.report.junit import TAIL_BYTES, TAIL_LINES, build_cases, junit_xml
    from megarun.sites.registry import get_site

    def read_tails(site: str | None, paths: list[str]) -> dict[str, str]:
        return log_tails(get_site(ctx, site) if site else None, paths, TAIL_LINES, TAIL_BYTES)

    cases = build_cases(ctx.db, int(run.id), items, read_tails)
    return junit_xml(str(run.target), str(run.runname), cases, run.created)


def setup_json(setup: "RunSetup") -> dict[str, Any]:
    """`run --detach --json` (with the pid and log of the background run)."""
    return {"run": setup.run_id, "target": setup.target, "runname": setup.runname,
            "site": setup.site, "tests": setup.tests, "jobs": setup.jobs,
            "created": setup.created, "stale": setup.stale, "skipped": setup.skipped}


def _launch(ctx: Context, site: str, run_id: int, quiet: bool) -> "LaunchSummary":
    from megarun.cli.launch_cmd import launch_with_progress

    return launch_with_progress(ctx, site, quiet, run_id=run_id)


def _finish(summary: "LaunchSummary | None", failed: bool) -> None:
    """Exit 3 when a launch gate left jobs unlaunched, 1 when a test did not pass."""
    if summary is not None:
        from megarun.cli.launch_cmd import raise_if_blocked

        raise_if_blocked(summary)
        if summary.interrupted:
            raise typer.Exit(130)
    if failed:
        raise WorkFailed("some tests did not pass")


def _check_pattern(ctx: Context, run: "Run", testpatt: str | None) -> None:
    """Refuse (exit 2) a pattern that matches no test of the run, as `run` does for the area."""
    from megarun.suites.run_state import check_run_pattern

    check_run_pattern(ctx.db, int(run.id), testpatt, f"{run.target}/{run.runname}")


def clean_preview_json(preview: "CleanPreview") -> dict[str, Any]:
    """`clean --dry-run --json`."""
    return {"dry_run": True, "jobs": preview.jobs, "paths": preview.paths,
            "records": preview.records, "run_record": preview.run_record}


def _say_preview(preview: "CleanPreview") -> None:
    """`clean --dry-run` for people: each path, then the counts."""
    for path in preview.paths:
        say(f"would remove {path}")
    say(f"would remove {len(preview.paths)} run path(s), {len(preview.records)} job record(s)"
        + (" and the run's record" if preview.run_record else "") + "; nothing was removed")


#: `status` of a run with items that have not ended yet (EX_TEMPFAIL: ask again later).
STILL_RUNNING = 75


def _exit_like_run(ctx: Context, run: "Run", testpatt: str | None, failed: bool) -> None:
    """`status` exits as `run` does once the run ended (1 when a test did not pass), and
    STILL_RUNNING while some of its items have not ended."""
    from megarun.core.rollup import UNFINISHED_STATES
    from megarun.suites.run_state import count_in_states

    if count_in_states(ctx.db, int(run.id), UNFINISHED_STATES, testpatt):
        raise typer.Exit(STILL_RUNNING)
    if failed:
        raise WorkFailed("some tests did not pass")


def _say_what_next(ctx: Context, run: "Run", testpatt: str | None,
                   summary: "LaunchSummary | None") -> None:
    """After `run`/`rerun`: how to continue an interrupted run, or to run KILLED items again
    (`run` continues what has not ended; KILLED items ended, only `rerun` runs them again)."""
    import shlex

    from megarun.suites.run_state import count_in_states

    where = f"--target {shlex.quote(run.target)} --runname {shlex.quote(run.runname)}" + (
        f" --testpatt {shlex.quote(testpatt)}" if testpatt else "")
    if summary is not None and summary.interrupted:
        on_site = "" if summary.site == ctx.area.config.default_site else (
            f" --site {shlex.quote(summary.site)}")
        ended, total, _ = ended_count(run_items(ctx.db, int(run.id), testpatt))
        note(f"run {run.target}/{run.runname} interrupted: {ended} of {total} item(s) ended, "
             f"the stopped items are READY again; continue the run with: "
             f"megarun run {where}{on_site}", "yellow")
        return
    killed = count_in_states(ctx.db, int(run.id), [JobState.KILLED], testpatt)
    if killed:
        note(f"{killed} item(s) of {run.target}/{run.runname} are KILLED: run them again with "
             f"megarun rerun {where}")


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")

    @app.command("run")
    def run(ctx: typer.Context, target: TARGET, runname: RUNNAME, testpatt: TESTPATT = None,
            site: SITE = None, detach: DETACH = False, quiet: QUIET = False,
            as_json: AS_JSON = False) -> None:
        """Expand tests x items into jobs for a target and run them; running it again continues."""
        from megarun.sites.registry import ensure_default_site, get_site
        from megarun.suites.run_prepare import prepare_run

        mctx = context(ctx)
        site_info = get_site(mctx, site) if site else ensure_default_site(mctx)
        _settle_defunct(mctx)
        try:
            setup = prepare_run(mctx.db, mctx.area, target, runname, testpatt, site_info)
        except KeyboardInterrupt:  # one transaction: nothing of it was saved
            note(f"run {target}/{runname} interrupted while its jobs were being made: nothing "
                 "was saved; run the same command again", "yellow")
            raise typer.Exit(130) from None
        if detach:
            from megarun.engine.spawn import start_in_background

            args = ["run", "--target", target, "--runname", runname, "--site", site_info.name,
                    *(["--testpatt", testpatt] if testpatt else []), "--quiet"]
            pid, log = start_in_background(mctx.area, args, "run.log")
            if as_json:
                print_document({**setup_json(setup), "pid": pid, "log": str(log)})
            else:
                say(f"run continues in the background (pid {pid}); log: {log}")
            return
        if not as_json:
            say(f"run {target}/{runname}: {setup.jobs} job(s), {setup.created} new, "
                f"{setup.stale} stale, {setup.skipped} skipped")
        summary = _launch(mctx, site_info.name, setup.run_id, quiet or as_json)
        run_row = run_api.find_run(mctx, target, runname)
        failed = _print_matrix(mctx, run_row, testpatt, as_json, False)
        _say_what_next(mctx, run_row, testpatt, summary)
        _finish(summary, failed)

    @app.command("status")
    def status(ctx: typer.Context, target: TARGET, runname: RUNNAME, testpatt: TESTPATT = None,
               as_json: AS_JSON = False, as_csv: AS_CSV = False,
               full_db: FULL_DB = False, follow: FOLLOW = False, every: EVERY = None) -> None:
        """The run's tests x items with their STATE/STATUS; items roll up to tests and the run."""
        one_format(as_json, as_csv)
        seconds = every_seconds(follow, every, as_csv)
        mctx = context(ctx)
        _settle_defunct(mctx)
        with_archive(mctx, full_db)
        run_row = run_api.find_run(mctx, target, runname)
        if seconds is not None:  # megarun.cli.follow: reads until the run ended
            failed = follow_run(mctx, run_row, testpatt, seconds, as_json,
                                lambda: _print_matrix(mctx, run_row, testpatt, False, False))
            _exit_like_run(mctx, run_row, testpatt, failed)
            return
        failed = _print_matrix(mctx, run_row, testpatt, as_json, as_csv)
        _exit_like_run(mctx, run_row, testpatt, failed)

    @app.command("rerun")
    def rerun(ctx: typer.Context, target: TARGET, runname: RUNNAME, testpatt: TESTPATT = None,
              status: STATUSES = None, clean: CLEAN = False, downstream: DOWNSTREAM = False,
              stale: STALE = False, step: STEP = None, quiet: QUIET = False,
              as_json: AS_JSON = False) -> None:
        """Run chosen jobs of a run again (fresh attempts), then launch them."""
        from megarun.core.states import parse_status
        from megarun.suites.run_control import DEFAULT_RERUN, rerun_jobs, select_for_rerun

        if step is not None and clean:
            raise UsageError("--step keeps the earlier steps' outputs and --clean removes them: "
                             "give one of them")
        mctx = context(ctx)
        run_row = run_api.find_run(mctx, target, runname)
        _check_pattern(mctx, run_row, testpatt)
        statuses = [s.strip() for s in status.split(",") if s.strip()] if status else (
            [] if stale else list(DEFAULT_RERUN))
        for name in statuses:
            try:
                parse_status(name)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        _settle_defunct(mctx)
        from megarun.sites.registry import get_site
        from megarun.suites.run_prepare import prepare_run
        from megarun.suites.run_report import site_of_run

        site = site_of_run(mctx.db, int(run_row.id))
        if site:  # the tests may have been fixed since: jobs take their current definitions
            prepare_run(mctx.db, mctx.area, target, runname, None, get_site(mctx, site),
                        create=False)
        ids = select_for_rerun(mctx.db, int(run_row.id), statuses, stale, downstream, testpatt)
        chosen = ids
        if step is not None:
            chosen = _check_step(mctx, int(run_row.id), statuses, stale, downstream, testpatt,
                                 ids, step)
        rerun_jobs(mctx.db, mctx.area, ids, clean, step, chosen)
        if not as_json:
            say(f"rerunning {len(ids)} job(s) of {target}/{runname}")
        summary = _launch(mctx, site, int(run_row.id), quiet or as_json) if ids and site else None
        failed = _print_matrix(mctx, run_row, testpatt, as_json, False)
        _say_what_next(mctx, run_row, testpatt, summary)
        _finish(summary, failed)

    @app.command("clean")
    def clean(ctx: typer.Context, target: TARGET, runname: RUNNAME, testpatt: TESTPATT = None,
              keep_records: KEEP = False, dry_run: Annotated[bool, typer.Option(
                  "--dry-run", help="List the run paths and job records that would be removed; "
                  "remove nothing.")] = False, as_json: AS_JSON = False) -> None:
        """Remove a run's (or some tests') files and records."""
        from megarun.suites.run_control import clean_run, preview_clean

        mctx = context(ctx)
        run_row = run_api.find_run(mctx, target, runname)
        if dry_run:
            preview = preview_clean(mctx.db, mctx.area, run_row, testpatt, keep_records)
            if as_json:
                print_document(clean_preview_json(preview))
            else:
                _say_preview(preview)
            return
        result = clean_run(mctx.db, mctx.area, run_row, testpatt, keep_records)
        if as_json:
            print_document({"jobs": result.jobs, "paths_removed": result.paths_removed,
                            "records_removed": result.records_removed})
        else:
            say(f"{result.paths_removed} run path(s) removed, "
                f"{result.records_removed} job record(s) removed")

    @app.command("kill")
    def kill(ctx: typer.Context, target: TARGET, runname: RUNNAME, testpatt: TESTPATT = None,
             as_json: AS_JSON = False) -> None:
        """Ask a run's running jobs to stop (KILLREQ, then KILLED); waiting ones end KILLED."""
        from megarun.cli.job_cmd import kill_json
        from megarun.suites.run_control import kill_run

        mctx = context(ctx)
        result = kill_run(mctx.db, mctx.area, run_api.find_run(mctx, target, runname), testpatt)
        if as_json:
            print_document(kill_json(result))
        else:
            say(f"{len(result.killed)} killed, {len(result.requested)} asked to stop")

    @runs_app.command("ls")
    def runs_ls(ctx: typer.Context, target: Annotated[str | None, typer.Option(
                    "--target", help="Only runs of this target (a glob: linux/*).")] = None,
                runname: Annotated[str | None, typer.Option(
                    "--runname", help="Only runs of this name (a glob: nightly-*).")] = None,
                status: Annotated[str | None, typer.Option(
                    "--status", help="Only runs whose roll-up status is this (PASS, FAIL, "
                    "RUNNING, MOVED, ...).")] = None,
                limit: Annotated[int, typer.Option(
                    help="At most this many runs (0: all); stderr says how many more there "
                    "are.", min=0, max=INT64_MAX)] = LIST_LIMIT,
                as_json: AS_JSON = False, as_csv: AS_CSV = False,
                full_db: FULL_DB = False) -> None:
        """Every run of the area, oldest first, with its job count and worst status."""
        one_format(as_json, as_csv)
        mctx = context(ctx)
        with_archive(mctx, full_db)
        rows = Limited(with_status(run_api.run_summaries(mctx, target, runname, _warn), status,
                                   also=(JobState.RUNNING.value, "MOVED")), limit)
        render_listing(rows, ["target", "runname", "jobs", "done", "stale", "status"], as_json,
                       as_csv, empty="no runs yet (megarun run --target T --runname R)")
        rows.note_more()

    @runs_app.command("export")
    def runs_export(ctx: typer.Context, target: TARGET, runname: RUNNAME,
                    fmt: Annotated[str, typer.Option("--format", help="json, csv or junit.")] = "json",
                    testpatt: TESTPATT = None, full_db: FULL_DB = False) -> None:
        """Write a run's results to stdout as JSON, CSV or JUnit XML (Jenkins, GitLab)."""
        mctx = context(ctx)
        with_archive(mctx, full_db)
        run_row = run_api.find_run(mctx, target, runname)
        items = _items(mctx, run_row, testpatt)
        rows = [{"id": i.id, "test": i.test, "item": i.item, "state": i.state,
                 "status": i.status, "exit_code": i.exit_code, "runtime": i.runtime,
                 "message": i.message} for i in items]
        if fmt == "json":
            print_json(rows)
        elif fmt == "csv":
            write_csv(rows, ["id", "test", "item", "state", "status", "exit_code", "runtime",
                             "message"])
        elif fmt == "junit":
            sys.stdout.write(_junit(mctx, run_row, items))
        else:
            raise UsageError(f"unknown format {fmt!r}; choose json, csv or junit")

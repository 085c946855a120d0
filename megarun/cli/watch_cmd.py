"""`megarun watch`: follow a campaign of jobs (by tag, site, app) until none is active.

The jobs are those `job ls` selects with the same options; they are counted by state, and by
site and app, in one aggregate query a second (megarun.campaign.query.count_by_place). The exit
code says how the campaign ended: 0 when every job is COMPLETED with no failing status, 1
otherwise, 2 when no job matches. See megarun.cli.follow for how following works.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer

from megarun.campaign.query import JobFilter, PlaceCount, count_by_place
from megarun.cli.common import JSON_HELP, context, parse_pairs
from megarun.cli.follow import (
    EVERY,
    LEAVE_HINT,
    FeedWatch,
    Follow,
    Update,
    every_option,
    follow,
    with_feed,
)
from megarun.cli.output import STATE_STYLES, rich_console
from megarun.core.rollup import UNFINISHED_STATES, count_items, headline, rollup_status
from megarun.core.states import ENDED_STATES, FAILING_STATUSES, JobState, JobStatus
from megarun.errors import NotFoundError, WorkFailed

if TYPE_CHECKING:
    from rich.console import RenderableType

#: The states in the order the board and the lines show them: furthest along first.
STATE_ORDER = tuple(s.value for s in (*UNFINISHED_STATES, *sorted(ENDED_STATES,
                                                                     key=list(JobState).index)))
_UNFINISHED = frozenset(s.value for s in UNFINISHED_STATES)
_FAILING = frozenset(s.value for s in FAILING_STATUSES)
_COMPLETED = JobState.COMPLETED.value
#: The site of a job not matched to one yet, in the board and the JSON maps.
NO_SITE = "-"


def watch_update(counts: list[PlaceCount], what: str) -> Update:
    """The campaign's counts as a line, a JSON document and a board key."""
    states: Counter[str] = Counter()
    sites: dict[str, Counter[str]] = {}
    apps: dict[str, Counter[str]] = {}
    for row in counts:
        states[row["state"]] += row["count"]
        sites.setdefault(row["site"] or NO_SITE, Counter())[row["state"]] += row["count"]
        apps.setdefault(row["app"], Counter())[row["state"]] += row["count"]
    jobs = sum(states.values())
    active = sum(n for state, n in states.items() if state in _UNFINISHED)
    failed = sum(row["count"] for row in counts if row["status"] in _FAILING)
    rolled = count_items((JobState(r["state"]), JobStatus(r["status"]), r["count"])
                         for r in counts)
    last = not active
    line = f"{what}: {jobs} job(s), {active or 'none'} active; {headline(rolled)}"
    data = {"jobs": jobs, "active": active, "failed": failed,
            "completed": states.get(_COMPLETED, 0), "status": rollup_status(rolled),
            "counts": rolled, "states": _ordered(states),
            "sites": {name: _ordered(c) for name, c in sorted(sites.items())},
            "apps": {name: _ordered(c) for name, c in sorted(apps.items())}, "last": last}
    key = tuple(sorted((r["site"] or NO_SITE, r["app"], r["state"], r["status"], r["count"])
                       for r in counts))
    return Update(last, line, data, key)


def _ordered(counts: Counter[str]) -> dict[str, int]:
    return {state: counts[state] for state in STATE_ORDER if counts.get(state)}


def board(update: Update) -> RenderableType:
    """The live board: the update's line, then its table."""
    from rich.console import Group
    from rich.text import Text

    return Group(Text(update.line, style="bold"), table(update), Text(LEAVE_HINT, style="dim"))


def table(update: Update) -> RenderableType:
    """A table of counts by state: every job, then by site and by app."""
    from rich.table import Table
    from rich.text import Text

    data = update.data
    shown = [state for state in STATE_ORDER if state in data["states"]]
    grid = Table(box=None, padding=(0, 1), show_edge=False)
    grid.add_column("")
    for state in shown:
        grid.add_column(state, justify="right", style=STATE_STYLES.get(state, ""))
    grid.add_column("failed", justify="right", style="red")
    grid.add_row(Text("all", style="bold"), *(str(data["states"][s]) for s in shown),
                 str(data["failed"]))
    for kind in ("sites", "apps"):
        for name, counts in data[kind].items():
            grid.add_row(f"{kind[:-1]} {name}", *(str(counts.get(s, "")) for s in shown), "")
    return grid


def _what(flt: JobFilter) -> str:
    """The selection in words, as the lines and messages name it."""
    parts = [f"--tag {k}={v}" for k, v in flt.tags.items()]
    parts += [f"--site {flt.site}"] if flt.site else []
    parts += [f"--app {flt.app}"] if flt.app else []
    return "jobs " + " ".join(parts) if parts else "every job"


def register(app: typer.Typer) -> None:
    @app.command("watch")
    def watch(
        ctx: typer.Context,
        tag: Annotated[list[str] | None, typer.Option(
            "--tag", "-t", help="Tag key=value (repeatable; all must match).",
            metavar="KEY=VALUE")] = None,
        site: Annotated[str | None, typer.Option(help="Only jobs of this site.")] = None,
        app_name: Annotated[str | None, typer.Option("--app", help="Only jobs of this app.")] = None,
        every: EVERY = None,
        as_json: Annotated[bool, typer.Option(
            "--json", help=JSON_HELP + " One document a line, a line per update.")] = False,
    ) -> None:
        """Follow a campaign of jobs until none is active; exit 0 when all ended COMPLETED
        with no failing status."""
        flt = JobFilter(tags=parse_pairs(tag, "--tag"), site=site, app=app_name)
        seconds = every_option(every)
        mctx = context(ctx)
        what = _what(flt)

        feeds = FeedWatch(mctx, what)

        def read() -> Update:
            mctx.reread_mirror()
            update = watch_update(count_by_place(mctx.db, mctx.area, flt), what)
            return with_feed(update, None if update.last else feeds())

        first = read()
        if not first.data["jobs"]:
            raise NotFoundError(f"no job matches: {what}")
        last, on_terminal = follow(read, Follow(what, seconds, as_json, board))
        if on_terminal:  # the live board is gone: what it showed last stays
            rich_console().print(last.line)
            rich_console().print(table(last))
        data = last.data
        if data["failed"] or data["completed"] != data["jobs"]:
            raise WorkFailed(f"{what}: {data['failed']} failed, "
                             f"{data['jobs'] - data['completed']} not COMPLETED")

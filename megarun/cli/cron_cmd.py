"""`megarun cron show|install|rm`: run `megarun sync` for this area from the user's crontab."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.common import JSON_HELP, context, duration_option
from megarun.cli.formats import print_document
from megarun.cli.output import note, say
from megarun.core.quantities import MINUTE
from megarun.errors import UsageError

if TYPE_CHECKING:
    from megarun.homehost.cron import CronChange

app = typer.Typer(help="Run megarun sync from cron for this area.", no_args_is_help=True)

EVERY = Annotated[str, typer.Option("--every", metavar="DURATION",
                                    help="Time between two syncs (default 5m; a bare number "
                                    "is minutes).")]
AS_JSON = Annotated[bool, typer.Option("--json", help=JSON_HELP)]


def _minutes(every: str) -> int:
    """Whole minutes (cron counts nothing finer); `schedule` checks they divide an hour or day."""
    minutes = (duration_option(every, "--every", MINUTE) or 0) / MINUTE
    if minutes != int(minutes):
        raise UsageError(f"--every {every!r}: cron runs whole minutes (1m, 15m, 2h)")
    return int(minutes)


@app.command("show")
def show(ctx: typer.Context, every: EVERY = "5", as_json: AS_JSON = False) -> None:
    """Print the crontab lines that sync this area every few minutes."""
    from megarun.homehost.cron import cron_lines

    lines = cron_lines(context(ctx).area, _minutes(every))
    if as_json:
        print_document({"lines": lines})
    else:
        say("\n".join(lines))


@app.command("install")
def install(ctx: typer.Context, every: EVERY = "5", as_json: AS_JSON = False) -> None:
    """Add this area's sync lines to your crontab (replacing the ones there); without a crontab
    command, print them to add by hand (exit 3)."""
    from megarun.homehost.cron import CronChange, CrontabMissing, cron_lines
    from megarun.homehost.cron import install as install_block

    area, minutes = context(ctx).area, _minutes(every)
    try:
        change = install_block(area, minutes)
    except CrontabMissing:
        lines = cron_lines(area, minutes)  # for the user to add by hand
        if as_json:
            print_document(change_json(CronChange(lines, False, "")))
        else:
            say("\n".join(lines))
        raise
    if as_json:
        print_document(change_json(change))
        return
    say("\n".join(change.lines))
    note("crontab updated" if change.changed else "crontab already has these lines")


@app.command("rm")
def remove(ctx: typer.Context, as_json: AS_JSON = False) -> None:
    """Take this area's sync lines out of your crontab."""
    from megarun.homehost.cron import remove as remove_block

    change = remove_block(context(ctx).area)
    if as_json:
        print_document(change_json(change))
    else:
        note("removed this area's lines from the crontab" if change.changed
             else "the crontab has no lines for this area")


def change_json(change: "CronChange") -> dict[str, Any]:
    """`cron install|rm --json`."""
    return {"lines": change.lines, "changed": change.changed, "crontab": change.crontab}

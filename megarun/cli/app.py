"""The Typer application: global options, command groups, and the one place errors become
exit codes and one-line messages."""

import sqlite3
import sys
from typing import Annotated

import click
import typer
from peewee import DatabaseError

from megarun import __version__
from megarun.cli import (
    app_cmd,
    archive_cmd,
    area_cmd,
    cron_cmd,
    db_cmd,
    homehost_cmd,
    job_cmd,
    launch_cmd,
    migrate_cmd,
    queue_cmd,
    run_cmd,
    site_cmd,
    sync_cmd,
)
from megarun.db.connection import from_outside, translate_operational_error
from megarun.errors import MegarunError, UsageError
from megarun.homehost.context import Context

app = typer.Typer(
    name="megarun",
    help="Run test suites and job campaigns on any machine you can SSH to.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"megarun {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    area: Annotated[str | None, typer.Option(
        "--area", help="The area to use (default: $MEGARUN_AREA, else found from the cwd).",
        metavar="PATH")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Say which database is read (the mirror, and how old it is) "
        "and where a command is forwarded.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", "-V", help="Print the version and exit.", callback=_version,
        is_eager=True)] = False,
) -> None:
    """megarun: regression runs and job campaigns on local, SSH and batch-scheduled sites."""
    ctx.obj = Context(area_override=area, on_mirror=_mirror_note if verbose else None)
    ctx.call_on_close(ctx.obj.close)


def _mirror_note(host: str, age: float | None) -> None:
    from megarun.core.quantities import format_age

    when = f"written {format_age(age)} ago" if age is not None else "age unknown"
    print(f"megarun: reading the mirror of {host}'s working database, {when}", file=sys.stderr)


area_cmd.register(app)
app.add_typer(site_cmd.app, name="site")
app.add_typer(app_cmd.app, name="app")
app.add_typer(job_cmd.app, name="job")
app.add_typer(queue_cmd.app, name="queue")
app.add_typer(homehost_cmd.app, name="homehost")
app.add_typer(archive_cmd.app, name="archive")
launch_cmd.register(app)
run_cmd.register(app)
sync_cmd.register(app)
migrate_cmd.register(app)
app.add_typer(cron_cmd.app, name="cron")
app.add_typer(db_cmd.app, name="db")


def run(args: list[str]) -> int:
    """Invoke the CLI; convert every known failure into a message and an exit code."""
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        forwarded = _forward_if_elsewhere(command, args)
        if forwarded is not None:
            return forwarded
        result = command.main(args=args, prog_name="megarun", standalone_mode=False)
    except MegarunError as exc:
        return _fail(exc, exc.exit_code, debug)
    except (DatabaseError, sqlite3.DatabaseError) as exc:  # OperationalError included
        if not from_outside(exc):  # a constraint megarun broke: a bug, reported as one
            if debug:
                raise
            return _internal_error(exc)
        translated = translate_operational_error(exc)
        return _fail(translated, translated.exit_code, debug)
    except click.exceptions.Abort:
        print("megarun: interrupted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("megarun: interrupted", file=sys.stderr)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    except OSError as exc:
        return _fail(exc, 3, debug)
    except (RecursionError, OverflowError, UnicodeError, ValueError) as exc:
        # Last defence: readers validate their input and name the field; what slips past them
        # is still bad input (too deep, too large, not UTF-8), never an internal error.
        return _fail(UsageError(f"bad input: {type(exc).__name__}: {exc}"), 2, debug)
    except Exception as exc:
        if debug:
            raise
        return _internal_error(exc)
    return result if isinstance(result, int) else 0


def _internal_error(exc: Exception) -> int:
    print(f"megarun: internal error: {type(exc).__name__}: {exc} (run with --debug for "
          "details, and please report it)", file=sys.stderr)
    return 70


def _forward_if_elsewhere(command: click.Command, args: list[str]) -> int | None:
    """Run a command that writes on the area's home host when that is another host; None
    when it runs here (this is the home, the command only reads, or there is no area)."""
    from megarun.cli.routing import needs_home, parse_invocation
    from megarun.config.area import locate_area
    from megarun.homehost import home as homehost

    if not isinstance(command, click.Group) or {"--help", "--version", "-V"} & set(args):
        return None
    invocation = parse_invocation(command, args)
    if not needs_home(invocation.words):
        return None
    try:
        home = homehost.read_homehost(locate_area(invocation.area))
    except MegarunError:
        return None  # no area here: the command reports that itself
    if home is None or home.host == homehost.this_host():
        return None
    from megarun.homehost.forward import forward

    if "--verbose" in args or "-v" in args:
        print(f"megarun: forwarding to the home host {home.host} ({home.address})",
              file=sys.stderr)
    return forward(home, invocation.forwarded)


def _fail(exc: BaseException, code: int, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exception(exc)
    message = str(exc) if not isinstance(exc, OSError) else _os_message(exc)
    print(f"megarun: error: {_one_line(message)}", file=sys.stderr)
    return code


def _one_line(message: str) -> str:
    """The message on one line, with what the terminal cannot show (NUL, bytes that were not
    UTF-8, control characters) escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)


def _os_message(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"

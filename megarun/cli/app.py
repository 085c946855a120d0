"""The Typer application: global options, command groups, and the one place errors become
exit codes and one-line messages.

Commands load lazily (megarun.cli.commands): `megarun --help` and shell completion import
typer and click only.
"""

import sys
import traceback

import click
import typer
import typer.core

from megarun.cli.commands import LazyGroup, add_global_options
from megarun.cli.routing import needs_home, parse_invocation
from megarun.errors import MegarunError, UsageError

# Typer (< 0.20) escapes "[required]" and "[default: ...]" for rich whenever rich is installed,
# even with rich markup off: plain help pages then showed "\\[required]".
typer.core.HAS_RICH = False

app = typer.Typer(
    name="megarun",
    cls=LazyGroup,
    help="Run test suites and job campaigns on any machine you can SSH to.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def root() -> None:
    """megarun: regression runs and job campaigns on local, SSH and batch-scheduled sites."""


def root_command() -> LazyGroup:
    """The click group of `megarun`, with the global options and shell completion."""
    command = typer.main.get_command(app)
    assert isinstance(command, LazyGroup)
    add_global_options(command)
    return command


def run(args: list[str]) -> int:
    """Invoke the CLI; convert every known failure into a message and an exit code."""
    debug = "--debug" in args
    command = root_command()
    try:
        forwarded = _forward_if_elsewhere(command, args)
        if forwarded is not None:
            return forwarded
        result = command.main(args=args, prog_name="megarun", standalone_mode=False)
    except MegarunError as exc:
        return _fail(exc, exc.exit_code, debug)
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
        # Loaded only here: a database error means the database layer is loaded already.
        from megarun.homehost.context import database_failure

        translated = database_failure(exc)  # None: a constraint megarun broke, a bug
        if translated is not None:
            return _fail(translated, translated.exit_code, debug)
        if debug:
            raise
        return _internal_error(exc)
    return result if isinstance(result, int) else 0


def _internal_error(exc: Exception) -> int:
    print(f"megarun: internal error: {type(exc).__name__}: {exc} (run with --debug for "
          "details, and please report it)", file=sys.stderr)
    return 70


def _forward_if_elsewhere(command: click.Group, args: list[str]) -> int | None:
    """Run a command that writes on the area's home host when that is another host; None
    when it runs here (this is the home, the command only reads, or there is no area)."""
    if {"--help", "--version", "-V"} & set(args):
        return None
    invocation = parse_invocation(command, args)
    if not needs_home(invocation.words):
        return None
    # Loaded only here: reading the home host needs the database layer, which --help skips.
    from megarun.cli.failures import forward_if_elsewhere

    return forward_if_elsewhere(invocation, "--verbose" in args or "-v" in args)


def _fail(exc: BaseException, code: int, debug: bool) -> int:
    if debug:
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
    # an OSError subclass may say nothing at all (the shell detection of --show-completion)
    return f"{exc.strerror or str(exc) or type(exc).__name__}{where}"

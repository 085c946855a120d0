"""The command table: which module each top-level command lives in, loaded only when chosen.

`megarun --help` and shell completion of command names read this table alone, so they never
import the database layer, paramiko or rich; a command's module (and what it needs) loads when
that command runs. The global options (--area, --debug, -v, -V) are attached here to every
command and group, so they are accepted before and after the subcommand alike.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
import typer
from typer.core import TyperGroup

from megarun import __version__


@dataclass(frozen=True)
class Entry:
    """Where a command is defined, and its one-line help for `megarun --help`."""

    module: str  # under megarun.cli
    help: str  # the first paragraph of the command's help (tests check it matches)
    group: bool = False  # the module's `app` is this group; else its register(app) adds it


COMMANDS: dict[str, Entry] = {
    "init": Entry("area_cmd", "Make a new area: megarun.toml, tests/, apps/ and .megarun/."),
    "demo": Entry("area_cmd", "Make a throwaway area with sample apps and jobs, run them "
                  "locally, show a summary."),
    "launch": Entry("launch_cmd", "Run READY jobs until none is left; Ctrl-C kills running "
                    "jobs and stops cleanly."),
    "run": Entry("run_cmd", "Expand tests x items into jobs for a target and run them; running "
                 "it again continues."),
    "status": Entry("run_cmd", "The run's tests x items with their STATE/STATUS; items roll up "
                    "to tests and the run."),
    "watch": Entry("watch_cmd", "Follow a campaign of jobs until none is active; exit 0 when "
                   "all ended COMPLETED with no failing status."),
    "rerun": Entry("run_cmd", "Run chosen jobs of a run again (fresh attempts), then launch "
                   "them."),
    "clean": Entry("run_cmd", "Remove a run's (or some tests') files and records."),
    "kill": Entry("run_cmd", "Ask a run's running jobs to stop (KILLREQ, then KILLED); "
                  "waiting ones end KILLED."),
    "sync": Entry("sync_cmd", "Take in every site's events, settle defunct jobs, feed the "
                  "sites (one cycle; cron-safe)."),
    "report": Entry("report_cmd", "Write the area's HTML report: runs, items, history, "
                    "campaign and batch views."),
    "migrate": Entry("migrate_cmd", "Copy finished runs into another area and mark them MOVED "
                     "here (files stay put)."),
    "site": Entry("site_cmd", "Sites: where jobs run.", group=True),
    "app": Entry("app_cmd", "Apps: named command templates jobs are made from.", group=True),
    "job": Entry("job_cmd", "Jobs: single executions of an app.", group=True),
    "queue": Entry("queue_cmd", "Batch jobs: scheduler allocations (pilot or direct).",
                   group=True),
    "homehost": Entry("homehost_cmd", "The home host: the one host that writes the working "
                      "database.", group=True),
    "archive": Entry("archive_cmd", "The completed-runs archive: finished runs out of the "
                     "working database and back.", group=True),
    "runs": Entry("run_cmd", "List and export test-suite runs."),
    "cron": Entry("cron_cmd", "Run megarun sync from cron for this area.", group=True),
    "db": Entry("db_cmd", "The area's database files: check them, restore the working "
                "database from the mirror.", group=True),
}


@dataclass
class GlobalOptions:
    """The global options as given, wherever on the command line they were."""

    area: str | None = None
    debug: bool = False
    verbose: bool = False


def global_options(ctx: click.Context) -> GlobalOptions:
    """The root's GlobalOptions, made on first use."""
    meta = ctx.find_root().meta
    options = meta.setdefault("megarun.global_options", GlobalOptions())
    assert isinstance(options, GlobalOptions)
    return options


def _set_area(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        global_options(ctx).area = value


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        global_options(ctx).debug = True


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        global_options(ctx).verbose = True


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"megarun {__version__}")
        ctx.exit()


class GlobalOption(click.Option):
    """An option every command accepts (docs/cli.md documents these once, not per command)."""


def _global_params() -> list[click.Parameter]:
    return [
        GlobalOption(["--area"], metavar="PATH", expose_value=False, callback=_set_area,
                     help="The area to use (default: $MEGARUN_AREA, else found from the cwd)."),
        GlobalOption(["--debug"], is_flag=True, expose_value=False, callback=_set_debug,
                     help="Show tracebacks of errors."),
        GlobalOption(["--verbose", "-v"], is_flag=True, expose_value=False,
                     callback=_set_verbose, help="Say which database is read (the mirror, and "
                     "how old it is) and where a command is forwarded."),
        GlobalOption(["--version", "-V"], is_flag=True, expose_value=False, is_eager=True,
                     callback=_print_version, help="Print the version and exit."),
    ]


def add_global_options(command: click.Command) -> None:
    """Give `command` and everything under it the global options, before --help."""
    if not any(isinstance(param, GlobalOption) for param in command.params):
        at = next((i for i, p in enumerate(command.params)
                   if isinstance(p, click.Option) and "--help" in p.opts), len(command.params))
        command.params[at:at] = _global_params()
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub)


#: Commands already loaded in this process (click commands are reusable: a test runs many).
_LOADED: dict[str, click.Command] = {}


def load(name: str) -> click.Command:
    """The click command `name` of the table, its module imported on first use."""
    if name not in _LOADED:
        entry = COMMANDS[name]
        module: Any = importlib.import_module(f"megarun.cli.{entry.module}")
        holder = typer.Typer(add_completion=False, rich_markup_mode=None)
        if entry.group:
            holder.add_typer(module.app, name=name)
        else:
            register: Callable[[typer.Typer], None] = module.register
            register(holder)
        # The sibling commands of the module are kept too: loading them again costs nothing.
        for sibling, command in typer.main.get_group(holder).commands.items():
            add_global_options(command)
            _LOADED.setdefault(sibling, command)
    return _LOADED[name]


class LazyGroup(TyperGroup):
    """The root group: lists the table's commands; imports a command's module when chosen."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        command = load(cmd_name)
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table: no command module is imported for it."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, click.utils.make_default_short_help(entry.help, limit))
                for name, entry in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def load_all(self) -> click.Group:
        """Every command loaded (for tests and tools that walk the whole tree)."""
        for name in COMMANDS:
            self.get_command(click.Context(self), name)
        return self

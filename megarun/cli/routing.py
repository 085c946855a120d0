"""Where a command runs: here, or on the area's home host.

On the home host (or in an area with no home host yet) every command runs here. On another
host, commands that only read run here on the mirror; every other command is forwarded to the
home host over SSH and its output shown as if it ran here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import click

#: Commands that only read: on another host they run here, on the mirror.
READ_COMMANDS = frozenset({
    ("site", "presets"), ("site", "ls"), ("site", "show"),
    ("app", "ls"), ("app", "show"),
    ("job", "ls"), ("job", "show"), ("job", "logs"),
    ("queue", "ls"), ("queue", "backlog"), ("status",), ("runs", "ls"), ("runs", "export"),
    ("homehost", "show"), ("archive", "ls"), ("cron", "show"), ("db", "check"),
    ("watch",),
})
#: Commands that always run here: no area database, or the hand-over itself.
LOCAL_COMMANDS = frozenset({
    ("init",), ("demo",), ("homehost", "migrate"), ("homehost", "release"),
})
#: Global options that are this host's business, not the forwarded command's.
HOST_OPTIONS = frozenset({"--area"})


@dataclass(frozen=True)
class Invocation:
    """A command line split for routing."""

    words: tuple[str, ...]  # the command path, e.g. ("job", "ls")
    area: str | None  # the global --area, if given (before or after the subcommand)
    forwarded: list[str]  # the arguments without --area: what the home host runs


def parse_invocation(root: click.Group, args: Sequence[str]) -> Invocation:
    """Find the command path and --area (before or after the subcommand) in `args` without
    running anything."""
    words: list[str] = []
    area: str | None = None
    forwarded: list[str] = []
    current: click.Command = root
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            break
        if arg.startswith("-") and arg != "-":
            name, has_value, value = arg.partition("=")
            width = 2 if _takes_value(current, name) and not has_value else 1
            if name in HOST_OPTIONS:
                area = value if has_value else _at(args, index + 1)
            else:
                forwarded.extend(args[index:index + width])
            index += width
            continue
        sub = _subcommand(current, arg)
        if sub is None:
            if isinstance(current, click.Group):
                break  # an unknown command: click says so
            forwarded.append(arg)  # an argument of the command
            index += 1
            continue
        words.append(arg)
        forwarded.append(arg)
        current = sub
        index += 1
    forwarded.extend(args[index:])
    return Invocation(tuple(words), area, forwarded)


def _subcommand(command: click.Command, name: str) -> click.Command | None:
    if not isinstance(command, click.Group):
        return None
    return command.get_command(click.Context(command), name)


def _takes_value(command: click.Command, name: str) -> bool:
    for param in command.params:
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return not param.is_flag and not param.count
    return False


def _at(args: Sequence[str], index: int) -> str | None:
    return args[index] if index < len(args) else None


def needs_home(words: tuple[str, ...]) -> bool:
    """Whether a command must run on the home host (it writes, or may)."""
    return bool(words) and words not in READ_COMMANDS and words not in LOCAL_COMMANDS

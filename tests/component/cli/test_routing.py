"""Which commands run here and which go to the home host."""

from __future__ import annotations

import click
import pytest

from megarun.cli.app import root_command
from megarun.cli.routing import (
    LOCAL_COMMANDS,
    READ_COMMANDS,
    needs_home,
    parse_invocation,
)

ROOT = root_command().load_all()


@pytest.mark.parametrize(("args", "words", "area", "forwarded"), [
    (["job", "ls", "--json"], ("job", "ls"), None, ["job", "ls", "--json"]),
    (["--area", "/a", "-v", "job", "create", "--app", "x"], ("job", "create"), "/a",
     ["-v", "job", "create", "--app", "x"]),
    (["--area=/a", "status", "--target", "t"], ("status",), "/a",
     ["status", "--target", "t"]),
    (["--debug", "runs", "ls"], ("runs", "ls"), None, ["--debug", "runs", "ls"]),
    (["job", "create", "--app", "job"], ("job", "create"), None,
     ["job", "create", "--app", "job"]),
    (["nosuch", "x"], (), None, ["nosuch", "x"]),
    (["job", "create", "--", "--area", "/x"], ("job", "create"), None,
     ["job", "create", "--", "--area", "/x"]),
])
def test_parse_invocation(args: list[str], words: tuple[str, ...], area: str | None,
                          forwarded: list[str]) -> None:
    parsed = parse_invocation(ROOT, args)
    assert (parsed.words, parsed.area, parsed.forwarded) == (words, area, forwarded)


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= _paths(command, (*prefix, name))
        else:
            found.add((*prefix, name))
    return found


def test_every_listed_command_exists() -> None:
    assert (READ_COMMANDS | LOCAL_COMMANDS) <= _paths(ROOT)


@pytest.mark.parametrize("words", [("job", "create"), ("run",), ("sync",), ("launch",),
                                   ("queue", "submit"), ("homehost", "set-address"),
                                   ("site", "add")])
def test_writes_go_home(words: tuple[str, ...]) -> None:
    assert needs_home(words)


@pytest.mark.parametrize("words", [("job", "ls"), ("status",), ("init",), ("homehost", "migrate"),
                                   ()])
def test_reads_and_local_commands_stay(words: tuple[str, ...]) -> None:
    assert not needs_home(words)

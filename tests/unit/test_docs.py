"""Every command has help text and is documented in docs/cli.md, with every option."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from megarun.cli.app import root_command
from megarun.cli.commands import GlobalOption

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, click.Command]]:
    found = []
    if path:
        found.append((" ".join(path), command))
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found.extend(walk(sub, (*path, name)))
    return found


COMMANDS = walk(root_command().load_all())


def test_there_are_commands() -> None:
    names = {name for name, _ in COMMANDS}
    assert {"demo", "init", "launch", "job create", "job ls", "site add", "app sync"} <= names


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_command_has_help_and_docs(name: str, command: click.Command) -> None:
    assert (command.help or "").strip(), f"megarun {name} has no help text"
    text = DOCS.read_text()
    assert f"`megarun {name}" in text, f"docs/cli.md does not document `megarun {name}`"
    section = text.split(f"`megarun {name}", 1)[1].split("\n## ", 1)[0]
    for param in command.params:
        if isinstance(param, GlobalOption):  # documented once, under "Global options"
            continue
        if isinstance(param, click.Option) and not param.hidden and "--help" not in param.opts:
            assert any(f"`{opt}" in section for opt in param.opts), (
                f"docs/cli.md: `megarun {name}` does not mention {param.opts[0]}")
            assert (param.help or "").strip(), f"megarun {name} {param.opts[0]} has no help"

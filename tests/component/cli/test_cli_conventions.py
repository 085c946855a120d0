"""The CLI's conventions: clean help pages, shell completion, global options anywhere, and a
`megarun --help` that loads no command module."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from megarun.cli.app import root_command
from megarun.cli.commands import COMMANDS
from megarun.cli.entry import main
from megarun.cli.routing import parse_invocation
from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found.extend(_paths(sub, (*path, name)))
    return found


PATHS = _paths(root_command().load_all())


def test_every_help_page_shows_brackets_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    pages = []
    for path in PATHS:
        capsys.readouterr()
        assert main([*path, "--help"]) == 0, path
        pages.append(capsys.readouterr().out)
    assert len(pages) > 40
    for path, page in zip(PATHS, pages, strict=True):
        assert "\\[" not in page, f"megarun {' '.join(path)} --help prints a backslash-bracket"
    assert sum("[required]" in page for page in pages) > 10
    assert any("[default: " in page for page in pages)


def test_the_command_table_matches_the_commands() -> None:
    """`megarun --help` reads its command list from the table: it must say what they say."""
    root = root_command().load_all()
    assert list(root.commands) == list(COMMANDS)
    for name, entry in COMMANDS.items():
        real = root.commands[name].get_short_help_str(1000)
        assert click.utils.make_default_short_help(entry.help, 1000) == real, (
            f"update COMMANDS[{name!r}] in megarun/cli/commands.py")


def test_help_loads_no_command_module() -> None:
    code = ("import sys; from megarun.cli.entry import main; assert main(['--help']) == 0; "
            "heavy = [m for m in ('peewee', 'paramiko', 'rich', 'jinja2', 'megarun.db') "
            "if m in sys.modules]; assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=ENV, check=False)
    assert done.returncode == 0, done.stderr
    assert "Commands:" in done.stdout and "homehost" in done.stdout


def _complete(words: str, cword: int) -> list[str]:
    env = {**ENV, "_MEGARUN_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(cword)}
    done = subprocess.run([sys.executable, "-m", "megarun"], capture_output=True, text=True,
                          env=env, check=True)
    return done.stdout.split()


def test_shell_completion() -> None:
    # From a bash, as a user asks for it: the shell is told by the process tree (a run of the
    # tests with no shell among its parents would not tell it).
    script = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -m megarun "
                             "--show-completion"],
                            capture_output=True, text=True, env=ENV, check=True).stdout
    assert "_MEGARUN_COMPLETE" in script and "complete " in script
    assert _complete("megarun jo", 1) == ["job"]
    assert _complete("megarun job l", 2) == ["ls", "logs"]
    assert _complete("megarun job ls --sta", 3) == ["--state", "--status"]


@pytest.mark.parametrize("before", [True, False])
def test_global_options_before_and_after_the_subcommand(
        area: Path, tmp_path: Path, before: bool, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no area here: only --area finds it

    def cli(words: list[str], options: list[str], rest: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*options, *words, *rest] if before else [*words, *rest, *options])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = cli(["job", "ls"], ["--area", str(area), "-v", "--debug"], ["--json"])
    assert (code, out.strip()) == (0, "[]")
    code, _, err = cli(["job", "show"], ["--area", str(area), "--debug", "--verbose"], ["999"])
    assert code == 2 and "Traceback (most recent call last)" in err and "999" in err
    code, out, _ = cli(["job", "ls"], ["-V"], [])
    assert code == 0 and out.startswith("megarun ")


def test_area_after_the_subcommand_is_this_hosts() -> None:
    """--area after the subcommand names the area here; a forwarded command does not carry it."""
    parsed = parse_invocation(root_command(), ["job", "create", "--app", "x", "--area", "/a",
                                               "-t", "--area"])
    assert parsed.words == ("job", "create") and parsed.area == "/a"
    assert parsed.forwarded == ["job", "create", "--app", "x", "-t", "--area"]


REPRS = ("True", "False", "None", "{'", "['", "[]", "{}")


@pytest.mark.parametrize("args", [("site", "show", "box"), ("site", "check", "box"), ("sync",)])
def test_human_output_prints_no_python_reprs(cli: Any, args: tuple[str, ...]) -> None:
    assert cli("site", "add", "box", "--preset", "local", "--set", "pilot.exclusive=true").code == 0
    result = cli(*args)
    assert result.code == 0, result.err
    found = [r for r in REPRS if r in result.out]
    assert not found, f"megarun {' '.join(args)} printed {found}:\n{result.out}"
    assert "yes" in result.out


def test_site_show_prints_nested_settings_as_dotted_keys(cli: Any) -> None:
    assert cli("site", "add", "box", "--preset", "local", "--set", "node.cpus=3").code == 0
    lines = cli("site", "show", "box").out.splitlines()
    assert any(line.split() == ["settings.node.cpus", "3"] for line in lines), lines



def test_an_os_error_that_says_nothing_is_still_named(capsys: pytest.CaptureFixture[str]) -> None:
    """An OSError subclass may carry no text (the shell detection of --show-completion run
    with no shell among its parents): the one line names it rather than ending in nothing."""
    from megarun.cli.app import _fail

    class ShellDetectionFailure(OSError):
        pass

    assert _fail(ShellDetectionFailure(), 3, debug=False) == 3
    assert capsys.readouterr().err == "megarun: error: ShellDetectionFailure\n"

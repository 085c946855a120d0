"""Duration options speak the one grammar (docs/cli.md, "Durations and sizes"), each keeping
what a bare number always meant, and a bad value is one line naming the option (exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def echo(cli: Any) -> Any:
    assert cli("app", "add", "echo", "--command", "echo hi").code == 0
    return cli


@pytest.mark.parametrize(("given", "minutes"), [("1h30", 90), ("1h30m", 90), ("90s", 1.5),
                                               ("45", 45), ("2.5", 2.5)])
def test_job_walltime_takes_a_duration_and_bare_minutes(echo: Any, given: str,
                                                        minutes: float) -> None:
    created = echo("job", "create", "--app", "echo", "--walltime", given, "--json")
    assert created.code == 0, created.err
    [job] = echo("job", "ls", "--json").json()
    assert echo("job", "show", str(job["id"]), "--json").json()["walltime"] == minutes


@pytest.mark.parametrize(("args", "message"), [
    (("job", "create", "--app", "echo", "--walltime", "soon"),
     "--walltime 'soon': expected a duration such as 90s, 10m, 1h30m or 2d (at most a year; a "
     "bare number is minutes)"),
    (("archive", "reduce", "--older-than", "3y"),
     "--older-than '3y': expected a duration such as 90s, 10m, 1h30m or 2d (at most a century; a "
     "bare number is days)"),
    (("sync", "--loop", "1m1h"), "--loop '1m1h': expected a duration"),
    (("migrate", "--destination", "/nowhere", "--older-than", "x"), "--older-than 'x'"),
])
def test_a_bad_duration_is_one_line(echo: Any, args: tuple[str, ...], message: str) -> None:
    result = echo(*args)
    assert result.code == 2, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.err
    assert echo("job", "ls", "--json").json() == []


def test_older_than_takes_composite_durations(cli: Any, area: Path) -> None:
    for given in ("1d12h", "1d12", "36h", "1.5"):
        result = cli("archive", "reduce", "--older-than", given, "--dry-run", "--json")
        assert result.code == 0, result.err

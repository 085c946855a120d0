"""`queue submit` refuses bad requests with one clear line (exit 2) and submits nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def polaris(cli: Any, area: Path) -> Any:
    """A PBS site from the polaris preset (queues with limits, an account required)."""
    added = cli("site", "add", "pol", "--preset", "polaris", "--set", "account=")
    assert added.code == 0, added.err
    return cli


@pytest.mark.parametrize(("args", "message"), [
    (["--mode", "sideways", "--nodes", "1", "--walltime", "5"], "use pilot or direct"),
    (["--walltime", "5"], "a pilot needs --nodes and --walltime"),
    (["--nodes", "1", "--walltime", "0", "--account", "p"], "--walltime must be positive"),
    (["--nodes", "1", "--walltime", "-3", "--account", "p"], "--walltime '-3': expected a duration"),
    (["--nodes", "1", "--walltime", "2d", "--account", "p", "--queue", "debug"],
     "minutes, asked for 2880"),
    (["--nodes", "1", "--walltime", "5", "--idle-exit", "soon", "--account", "p"],
     "--idle-exit 'soon': expected a duration such as 90s, 10m, 1h30m or 2d (at most a year; a "
     "bare number is seconds)"),
    (["--nodes", "1", "--walltime", "5", "--queue", "debug"], "needs an account"),
    (["--nodes", "1", "--walltime", "5", "--account", "p", "--queue", "prod"],
     "takes at least 10 nodes"),
    (["--nodes", "20", "--walltime", "5h", "--account", "p"],
     "queue 'prod' of site 'pol' allows at most 180 minutes (3 h) for 10-24 nodes, asked for "
     "300 minutes on 20 nodes"),
    (["--nodes", "20", "--walltime", "5", "--account", "p", "--queue", "capacity"],
     "takes at most 4 nodes"),
    (["--nodes", "1", "--walltime", "5", "--account", "p", "--queue", "nope"], "has no queue"),
    (["--nodes", "100000", "--walltime", "5", "--account", "p", "--queue", "debug"],
     "takes at most"),
    (["--nodes", "1", "--walltime", "100000", "--account", "p", "--queue", "debug"],
     "allows at most"),
    (["--nodes", "1", "--walltime", "5", "--account", "p", "--queue", "debug", "--set",
      "A=other"], "pbs.A: megarun sets this directive itself"),
])
def test_bad_requests_are_refused_and_nothing_is_kept(polaris: Any, args: list[str],
                                                      message: str) -> None:
    result = polaris("queue", "submit", "--site", "pol", *args)
    assert result.code == 2, (result.out, result.err)
    assert message in result.err and "Traceback" not in result.err
    assert polaris("queue", "ls", "--history", "--json").json() == []


def test_unknown_site_and_batch_job(cli: Any, area: Path) -> None:
    result = cli("queue", "submit", "--site", "ghost", "--nodes", "1", "--walltime", "5")
    assert result.code == 2 and "ghost" in result.err
    result = cli("queue", "rm", "42")
    assert result.code == 2 and "no batch job 42" in result.err


def test_direct_mode_with_no_ready_job_says_so(polaris: Any) -> None:
    result = polaris("queue", "submit", "--site", "pol", "--mode", "direct", "--account", "p",
                     "--walltime", "5")
    assert result.code == 2 and "no READY job" in result.err
    assert polaris("queue", "ls", "--history", "--json").json() == []

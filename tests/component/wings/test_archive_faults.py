"""kill -9 at every step of `archive reduce` and `archive restore` (the real CLI in a
subprocess, killed through MEGARUN_FAULT): the next command leaves every database file intact
and every run in exactly one of them with all its jobs, events, tags and dependencies."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from bench.archive import populate
from megarun.archive.completed import FAULT_POINTS
from megarun.config.area import locate_area
from megarun.core.faults import FAULT_ENV
from megarun.homehost.home import working_db_path
from tests.component.wings.test_archive import assert_intact, placement
from tests.conftest import megarun_process

OLD = time.time() - 40 * 86400
#: Where each run is once the next command settled a crash at that step: a move whose copy
#: was committed is finished, one without a copy is undone.
SETTLED = {"after-intent": "source", "after-copy": "target", "after-verify": "target",
           "after-delete": "target"}


def _prepared(area: Path) -> list[int]:
    megarun_process(area, "job", "ls")  # creates the working db
    return populate(working_db_path(locate_area(str(area))), 3, 5, OLD, deps_every=2)


def _crash(area: Path, point: str, *args: str) -> None:
    killed = megarun_process(area, "archive", *args, env={FAULT_ENV: point})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)


def test_every_fault_point_is_tested() -> None:
    steps = {p.split(":")[1] for p in FAULT_POINTS}
    assert steps == set(SETTLED)
    assert {p.split(":")[0] for p in FAULT_POINTS} == {"reduce", "restore"}


@pytest.mark.parametrize("point", [p for p in FAULT_POINTS if p.startswith("reduce:")])
@pytest.mark.parametrize("next_command", [("archive", "ls"), ("archive", "reduce",
                                                              "--older-than", "1000d")])
def test_kill_during_reduce(area: Path, point: str, next_command: tuple[str, ...]) -> None:
    ids = _prepared(area)
    before, _ = placement(area)
    _crash(area, point, "reduce", "--older-than", "0")
    after = megarun_process(area, *next_command)
    assert after.returncode == 0, after.stderr
    assert_intact(area)
    runs, where = placement(area)
    assert runs == before
    expected = "work" if SETTLED[point.split(":")[1]] == "source" else "archive"
    assert where.get(expected) == set(ids)
    # and the archive goes on from there
    assert megarun_process(area, "archive", "reduce", "--older-than", "0").returncode == 0
    assert placement(area) == (before, {"work": set(), "archive": set(ids)})


@pytest.mark.parametrize("point", [p for p in FAULT_POINTS if p.startswith("restore:")])
def test_kill_during_restore(area: Path, point: str) -> None:
    ids = _prepared(area)
    before, _ = placement(area)
    assert megarun_process(area, "archive", "reduce", "--older-than", "0").returncode == 0
    _crash(area, point, "restore", "--runname", "r[12]")
    after = megarun_process(area, "archive", "ls", "--json")
    assert after.returncode == 0, after.stderr
    assert_intact(area)
    runs, where = placement(area)
    assert runs == before
    if SETTLED[point.split(":")[1]] == "target":
        assert where == {"work": set(ids[:2]), "archive": {ids[2]}}
    else:
        assert where == {"work": set(), "archive": set(ids)}
    assert megarun_process(area, "archive", "restore").returncode == 0
    assert placement(area) == (before, {"work": set(ids), "archive": set()})


def test_kill_during_recovery_is_recovered_next_time(area: Path) -> None:
    """Recovery finishing a restore dies between deleting the archive's copy and dropping the
    intent: the command after it only has the intent left to drop."""
    ids = _prepared(area)
    before, _ = placement(area)
    assert megarun_process(area, "archive", "reduce", "--older-than", "0").returncode == 0
    _crash(area, "restore:after-copy", "restore")
    _crash(area, "restore:after-delete", "ls")
    last = megarun_process(area, "archive", "ls")
    assert last.returncode == 0 and "restore finished after an interruption" in last.stderr
    assert_intact(area)
    assert placement(area) == (before, {"work": set(ids), "archive": set()})

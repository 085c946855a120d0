"""Following without a terminal: a line at once, then one every --every (the database asked
every second meanwhile), a last line when the work ended; --every checked; a run's counts as
a line and a JSON document."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from megarun.cli.follow import (
    LOOK_SHARE,
    POLL_SECONDS,
    Follow,
    Pace,
    Update,
    every_seconds,
    follow,
    run_update,
)
from megarun.errors import UsageError
from megarun.suites.run_state import RunProgress


class Clock:
    """Time that passes only when the follower waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def script(clock: Clock, ends_at: float) -> tuple[list[float], Pace, Callable[[], Update]]:
    """A reader whose work ends at `ends_at`; the times it was asked at."""
    asked: list[float] = []

    def read() -> Update:
        asked.append(clock.now)
        last = clock.now >= ends_at
        return Update(last, f"at {clock.now:g}" + (" ended" if last else ""),
                      {"at": clock.now, "last": last}, clock.now)

    return asked, Pace(clock=lambda: clock.now, sleep=clock.sleep, now=lambda: 1e9 + clock.now), read


def test_a_line_now_then_every_interval_and_at_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    asked, pace, read = script(clock, ends_at=7.0)
    last, on_terminal = follow(read, Follow("work", every=2.5, pace=pace))
    assert last.last and not on_terminal
    assert asked == [float(t) for t in range(8)]  # the database: once a second
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["at 0", "at 3", "at 6", "at 7 ended"]
    assert lines[0].startswith("2001-09-09T01:46:40Z ")  # the wall clock of each line


def test_every_below_a_second_polls_that_often(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    asked, pace, read = script(clock, ends_at=1.0)
    follow(read, Follow("work", every=0.25, as_json=True, pace=pace))
    assert set(clock.waits) == {0.25}
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(documents) == len(asked) == 5  # every look is due: a line each
    assert documents[-1] == {"schema_version": 1, "at": 1.0, "last": True,
                             "time": 1e9 + 1.0, "time_at": "2001-09-09T01:46:41Z"}


def test_every_zero_is_a_line_at_each_look(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    _, pace, read = script(clock, ends_at=3.0)
    follow(read, Follow("work", every=0.0, pace=pace))
    assert set(clock.waits) == {POLL_SECONDS}
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_work_that_already_ended_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    _, pace, read = script(clock, ends_at=0.0)
    follow(read, Follow("work", pace=pace))
    assert capsys.readouterr().out.splitlines()[0].endswith("at 0 ended")
    assert clock.waits == []


def test_every_is_checked() -> None:
    assert every_seconds(False, None) is None
    assert every_seconds(True, None) == 30.0
    assert every_seconds(True, "1m30") == 90.0
    assert every_seconds(True, "5") == 5.0  # a bare number is seconds
    for follow_, every, as_csv, message in ((False, "10s", False, "--every goes with --follow"),
                                            (True, None, True, "not CSV"),
                                            (True, "-1s", False, "--every '-1s'"),
                                            (True, "nan", False, "--every 'nan'")):
        with pytest.raises(UsageError, match=message):
            every_seconds(follow_, every, as_csv)


def test_a_run_update() -> None:
    going = run_update("linux/x86_64", "r1", RunProgress({"RUNNING": 1, "FAIL": 1, "PASS": 2},
                                                         jobs=4, ended=3, unfinished=1, failed=1))
    assert not going.last
    assert going.line == "run linux/x86_64/r1: 3/4 ended, RUNNING (1 RUNNING, 1 FAIL, 2 PASS)"
    assert going.data == {"target": "linux/x86_64", "runname": "r1", "status": "RUNNING",
                          "counts": {"RUNNING": 1, "FAIL": 1, "PASS": 2}, "jobs": 4, "ended": 3,
                          "failed": 1, "last": False}
    ended = run_update("linux", "r1", RunProgress({"FAIL": 1, "PASS": 3}, jobs=4, ended=4,
                                                  unfinished=0, failed=1))
    assert ended.last and ended.line == "run linux/r1 ended: FAIL (1 FAIL, 3 PASS)"
    assert going.key != ended.key


def test_a_slow_look_is_made_less_often(capsys: pytest.CaptureFixture[str]) -> None:
    """A look of 0.5 s (a huge campaign) is made every 10 s: following costs 1/20 of a core."""
    clock = Clock()
    asked, pace, read = script(clock, ends_at=25.0)

    def slow() -> Update:
        clock.now += 0.5
        return read()

    follow(slow, Follow("work", every=1.0, pace=pace))
    assert set(clock.waits) == {LOOK_SHARE * 0.5}
    assert asked == [0.5, 11.0, 21.5, 32.0]
    assert len(capsys.readouterr().out.splitlines()) == 4

"""`status --follow` and `watch`: a second process follows a run started with `run --detach`,
or a campaign fed by `launch --detach`, to its end, and exits as `run` would.

Each run has a test that waits for a gate file: the follower is seen following (its lines, its
board) while the run goes on, then the test opens the gate and the run ends. Nothing sleeps in
place of a condition: every wait is for a line, a screen or an exit, with a deadline.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from megarun.cli.follow import FEED_SECONDS, FeedWatch
from megarun.cli.formats import iso_utc
from megarun.core.filelocks import hold_lock, lock_held
from megarun.homehost.areas import init_area
from megarun.homehost.context import Context
from tests.component.cli.test_fuzz_inputs import FUZZ, argv_texts, assert_clean
from tests.component.cli.test_output_formats import check_fields, documented
from tests.conftest import REPO, megarun_process

RUN = ("--target", "linux", "--runname", "r1")
DEADLINE = 120.0
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ run linux/r1: (\d+)/4 ended, RUNNING \(")


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """Tests ok (2 items), bad (fails) and gated (runs until the gate file exists)."""
    root = tmp_path / "area"
    init_area(root, keys=["os"])
    gate = tmp_path / "gate"
    for name, step, items in (("ok", "true", "[items]\nN = [1, 2]\n"), ("bad", "false", ""),
                              ("gated", f"while [ ! -e {gate} ]; do sleep 0.05; done", "")):
        (root / "tests" / name).mkdir()
        (root / "tests" / name / "test.toml").write_text(f"steps = [{json.dumps(step)}]\n{items}")
    return root


def open_gate(area: Path) -> None:
    (area.parent / "gate").touch()


@pytest.fixture
def detached(suite: Path) -> Iterator[Path]:
    """The suite's run r1 going on in the background; the gate opens at the end, whatever
    happened, so that no background run outlives the test."""
    started = megarun_process(suite, "run", *RUN, "--detach")
    assert started.returncode == 0, started.stderr
    try:
        yield suite
    finally:
        open_gate(suite)


class Follower:
    """A megarun process whose stdout lines are read as they come."""

    def __init__(self, area: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "megarun", "--area", str(area), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _next(self, deadline: float) -> str | None:
        """The next line (None: the output ended); fails once the deadline passed."""
        try:
            return self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"not seen in {DEADLINE:g} s; last lines: {self.lines[-5:]}")

    def wait_for(self, seen: Callable[[list[str]], bool]) -> list[str]:
        """The lines so far, once `seen` holds for them (fails at the deadline or at EOF)."""
        deadline = time.monotonic() + DEADLINE
        while not seen(self.lines):
            line = self._next(deadline)
            if line is None:
                pytest.fail(f"output ended first; last lines: {self.lines[-5:]}; "
                            f"{self.finish()[1]}")
            self.lines.append(line)
        return self.lines

    def finish(self) -> tuple[int, str]:
        """Exit code and stderr, once every line is read."""
        deadline = time.monotonic() + DEADLINE
        while (line := self._next(deadline)) is not None:
            self.lines.append(line)
        code = self.process.wait(timeout=DEADLINE)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def follower() -> Iterator[Callable[..., Follower]]:
    started: list[Follower] = []

    def start(area: Path, *args: str, env: dict[str, str] | None = None) -> Follower:
        started.append(Follower(area, *args, env=env))
        return started[-1]

    yield start
    for one in started:
        one.stop()


def running_lines(count: int) -> Callable[[list[str]], bool]:
    return lambda lines: sum(bool(LINE.match(line)) for line in lines) >= count


# -- status --follow --------------------------------------------------------------------------
def test_a_detached_run_is_followed_to_its_end_and_exits_as_run(
        detached: Path, follower: Callable[..., Follower]) -> None:
    follow = follower(detached, "status", *RUN, "--follow", "--every", "0.2s")
    follow.wait_for(running_lines(2))  # a line now, and another after --every: the run goes on
    open_gate(detached)
    code, err = follow.finish()
    assert code == 1, (follow.lines, err)  # "bad" failed: 1, as `run` exits
    assert "some tests did not pass" in err
    assert re.fullmatch(r"\S+Z run linux/r1 ended: FAIL \(1 FAIL, 3 PASS\)", follow.lines[-1])
    assert all(LINE.match(line) for line in follow.lines[:-1]), follow.lines
    again = megarun_process(detached, "run", *RUN, "-q")  # `run` on the ended run exits so too
    assert again.returncode == code
    passing = megarun_process(detached, "run", "--target", "linux", "--runname", "r2",
                              "--testpatt", "ok,gated", "--detach")
    assert passing.returncode == 0, passing.stderr
    followed = megarun_process(detached, "status", "--target", "linux", "--runname", "r2",
                               "--follow", "--every", "0.2s")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines()[-1].endswith("run linux/r2 ended: PASS (3 PASS)")


def test_json_lines_until_the_run_ends(detached: Path, follower: Callable[..., Follower]) -> None:
    follow = follower(detached, "status", *RUN, "--follow", "--json", "--every", "0.2s")
    follow.wait_for(lambda lines: len(lines) >= 2)
    open_gate(detached)
    code, err = follow.finish()
    assert code == 1, err
    documents = [json.loads(line) for line in follow.lines]  # each line a whole document
    assert [d["last"] for d in documents] == [False] * (len(documents) - 1) + [True]
    first, last = documents[0], documents[-1]
    assert first["status"] == "RUNNING" and first["jobs"] == 4 and first["ended"] < 4
    assert all(d["time_at"] == iso_utc(d["time"]) for d in documents)
    status = json.loads(megarun_process(detached, "status", *RUN, "--json").stdout)
    assert (last["status"], last["counts"]) == (status["status"], status["counts"])
    assert (last["ended"], last["failed"]) == (4, 1)
    assert check_fields("status --follow", documents, documented()) == []


def test_follow_counts_only_the_tests_of_testpatt(detached: Path) -> None:
    open_gate(detached)
    assert megarun_process(detached, "status", *RUN, "--follow").returncode == 1
    only = megarun_process(detached, "status", *RUN, "--follow", "--json", "--testpatt", "ok,gated")
    assert only.returncode == 0, only.stderr  # "bad" is not among them: as `status` exits
    (document,) = [json.loads(line) for line in only.stdout.splitlines()]  # ended: one line
    assert (document["jobs"], document["counts"], document["last"]) == (3, {"PASS": 3}, True)


def test_a_follower_on_another_host_reads_the_mirror_as_it_is_replaced(
        detached: Path, follower: Callable[..., Follower]) -> None:
    follow = follower(detached, "status", *RUN, "--follow", "--every", "0.2s",
                      env={"MEGARUN_HOSTNAME": "elsewhere"})
    follow.wait_for(running_lines(1))
    open_gate(detached)
    code, err = follow.finish()
    assert code == 1, (follow.lines, err)
    assert follow.lines[-1].endswith("run linux/r1 ended: FAIL (1 FAIL, 3 PASS)")


def test_ctrl_c_leaves_and_the_run_goes_on(detached: Path,
                                          follower: Callable[..., Follower]) -> None:
    follow = follower(detached, "status", *RUN, "--follow", "--every", "0.2s")
    follow.wait_for(running_lines(1))
    follow.process.send_signal(signal.SIGINT)
    code, err = follow.finish()
    assert code == 130, err
    assert "stopped following run linux/r1; it goes on" in err
    items = json.loads(megarun_process(detached, "status", *RUN, "--json").stdout)["items"]
    states = {i["state"] for i in items if i["test"] == "gated"}
    assert states <= {"READY", "QUEUED", "LAUNCHED", "RUNNING"}, states  # going on, not KILLED
    open_gate(detached)
    assert megarun_process(detached, "status", *RUN, "--follow").returncode == 1


def test_follow_options_are_checked(suite: Path) -> None:
    for args, message in ((("--every", "10s"), "--every goes with --follow"),
                          (("--follow", "--csv"), "not CSV"),
                          (("--follow", "--every", "soon"), "--every 'soon': expected")):
        result = megarun_process(suite, "status", *RUN, *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def tmux(socket: Path, *args: str) -> str:
    """tmux on a server of the test's own (its socket in the test's folder)."""
    return subprocess.run(["tmux", "-S", str(socket), *args], capture_output=True, text=True,
                          check=True, timeout=30).stdout


@contextmanager
def terminal(area: Path, *args: str) -> Iterator[Path]:
    """`megarun ARGS` in a 100x30 terminal of a tmux server of the test's own; its socket.
    The shell says EXIT=code when megarun ended."""
    socket = area.parent / "tmux.sock"
    megarun = shlex.join([sys.executable, "-m", "megarun", "--area", str(area), *args])
    command = f"PYTHONPATH={shlex.quote(str(REPO))} {megarun}; echo EXIT=$?; sleep 600"
    tmux(socket, "new-session", "-d", "-s", "follow", "-x", "100", "-y", "30", command)
    try:
        yield socket
    finally:
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], capture_output=True,
                       check=False)


def wait_for_screen(socket: Path, seen: Callable[[str], bool]) -> str:
    deadline = time.monotonic() + DEADLINE
    while True:
        screen = tmux(socket, "capture-pane", "-p", "-t", "follow")
        if seen(screen):
            return screen
        if time.monotonic() > deadline:
            pytest.fail(f"not seen on the screen in {DEADLINE:g} s:\n{screen}")
        time.sleep(0.1)  # the screen is polled: tmux tells no one when it changes


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_terminal_sees_the_live_board_then_the_matrix(detached: Path) -> None:
    with terminal(detached, "status", *RUN, "--follow") as socket:
        board = wait_for_screen(socket, lambda s: "run linux/r1: 3/4 ended" in s)
        lines = {line.split()[0]: line.split() for line in board.splitlines() if line.strip()}
        assert lines["gated"][1:] == ["●", "0/1", "RUNNING"]  # one cell per item, by state
        assert lines["ok"][1:] == ["■■", "2/2", "PASS"] and lines["bad"][-1] == "FAIL"
        assert "run linux/r1: 3/4 ended, RUNNING (1 RUNNING, 1 FAIL, 2 PASS)" in board
        assert "Ctrl-C leaves" in board
        open_gate(detached)
        screen = wait_for_screen(socket, lambda s: "EXIT=" in s)
        assert "EXIT=1" in screen and "run status: FAIL (1 FAIL, 3 PASS)" in screen
        assert "Ctrl-C leaves" not in screen  # the board gave way to the matrix


# -- watch ------------------------------------------------------------------------------------
@pytest.fixture
def campaign(tmp_path: Path) -> Iterator[Path]:
    """Jobs tagged campaign=june (two wait for the gate, one passes) and one tagged july that
    fails, fed by a launcher in the background."""
    root = tmp_path / "area"
    init_area(root, keys=["os"])
    gate = tmp_path / "gate"
    for app, command in (("gated", f"while [ ! -e {gate} ]; do sleep 0.05; done"),
                         ("quick", "true"), ("broken", "false")):
        assert megarun_process(root, "app", "add", app, "--command", command).returncode == 0
    for app, tag, count in (("gated", "june", "2"), ("quick", "june", "1"),
                            ("broken", "july", "1")):
        made = megarun_process(root, "job", "create", "--app", app, "-t", f"campaign={tag}",
                               "--count", count)
        assert made.returncode == 0, made.stderr
    launched = megarun_process(root, "launch", "--detach")
    assert launched.returncode == 0, launched.stderr
    try:
        yield root
    finally:
        open_gate(root)


WATCHED = re.compile(r"^\S+Z jobs --tag campaign=june: 3 job\(s\), (\d+|none) active; (.*)$")


def test_watch_follows_a_tagged_campaign_until_none_is_active(
        campaign: Path, follower: Callable[..., Follower]) -> None:
    watch = follower(campaign, "watch", "--tag", "campaign=june", "--every", "0.2s")
    watch.wait_for(lambda lines: sum("(2 RUNNING" in line for line in lines) >= 2)
    open_gate(campaign)
    code, err = watch.finish()
    assert code == 0, (watch.lines, err)
    assert [WATCHED.match(line) is not None for line in watch.lines] == [True] * len(watch.lines)
    assert watch.lines[-1].endswith("3 job(s), none active; PASS (3 PASS)")
    failing = megarun_process(campaign, "watch", "--tag", "campaign=july", "--every", "0.2s")
    assert failing.returncode == 1, failing.stderr  # its one job ended FAIL
    assert "1 failed, 0 not COMPLETED" in failing.stderr


def test_watch_json_lines(campaign: Path, follower: Callable[..., Follower]) -> None:
    watch = follower(campaign, "watch", "--app", "gated", "--json", "--every", "0.2s")
    watch.wait_for(lambda lines: bool(lines))
    open_gate(campaign)
    code, err = watch.finish()
    assert code == 0, err
    documents = [json.loads(line) for line in watch.lines]
    assert documents[0]["last"] is False and documents[0]["active"] == 2
    last = documents[-1]
    assert {k: last[k] for k in ("jobs", "active", "failed", "completed", "status", "last")} == {
        "jobs": 2, "active": 0, "failed": 0, "completed": 2, "status": "PASS", "last": True}
    assert last["states"] == {"COMPLETED": 2} and last["apps"] == {"gated": {"COMPLETED": 2}}
    assert last["sites"] == {"local": {"COMPLETED": 2}}
    assert check_fields("watch", documents, documented()) == []


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_terminal_sees_the_watch_board(campaign: Path) -> None:
    with terminal(campaign, "watch", "--tag", "campaign=june") as socket:
        board = wait_for_screen(socket, lambda s: "(2 RUNNING, 1 LAUNCHED)" in s)
        rows = [line.split() for line in board.splitlines() if line.strip()]
        header = next(row for row in rows if "failed" in row)
        assert header == ["RUNNING", "LAUNCHED", "failed"]  # a column per state there is
        assert ["all", "2", "1", "0"] in rows  # 2 RUNNING, 1 LAUNCHED, none failed
        assert ["site", "local", "2", "1"] in rows and ["app", "gated", "2"] in rows
        open_gate(campaign)
        screen = wait_for_screen(socket, lambda s: "EXIT=" in s)
        assert "EXIT=0" in screen and "3 job(s), none active; PASS (3 PASS)" in screen
        assert "Ctrl-C leaves" not in screen  # the final table stays, without the hint


def test_watch_with_nothing_matching_exits_2(area: Path) -> None:
    for args, message in ((("--tag", "campaign=none"), "no job matches: jobs --tag campaign=none"),
                          (("--app", "nope"), "nope"),
                          (("--tag", "novalue"), "expected key=value")):
        result = megarun_process(area, "watch", *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_watch_reads_on_another_host(campaign: Path) -> None:
    open_gate(campaign)
    result = megarun_process(campaign, "watch", "--tag", "campaign=june", "--json",
                             env={"MEGARUN_HOSTNAME": "elsewhere"})
    assert result.returncode == 0, result.stderr  # a read: not forwarded to the home host
    assert json.loads(result.stdout.splitlines()[-1])["completed"] == 3


@FUZZ
@given(value=argv_texts, option=st.sampled_from(["--tag", "--site", "--app", "--every"]))
def test_hostile_values_are_one_line(cli: Callable[..., Any], value: str, option: str) -> None:
    """NUL, bytes that are not UTF-8, `../`, huge or negative durations: exit 2 and one line
    (nothing matches in an empty area, so nothing is followed for long)."""
    watched = cli("watch", option, value if option != "--tag" else f"k={value}")
    assert_clean(watched)
    assert watched.code == 2
    if option == "--every":
        followed = cli("status", "--target", "linux", "--runname", "r1", "--follow",
                       "--every", value)
        assert_clean(followed)
        assert followed.code == 2


# -- nothing feeds the work -------------------------------------------------------------------
def first_watch_line(area: Path) -> tuple[dict[str, Any], str]:
    """The first JSON line of `watch` on the area's jobs, and what it said on stderr by then."""
    process = subprocess.Popen(
        [sys.executable, "-m", "megarun", "--area", str(area), "watch", "--json", "--every", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
    finally:
        process.kill()
        _, err = process.communicate(timeout=DEADLINE)
    assert line, err
    return json.loads(line), err


def test_watch_says_when_nothing_feeds_the_jobs_and_when_a_launcher_does(tmp_path: Path) -> None:
    area = tmp_path / "area"
    init_area(area, keys=[])
    for args in (("app", "add", "noop", "--command", "true"),
                 ("job", "create", "--app", "noop", "--count", "2")):
        assert megarun_process(area, *args).returncode == 0
    data, err = first_watch_line(area)
    assert data["fed"] is False and data["active"] == 2
    assert "nothing feeds it" in err and "megarun cron install" in err
    locks = area / ".megarun" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with hold_lock(locks / "launch-local.lock") as held:  # as a launcher of the site would
        assert held
        data, err = first_watch_line(area)
    assert data["fed"] is True and "nothing feeds" not in err


def test_the_feed_is_looked_at_again_every_minute_and_told_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    area = tmp_path / "area"
    init_area(area, keys=[])
    ctx = Context(area_override=str(area))
    now = [0.0]
    feeds = FeedWatch(ctx, "run linux/r1", clock=lambda: now[0])
    lock = ctx.area.state_dir / "locks" / "launch-local.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        assert feeds() is False
        assert capsys.readouterr().err.count("nothing feeds it") == 1
        with hold_lock(lock):
            now[0] += FEED_SECONDS - 1
            assert feeds() is False  # not looked at again yet
            now[0] += 1
            assert feeds() is True
        assert feeds() is True
        now[0] += FEED_SECONDS
        assert feeds() is False
        assert capsys.readouterr().err.count("nothing feeds it") == 1  # told again
        now[0] += FEED_SECONDS
        assert feeds() is False and capsys.readouterr().err == ""  # once per change
    finally:
        ctx.close()


def test_a_lock_is_seen_held_without_being_taken(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    assert lock_held(lock) is False  # no such file
    lock.touch()
    assert lock_held(lock) is False
    with hold_lock(lock) as held:
        assert held and lock_held(lock) is True
    assert lock_held(lock) is False
    assert lock_held(lock, locks_table=str(tmp_path / "no-such-table")) is None

"""Progress of long work: status lines when stderr is not a terminal, counts that agree with
the board and the final summary, and a bar that keeps M/N and the elapsed time at 60 columns."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from megarun.cli.progress import PROGRESS_EVERY_ENV, Bar, Counts, StatusLines, progress_every
from megarun.errors import UsageError
from tests.conftest import megarun_process

RUN = ("--target", "linux", "--runname", "r1")
LINE = re.compile(r"^megarun: site local: (\d+)/(\d+) done, running \d+, queued \d+, "
                  r"failed (\d+), \d+:\d\d:\d\d elapsed", re.M)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    area = tmp_path / "suite"
    area.mkdir()
    (area / "megarun.toml").write_text('name = "progress"\nkeys = ["os"]\n'
                                       'default_site = "local"\n\n[launcher]\nretries = 0\n')
    for name, step, items in (("quick", "true", "[1, 2]"), ("slow", "sleep 0.3", "[1, 2, 3]"),
                              ("bad", "false", "[1]")):
        folder = area / "tests" / name
        folder.mkdir(parents=True)
        folder.joinpath("test.toml").write_text(f'steps = ["{step}"]\n[items]\nN = {items}\n')
    return area


def test_a_run_logs_status_lines_that_agree_with_the_summary(suite: Path) -> None:
    """stderr is a pipe here: no bar, status lines (every step with MEGARUN_PROGRESS_EVERY=0).
    A continued run counts the items that ended before it, as the board and summary do."""
    first = megarun_process(suite, "run", *RUN, "--testpatt", "quick",
                            env={PROGRESS_EVERY_ENV: "0"})
    assert first.returncode == 0, first.stderr
    assert LINE.findall(first.stderr)[-1] == ("2", "2", "0")
    again = megarun_process(suite, "run", *RUN, env={PROGRESS_EVERY_ENV: "0"})
    assert again.returncode == 1, again.stderr  # "bad" fails
    lines = LINE.findall(again.stderr)
    assert lines, again.stderr
    assert {total for _, total, _ in lines} == {"6"}
    assert int(lines[0][0]) >= 2  # quick's two items had ended already
    assert lines[-1] == ("6", "6", "1")
    assert "run status: FAIL (1 FAIL, 5 PASS)" in again.stdout


def test_status_lines_are_rare_by_default(suite: Path) -> None:
    result = megarun_process(suite, "run", *RUN, "--testpatt", "quick")
    assert result.returncode == 0 and not LINE.search(result.stderr), result.stderr


def test_status_lines_come_every_so_often() -> None:
    now = [100.0]
    out = io.StringIO()
    lines = StatusLines("site x", 30.0, clock=lambda: now[0])
    counts = Counts(3, 10, 1, 2, 0, 1.0, 65.0)
    reads = []

    def read() -> Counts:
        reads.append(1)
        return counts

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stderr", out)
        for step in range(0, 100, 5):  # 95 s of work, a report every 5 s
            now[0] = 100.0 + step
            lines.update(read)
    assert out.getvalue().splitlines() == [
        "megarun: site x: 3/10 done, running 1, queued 2, failed 0, 0:01:05 elapsed"] * 3
    assert len(reads) == 3  # the counts are read only for a line


@pytest.mark.parametrize(("raw", "seconds"), [("", 30.0), ("0", 0.0), ("2.5", 2.5)])
def test_progress_every(monkeypatch: pytest.MonkeyPatch, raw: str, seconds: float) -> None:
    monkeypatch.setenv(PROGRESS_EVERY_ENV, raw)
    assert progress_every() == seconds


@pytest.mark.parametrize("raw", ["-1", "soon", "nan"])
def test_progress_every_refuses_nonsense(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(PROGRESS_EVERY_ENV, raw)
    with pytest.raises(UsageError, match=PROGRESS_EVERY_ENV):
        progress_every()


@pytest.mark.parametrize("width", [60, 80, 120])
def test_the_bar_keeps_m_of_n_and_elapsed(width: int) -> None:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    bar = Bar("site a-cluster-with-a-long-name", console)
    bar.show(Counts(4567, 12345, 120, 3000, 12, 1234.0, 5.0, "held: the disk is full"))
    console.print(bar.progress.make_tasks_table(bar.progress.tasks))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= width
    assert "4567/12345" in lines[0] and re.search(r" \d:\d\d:\d\d$", lines[0]), lines[0]

"""The live tests x items board of `megarun run`: what it draws, and that a terminal sees it."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from megarun.cli.board import build_board
from megarun.suites.run_report import ItemStatus
from tests.conftest import REPO


def item(test: str, n: int, state: str, status: str = "n/a") -> ItemStatus:
    return ItemStatus(n, test, str(n), state, status, None, "", None)


def draw(items: list[ItemStatus], width: int = 80, height: int = 20) -> tuple[str, str]:
    """The board as plain text, and with its ANSI colours."""
    console = Console(record=True, width=width, force_terminal=True, color_system="standard")
    console.print(build_board(items, width, height))
    return console.export_text(styles=False, clear=False), console.export_text(styles=True)


def test_one_cell_per_item_coloured_by_state_then_status() -> None:
    items = [item("unit", 1, "COMPLETED", "PASS"), item("unit", 2, "COMPLETED", "FAIL"),
             item("unit", 3, "RUNNING"), item("lint", 4, "COMPLETED", "WARN"),
             item("deploy", 5, "AWAITING_PARENTS")]
    text, styled = draw(items)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["unit", "■■●", "2/3"]  # running tests first
    assert lines[0].split()[-1] == "RUNNING"  # not done: never rolled up to a final status
    assert lines[1].split()[:2] == ["deploy", "·"]  # then the waiting ones, then finished
    assert lines[2].split() == ["lint", "■", "1/1", "WARN"]
    assert "\x1b[32m■\x1b[0m\x1b[31m■\x1b[0m\x1b[34m●" in styled  # PASS green, FAIL red, RUNNING blue


def test_many_items_become_counts_and_many_tests_are_summed_up() -> None:
    items = [item(f"t{n:03}", n * 1000 + i, "COMPLETED", "PASS" if i % 7 else "FAIL")
             for n in range(40) for i in range(200)]
    text, _ = draw(items, width=80, height=10)
    lines = text.splitlines()
    assert len(lines) == 10
    assert "FAIL 29" in lines[0] and "PASS 171" in lines[0]
    assert lines[-1].split()[:3] == ["+31", "more", "6200/6200"]


def test_run_in_a_terminal_draws_the_board(tmp_path: Path) -> None:
    area = tmp_path / "suite"
    shutil.copytree(REPO / "examples" / "regression", area)
    main, secondary = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100", "LINES": "30", "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "megarun", "--area", str(area), "run", "--target", "linux/x86_64",
         "--runname", "tty"], stdin=secondary, stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    process.wait(timeout=30)
    os.close(main)
    assert process.returncode == 0, seen[-2000:]
    screen = seen.decode(errors="replace")
    board = screen[:screen.index("run linux/x86_64/tty\x1b")]  # before the final matrix
    assert "integration" in board and "/6" in board  # a line per test with its items done
    assert "\x1b[2m·\x1b[0m" in board  # waiting items drawn as dim dots
    assert "run status: WARN" in screen  # and the final matrix follows it

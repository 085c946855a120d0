"""Progress of long work, for a terminal and for a log.

On a terminal, `launch` and `run` draw a rich progress bar (and `run` the tests x items board
under it). When stderr is not a terminal (CI logs, cron, `2> file`) they write one status line
every MEGARUN_PROGRESS_EVERY seconds instead (default 30), so a long run is never silent.

Both read the same counts: for a run, the run's items as the board and the final summary count
them (an item is done once it ended); for a plain launch, the launcher's own counts.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from megarun.cli.board import ended_count
from megarun.cli.output import rich_console
from megarun.core.states import FAILING_STATUSES, JobState, JobStatus
from megarun.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from megarun.engine.launch_loop import LaunchProgress
    from megarun.suites.run_report import ItemStatus

#: Seconds between two status lines when stderr is not a terminal.
PROGRESS_EVERY_ENV = "MEGARUN_PROGRESS_EVERY"
DEFAULT_PROGRESS_EVERY = 30.0


def progress_every() -> float:
    """MEGARUN_PROGRESS_EVERY in seconds (0: a line at every step of the work)."""
    raw = os.environ.get(PROGRESS_EVERY_ENV, "").strip()
    if not raw:
        return DEFAULT_PROGRESS_EVERY
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses nan
        raise UsageError(f"{PROGRESS_EVERY_ENV}={raw!r}: expected a number of seconds >= 0")
    return seconds


@dataclass(frozen=True)
class Counts:
    """What the bar and a status line show."""

    done: int
    total: int
    running: int
    queued: int
    failed: int
    rate: float  # jobs per second
    elapsed: float
    held: str = ""


def launch_counts(snapshot: LaunchProgress,
                  items: Sequence[ItemStatus] | None = None) -> Counts:
    """The counts of a launcher snapshot; with `items` (a run's), done, total and failed are
    the run's, as its board and final summary count them."""
    running = snapshot.by_state.get(JobState.RUNNING.value, 0)
    queued = snapshot.by_state.get(JobState.QUEUED.value, 0)
    if items is None:
        failed = sum(n for s, n in snapshot.by_status.items()
                     if JobStatus(s) in FAILING_STATUSES)
        return Counts(snapshot.done, snapshot.total, running, queued, failed, snapshot.rate,
                      snapshot.elapsed, snapshot.held)
    done, total, failed = ended_count(items)
    return Counts(done, total, running, queued, failed, snapshot.rate, snapshot.elapsed,
                  snapshot.held)


def detail(counts: Counts) -> str:
    return (f"running {counts.running}  queued {counts.queued}  failed {counts.failed}  "
            f"{counts.rate:,.0f} jobs/s")


class StatusLines:
    """One plain status line on stderr every `every` seconds (the first after `every`)."""

    def __init__(self, label: str, every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.every = every
        self.clock = clock
        self._next = clock() + every

    def update(self, read: Callable[[], Counts]) -> None:
        """Write a line when one is due, with the counts `read` returns (read only then)."""
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.every
        counts = read()
        held = f"; held: {counts.held}" if counts.held else ""
        print(f"megarun: {self.label}: {counts.done}/{counts.total} done, running "
              f"{counts.running}, queued {counts.queued}, failed {counts.failed}, "
              f"{_clock(counts.elapsed)} elapsed{held}", file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    """0:05:07, as the bar's elapsed column shows it."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


#: Widths of the bar's parts: the elapsed column ("0:05:07") and the bar's least and most.
_ELAPSED = 8
_BAR_MIN, _BAR_MAX = 6, 40


class Bar:
    """A progress bar with one task: label, bar, M/N, detail, elapsed. Fitted to the console
    at each update: the label and the detail give way first, so M/N and the elapsed time stay
    whole even at 60 columns (rich alone would cut those)."""

    def __init__(self, label: str, console: Console | None = None) -> None:
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.table import Column

        self.label = label
        self.bar = BarColumn(bar_width=_BAR_MAX)
        columns = (TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
                   self.bar, MofNCompleteColumn(table_column=Column(no_wrap=True)),
                   TextColumn("{task.fields[detail]}", table_column=Column(no_wrap=True)),
                   TimeElapsedColumn(table_column=Column(no_wrap=True)))
        self.escape = escape
        self.progress = Progress(*columns, console=console or rich_console(stderr=True),
                                 transient=False)
        self.task = self.progress.add_task("", total=None, detail="")
        self.show(Counts(0, 0, 0, 0, 0, 0.0, 0.0))

    def show(self, counts: Counts) -> None:
        text = detail(counts) + (f"  {counts.held}" if counts.held else "")
        label, bar, text = fit(self.progress.console.width, self.label,
                               f"{counts.done}/{counts.total}", text)
        self.bar.bar_width = bar
        styled = f"[yellow]{self.escape(text)}[/]" if counts.held else self.escape(text)
        self.progress.update(self.task, description=self.escape(label), completed=counts.done,
                             total=counts.total or None, detail=styled)


def fit(width: int, label: str, m_of_n: str, text: str) -> tuple[str, int, str]:
    """The label, bar width and detail that fit one line of `width` cells with M/N and the
    elapsed time whole (4 single-cell gaps between the 5 columns)."""
    room = width - 1 - 4 - len(m_of_n) - _ELAPSED
    label = _cut(label, max(4, min(len(label), room // 4)))
    room -= len(label) + _BAR_MIN
    text = _cut(text, max(0, room))
    bar = min(_BAR_MAX, _BAR_MIN + max(0, room - len(text)))
    return label, bar, text


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"

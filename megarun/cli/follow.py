"""Following work that goes on in another process: `status --follow` and `watch`.

A run started with `run --detach`, or fed by `sync` from cron, or a campaign fed by `launch`,
is followed from the database alone: nothing here launches, stops or settles anything. Every
POLL_SECONDS a few counts are read with one aggregate query (never the rows, never holding a
transaction, so the writers are never kept waiting), less often when a look takes long
(LOOK_SHARE); on another host the mirror is opened again whenever the home host replaced it.
A terminal sees a live board, redrawn when the counts change; a log or a pipe gets one line
every `--every` (JSON with `--json`), and a last line when the work ended. Ctrl-C leaves
(exit 130) and the work goes on.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.board import build_board
from megarun.cli.common import duration_option
from megarun.cli.formats import document, iso_utc
from megarun.cli.output import note, rich_console
from megarun.core.filelocks import lock_held
from megarun.core.rollup import headline, rollup_status
from megarun.engine.locks import launch_locks, sync_lock_path
from megarun.errors import UsageError
from megarun.homehost import cron
from megarun.homehost.context import Context
from megarun.suites.run_report import run_items
from megarun.suites.run_state import RunProgress, run_progress

if TYPE_CHECKING:
    from rich.console import RenderableType

    from megarun.db.models import Run

#: How often the database is asked while following (a terminal's board is redrawn as often).
POLL_SECONDS = 1.0
#: A look that takes long (a campaign of a million jobs) is made this many times less often
#: than it takes: following never costs more than 1/LOOK_SHARE of a core.
LOOK_SHARE = 20.0
#: Seconds between two lines when stdout is not a terminal, unless --every says otherwise.
DEFAULT_EVERY = 30.0

#: Under a live board: how to leave it.
LEAVE_HINT = "following: Ctrl-C leaves, the work goes on"

#: How often following looks again whether anything feeds the work.
FEED_SECONDS = 60.0
#: What a line says while nothing feeds the work.
NOT_FED = "nothing feeds it: no launch, run or sync is running and no cron sync is installed"
FEED_HINT = ("start megarun launch or megarun sync, or megarun cron install; "
             "following goes on meanwhile")

EVERY = Annotated[str | None, typer.Option(
    "--every", metavar="DURATION", help="When stdout is not a terminal (or with --json), a line "
    "this often: a duration such as 10s or 1m (default 30s; a bare number is seconds).")]


@dataclass(frozen=True)
class Update:
    """What one look at the database found, in each form it is shown in."""

    last: bool  # the work ended: this is the last update
    line: str  # for a log, without the time
    data: dict[str, Any]  # the JSON document, without schema_version and the time
    key: Hashable  # changes whenever what a board shows may have changed


@dataclass(frozen=True)
class Pace:
    """The clock and the wait between two looks (a test hands in its own)."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.time  # the wall clock, printed in each line

    def look(self, read: Callable[[], Update]) -> tuple[Update, float]:
        """What `read` found, and how long to wait before the next look: at least the time
        it took LOOK_SHARE times."""
        started = self.clock()
        update = read()
        return update, LOOK_SHARE * (self.clock() - started)


@dataclass(frozen=True)
class Follow:
    """How to follow: a line every `every` seconds, as JSON or text, or a board on a
    terminal (`board` None: lines even there)."""

    label: str  # what is followed, as messages name it: "run linux/r1"
    every: float = DEFAULT_EVERY
    as_json: bool = False
    board: Callable[[Update], RenderableType] | None = None
    pace: Pace = field(default_factory=Pace)


def feeding(ctx: Context) -> bool | None:
    """Whether anything feeds this area's work now: a launcher (`launch`, `run`, `run --detach`)
    or a `sync` holds its lock, or a cron sync of the area is installed. None when that cannot
    be told: on another host than the home host (the locks are the home host's), or without the
    kernel's table of locks. Only asks; takes no lock."""
    if not ctx.is_home:
        return None
    locks = [*sorted(launch_locks(ctx.area)), sync_lock_path(ctx.home.db)]
    held = [lock_held(path) for path in locks]
    if any(held) or cron.installed(ctx.area):
        return True
    return None if None in held else False


@dataclass
class FeedWatch:
    """Whether anything feeds the followed work, looked at again every FEED_SECONDS; says so on
    stderr (once, and again after it was fed) when nothing does."""

    ctx: Context
    label: str
    clock: Callable[[], float] = time.monotonic
    _fed: bool | None = None
    _due: float = float("-inf")

    def __call__(self) -> bool | None:
        now = self.clock()
        if now >= self._due:
            was, self._fed = self._fed, feeding(self.ctx)
            self._due = now + FEED_SECONDS
            if self._fed is False and was is not False:
                note(f"{self.label}: {NOT_FED} ({FEED_HINT})", "yellow")
        return self._fed


def with_feed(update: Update, fed: bool | None) -> Update:
    """`update` saying whether anything feeds the work (JSON `fed`; the line says when nothing
    does)."""
    line = f"{update.line} ({NOT_FED})" if fed is False and not update.last else update.line
    return Update(update.last, line, {**update.data, "fed": fed}, (update.key, fed))


def every_seconds(follow: bool, every: str | None, as_csv: bool = False) -> float | None:
    """The seconds between two lines when following; None when not following. --every and
    --csv make sense only with --follow, and --csv not even then (the lines are no table)."""
    if not follow:
        if every is not None:
            raise UsageError("--every goes with --follow")
        return None
    if as_csv:
        raise UsageError("--follow prints a line per update, or JSON lines with --json; "
                         "not CSV")
    return every_option(every)


def every_option(every: str | None) -> float:
    """--every in seconds (DEFAULT_EVERY when not given; a bare number is seconds)."""
    seconds = duration_option(every, "--every", 1.0)
    return DEFAULT_EVERY if seconds is None else seconds


def follow(read: Callable[[], Update], how: Follow) -> tuple[Update, bool]:
    """Look at the work until it ended; return the last update, and whether a terminal saw
    the live board. Ctrl-C leaves with exit 130 and stops nothing."""
    try:
        if how.board is not None and not how.as_json and sys.stdout.isatty():
            return _live(read, how.board, how.pace), True
        return _lines(read, how), False
    except KeyboardInterrupt:
        note(f"stopped following {how.label}; it goes on (nothing was stopped)", "yellow")
        raise typer.Exit(130) from None


def _lines(read: Callable[[], Update], how: Follow) -> Update:
    """A line now, then one every `how.every` seconds, and one when the work ended."""
    pace = how.pace
    wait = min(POLL_SECONDS, how.every) or POLL_SECONDS
    due = pace.clock()
    while True:
        update, least = pace.look(read)
        if update.last or pace.clock() >= due:
            _emit(update, how.as_json, pace.now())
            due = pace.clock() + how.every
        if update.last:
            return update
        pace.sleep(max(wait, least))


def _emit(update: Update, as_json: bool, now: float) -> None:
    """One line on stdout, flushed at once: a pipe or a log file sees it as it is written."""
    if as_json:  # one compact document a line, whatever stdout is
        text = json.dumps(document({**update.data, "time": now}), default=str)
    else:
        text = f"{iso_utc(now)} {update.line}"
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _live(read: Callable[[], Update], board: Callable[[Update], RenderableType],
          pace: Pace) -> Update:
    """The board on the terminal, redrawn when the counts changed; gone once the work ended
    (what follows it says how it ended)."""
    from rich.live import Live

    update, least = pace.look(read)
    shown = update.key
    with Live(board(update), console=rich_console(), auto_refresh=False, transient=True) as live:
        while not update.last:
            pace.sleep(max(POLL_SECONDS, least))
            update, least = pace.look(read)
            if update.key != shown:
                live.update(board(update), refresh=True)
                shown = update.key
    return update


# -- a run ------------------------------------------------------------------------------------
def follow_run(ctx: Context, run: Run, testpatt: str | None, every: float, as_json: bool,
               matrix: Callable[[], bool]) -> bool:
    """Follow the run until none of its items is unfinished; return whether an item failed.
    On a terminal the live tests x items board, then `matrix` (the run's matrix, as `run`
    prints it after its board; it returns whether an item failed)."""
    run_id, name = int(run.id), f"{run.target}/{run.runname}"

    feeds = FeedWatch(ctx, f"run {name}")

    def read() -> Update:
        ctx.reread_mirror()
        update = run_update(str(run.target), str(run.runname),
                            run_progress(ctx.db, run_id, testpatt))
        return with_feed(update, None if update.last else feeds())

    def board(update: Update) -> RenderableType:
        from rich.console import Group
        from rich.text import Text

        size = rich_console().size
        items = run_items(ctx.db, run_id, testpatt)  # the rows: only when the counts changed
        return Group(Text(update.line, style="bold"),
                     build_board(items, size.width, max(3, size.height - 4)),
                     Text(LEAVE_HINT, style="dim"))

    last, on_terminal = follow(read, Follow(f"run {name}", every, as_json, board))
    return matrix() if on_terminal else bool(last.data["failed"])


def run_update(target: str, runname: str, progress: RunProgress) -> Update:
    """A run's progress as a line, a JSON document and a board key."""
    name = f"{target}/{runname}"
    last = not progress.unfinished
    line = (f"run {name} ended: {headline(progress.counts)}" if last else
            f"run {name}: {progress.ended}/{progress.jobs} ended, {headline(progress.counts)}")
    data = {"target": target, "runname": runname, "status": rollup_status(progress.counts),
            "counts": progress.counts, "jobs": progress.jobs, "ended": progress.ended,
            "failed": progress.failed, "last": last}
    return Update(last, line, data, tuple(progress.counts.items()))

"""The live tests x items board `megarun run` draws while a run goes on.

One line per test: a cell per item coloured by its STATE (or, once COMPLETED, its STATUS), the
count done, and its roll-up (RUNNING until every item ended: megarun.core.rollup). Tests with
running or failed items come first; what does not fit the terminal is summed up in a last line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from megarun.cli.output import STATE_STYLES, STATUS_STYLES
from megarun.core.glyphs import GLYPHS
from megarun.core.rollup import RUNNING, count_items, rollup_status
from megarun.core.states import (
    ACTIVE_STATES,
    ENDED_STATES,
    FAILING_STATUSES,
    JobState,
    JobStatus,
    names,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

    from megarun.suites.run_report import ItemStatus

_ACTIVE = names(ACTIVE_STATES)
_ENDED = names(ENDED_STATES)
_COMPLETED = JobState.COMPLETED.value


def cell_style(item: ItemStatus) -> str:
    if item.state == _COMPLETED:
        return STATUS_STYLES.get(item.status, "green")
    return STATE_STYLES.get(item.state, "")


def _order(entry: tuple[str, list[ItemStatus]]) -> tuple[int, str]:
    """Running tests first, then ones with failures, then waiting ones, then finished ones."""
    name, items = entry
    if any(i.state in _ACTIVE for i in items):
        rank = 0
    elif any(JobStatus(i.status) in FAILING_STATUSES for i in items):
        rank = 1
    elif any(i.state not in _ENDED for i in items):
        rank = 2
    else:
        rank = 3
    return rank, name


def ended_count(items: Sequence[ItemStatus]) -> tuple[int, int, int]:
    """(ended, all, failed) items, as each board line counts them: the progress bar and the
    final summary show the same numbers."""
    ended = sum(item.state in _ENDED for item in items)
    failed = sum(item.state == JobState.COMPLETED.value and JobStatus(item.status) in FAILING_STATUSES
                 for item in items)
    return ended, len(items), failed


def build_board(items: Sequence[ItemStatus], width: int, height: int) -> RenderableType:
    """The board for `items`, fitted to a terminal of `width` x `height` cells."""
    from rich.table import Table
    from rich.text import Text

    tests: dict[str, list[ItemStatus]] = {}
    for item in items:
        tests.setdefault(item.test, []).append(item)
    ordered = sorted(tests.items(), key=_order)
    rows = max(1, height)
    shown, hidden = (ordered, []) if len(ordered) <= rows else (ordered[:rows - 1], ordered[rows - 1:])
    more = f"+{len(hidden)} more"
    name_width = min(24, max([len(n) for n, _ in shown] + [len(more) if hidden else 4]))
    strip_width = max(8, width - name_width - 24)
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True, max_width=name_width)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, justify="right")
    table.add_column(no_wrap=True)
    for name, test_items in shown:
        table.add_row(Text(name, style="bold"), _strip(test_items, strip_width),
                      _m_of_n(test_items), _status_text(test_items))
    if hidden:
        jobs = [i for _, group in hidden for i in group]
        table.add_row(Text(more, style="dim"), "", _m_of_n(jobs), _status_text(jobs))
    return table


def _m_of_n(items: Sequence[ItemStatus]) -> str:
    ended, total, _ = ended_count(items)
    return f"{ended}/{total}"


def _strip(items: Sequence[ItemStatus], width: int) -> RenderableType:
    from rich.text import Text

    strip = Text()
    if len(items) <= width:
        for item in items:
            strip.append(GLYPHS.get(item.state, "?"), style=cell_style(item))
        return strip
    counts: dict[tuple[str, str], int] = {}  # too many items for one cell each: count them
    for item in items:
        key = (item.state if item.state != _COMPLETED else item.status, cell_style(item))
        counts[key] = counts.get(key, 0) + 1
    for index, ((label, style), count) in enumerate(sorted(counts.items())):
        strip.append(("  " if index else "") + f"{label} {count}", style=style)
    return strip


def _status_text(items: Sequence[ItemStatus]) -> RenderableType:
    """The test's roll-up: RUNNING while an item has not ended, never PASS before the end."""
    from rich.text import Text

    status = rollup_status(count_items((JobState(i.state), JobStatus(i.status), 1)
                                       for i in items))
    if status == RUNNING:
        return Text(status, style=STATE_STYLES.get(status, ""))
    return Text(status, style=STATUS_STYLES.get(status, ""))

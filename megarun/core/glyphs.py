"""The one glyph of each job STATE and STATUS, shared by every view that draws items as cells.

The live board of `megarun run` and the HTML report mark each cell by a glyph as well as by
its colour (colour alone says nothing to a colour-blind reader or on a black-and-white print).
An item that has not ended is drawn by its STATE; a COMPLETED one by its STATUS. A KILLED or
DEAD item has the glyph of the status it ends with (ABORT, DEAD), never FAIL's.
"""

from __future__ import annotations

from megarun.core.states import JobState, JobStatus

#: One glyph per STATE; a COMPLETED item shows a filled square in its STATUS colour.
GLYPHS = {state.value: glyph for state, glyph in (
    (JobState.AWAITING_PARENTS, "·"), (JobState.READY, "○"), (JobState.QUEUED, "◌"),
    (JobState.LAUNCHED, "◐"), (JobState.RUNNING, "●"), (JobState.KILLREQ, "◍"),
    (JobState.KILLED, "⊗"), (JobState.DEAD, "†"), (JobState.STALE, "~"),
    (JobState.COMPLETED, "■"))}

#: One glyph per STATUS, for the views where a COMPLETED item's outcome must read without
#: colour (the report's cells and history strips).
STATUS_GLYPHS = {status.value: glyph for status, glyph in (
    (JobStatus.NA, "■"), (JobStatus.PASS, "✓"), (JobStatus.SKIP, "»"), (JobStatus.WAIVED, "≈"),
    (JobStatus.WARN, "!"), (JobStatus.CHECK, "?"), (JobStatus.FAIL, "✗"),
    (JobStatus.TIMEOUT, "⌛"), (JobStatus.PREQ_FAIL, "⊘"), (JobStatus.DEAD, "†"),
    (JobStatus.ABORT, "⊗"))}

_COMPLETED = JobState.COMPLETED.value


def item_glyph(state: str, status: str) -> str:
    """The glyph of an item: its STATUS's once COMPLETED, else its STATE's (`?`: unknown)."""
    if state == _COMPLETED:
        return STATUS_GLYPHS.get(status, "?")
    return GLYPHS.get(state, "?")


def rollup_glyph(word: str) -> str:
    """The glyph of a roll-up word (a STATUS, or RUNNING while items have not ended)."""
    return STATUS_GLYPHS.get(word) or GLYPHS.get(word, "•")

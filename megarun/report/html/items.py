"""What an item page of the report shows beyond the job's row: its steps (exit code, duration),
the tail of each step log with a link to the whole file, its event trail and attempts.

Steps come from megarun.campaign.steps (as `status --json` and `job show`), logs through
megarun.campaign.joblogs (as `job logs`): bounded tails (the last TAIL_LINES lines, at most
TAIL_BYTES), undecodable bytes replaced. A job on an SSH site is not read over the network
while the report is built: its page says where its logs are.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from peewee import SqliteDatabase

from megarun.campaign.joblogs import LOG_EXCERPT_BYTES, LocalJobLogs, LogExcerpt, StepOrder
from megarun.campaign.query import JobEvent
from megarun.campaign.steps import job_steps
from megarun.core.steps import StepResult
from megarun.db.jobstore import chunks
from megarun.report.html.rundata import Item

#: Items whose steps and events are read together (one query each).
CHUNK = 500

#: How much of each step log an item page shows: its last lines, at most as many bytes as
#: `job logs --json` carries.
TAIL_LINES = 200
TAIL_BYTES = LOG_EXCERPT_BYTES


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job: when it began and how it ended (so far)."""

    number: int
    began: float
    last: float
    state: str
    status: str


@dataclass(frozen=True)
class LogTail:
    """The tail of one step log (as `job logs --json` gives it), and how to reach the whole
    file from the page."""

    excerpt: LogExcerpt
    href: str  # a relative link to the file on this host


@dataclass(frozen=True)
class ItemDetail:
    """Everything an item page shows."""

    item: Item
    steps: list[StepResult]
    events: list[JobEvent]  # the event trail as `job show` gives it
    attempts: list[Attempt]
    logs: list[LogTail]
    logs_where: str | None  # where the logs are when they are not shown (remote, none yet)


def read_events(db: SqliteDatabase, job_ids: Sequence[int]) -> dict[int, list[JobEvent]]:
    """Each job's event trail, oldest first, in one query per 500 jobs (no `data`: it may hold
    anything)."""
    found: dict[int, list[JobEvent]] = {}
    for part in chunks(sorted(job_ids)):
        marks = ",".join("?" * len(part))
        rows = db.execute_sql(
            "SELECT job, time, from_state, to_state, status, attempt, message FROM event"  # noqa: S608
            f" WHERE job IN ({marks}) ORDER BY job, id", tuple(part))
        for job, when, before, after, status, attempt, message in rows:
            found.setdefault(int(job), []).append(JobEvent({
                "time": float(when), "from": str(before), "to": str(after),
                "status": str(status), "attempt": int(attempt), "message": str(message or "")}))
    return found


def attempts(events: Iterable[JobEvent]) -> list[Attempt]:
    """The attempts of a trail (1, 2, ...: each dispatch), in order, each with its first and
    last moment and its last state and status."""
    found: dict[int, Attempt] = {}
    for event in events:
        number = event["attempt"]
        if number < 1:
            continue  # made and waiting: no attempt yet
        was = found.get(number)
        found[number] = Attempt(number, was.began if was else event["time"], event["time"],
                                event["to"], event["status"])
    return [found[number] for number in sorted(found)]


def details(db: SqliteDatabase, items: Sequence[Item], page_folder: Path | None
            ) -> Iterable[ItemDetail]:
    """The detail of each item: steps and events read 500 items at a time, logs item by item,
    so memory holds one chunk's trails and one item's log tails whatever the size of the run.
    `page_folder`: the folder the item pages are written in (log links are relative to it)."""
    for start in range(0, len(items), CHUNK):
        part = items[start:start + CHUNK]
        ids = [item.id for item in part]
        steps = job_steps(db, ids)
        events = read_events(db, ids)
        for item in part:
            trail = events.get(item.id, [])
            its_steps = steps.get(item.id, [])
            logs, where = _logs(item, its_steps, page_folder)
            yield ItemDetail(item, its_steps, trail, attempts(trail), logs, where)


def _logs(item: Item, steps: Sequence[StepResult], page_folder: Path | None
          ) -> tuple[list[LogTail], str | None]:
    if not item.workdir:
        return [], None
    if item.host:
        return [], f"on {item.host} (site {item.site}) in {item.workdir}"
    if not os.path.isdir(item.workdir):
        return [], f"{item.workdir} (not there: not run yet, or removed by clean)"
    # The steps' own logs when the steps are known (no listing of the folder: one page per
    # item of a 10,000-item run), else every log there.
    names = tuple(step.name for step in steps)
    order = StepOrder(names, only=bool(names))
    found = LocalJobLogs(item.workdir, order).excerpts(None, TAIL_LINES, TAIL_BYTES)
    base = _folder_href(item.workdir, page_folder)
    return [LogTail(e, base + quote(os.path.basename(e.log.path).encode("utf-8",
                                                                       "surrogateescape")))
            for e in found], (None if found else f"{item.workdir} (no logs yet)")


def _folder_href(workdir: str, page_folder: Path | None) -> str:
    """The link from the page to the job's folder, ending in `/`: relative, so it works from
    file:// and from a web server serving the area; every byte of the name percent-encoded."""
    if page_folder is None:
        return Path(workdir).as_uri() + "/"
    target = os.path.relpath(workdir, page_folder)
    return quote(target.encode("utf-8", "surrogateescape"), safe="/") + "/"

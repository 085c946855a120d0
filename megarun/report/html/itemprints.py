"""When an item page must be drawn again: a data fingerprint per item, and a stamp of the logs
of the items still going.

A run whose jobs changed draws its run page again, but of its item pages only those whose own
data changed: the job's row as the page shows it, its newest event (steps, attempts and the
trail all come from events) and, while it goes on, its step logs' sizes and times (a running
step's log grows without an event: its tail on the page is never older than one refresh). The
fingerprints of a run's items are kept in the manifest as one entry, `items:<run id>`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from peewee import SqliteDatabase

from megarun.core.states import ENDED_STATES, names
from megarun.report.html.rundata import Item, combined

_ENDED = frozenset(names(ENDED_STATES))
_LOGS = (".out", ".err")


def key(run_id: int) -> str:
    """The manifest's key of a run's item fingerprints (one JSON object: job id -> print)."""
    return f"items:{run_id}"


def load(prints: Mapping[str, str], run_id: int) -> dict[str, str]:
    """The item fingerprints of a run the last build recorded (none when unreadable)."""
    try:
        found = json.loads(prints.get(key(run_id), "{}"))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def dump(prints: Mapping[str, str]) -> str:
    return json.dumps(prints, sort_keys=True, separators=(",", ":"))


def live_logs(db: SqliteDatabase, run_id: int) -> dict[int, str]:
    """Per job of the run that has not ended and runs on this machine: its step logs' names,
    sizes and times (read from its folder, one listing each)."""
    marks = ",".join("?" * len(_ENDED))
    rows = db.execute_sql(
        "SELECT job.id, job.workdir FROM job LEFT JOIN site ON site.id = job.site_id "  # noqa: S608
        f"WHERE job.run_id = ? AND job.state NOT IN ({marks}) AND job.workdir IS NOT NULL "
        "AND site.host IS NULL", (run_id, *sorted(_ENDED))).fetchall()
    return {int(job): _stamp(str(workdir)) for job, workdir in rows}


def _stamp(folder: str) -> str:
    try:
        with os.scandir(folder) as entries:
            logs = sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
                          for entry in entries if entry.name.endswith(_LOGS))
    except OSError:
        return "-"
    return repr(logs)


def newest_events(db: SqliteDatabase, run_id: int) -> dict[int, int]:
    """Per job of the run, its newest event's id."""
    return {int(job): int(event) for job, event in db.execute_sql(
        "SELECT event.job, max(event.id) FROM event JOIN job ON job.id = event.job "
        "WHERE job.run_id = ? GROUP BY event.job", (run_id,))}


def fingerprints(items: Sequence[Item], events: Mapping[int, int],
                 logs: Mapping[int, str]) -> dict[str, str]:
    """Each item's fingerprint (by job id, as text): what its page shows, as of its newest
    event and logs."""
    return {str(item.id): combined(repr(item), str(events.get(item.id, 0)),
                                   logs.get(item.id, "")) for item in items}


def live_stamp(logs: Mapping[int, str]) -> str:
    """One stamp of a run's live logs (part of the run's fingerprint)."""
    return combined(*(f"{job}:{stamp}" for job, stamp in sorted(logs.items()))) if logs else ""

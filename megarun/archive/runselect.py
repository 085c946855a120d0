"""Which runs an archive, restore or migration acts on: finished runs picked by target,
runname and age.

A run is finished when none of its jobs is waiting or active (CREATED, AWAITING_PARENTS,
READY, QUEUED, LAUNCHED, RUNNING, KILLREQ); its age counts from its last activity: the latest
end of one of its jobs, else its creation. `target` and `runname` are exact names or globs
(`*`, `?`, `[...]`, as SQLite's GLOB).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from peewee import SqliteDatabase

from megarun.agent.private import make_private_dirs
from megarun.config.area import Area
from megarun.core.filelocks import hold_or_refuse
from megarun.core.states import ACTIVE_STATES, WAITING_STATES
from megarun.db.connection import busy_timeout_seconds
from megarun.errors import AlreadyRunning

#: The database names a selection may read: the working db, completed-runs.db, another area's.
SCHEMAS = ("main", "arc", "dest")
OPEN_STATES = tuple(sorted(s.value for s in ACTIVE_STATES | WAITING_STATES))


@dataclass(frozen=True)
class RunStore:
    """Where runs move from: the area, its working database (opened: the mirror on a host other
    than the home host) and the folder of the move lock, next to the working database (a local
    disk, as only the home host moves runs). A command builds it from its context."""

    db: SqliteDatabase
    area: Area
    locks: Path
    read_only: bool = False  # `db` is the mirror: the home host moves and recovers runs


@dataclass(frozen=True)
class RunSelection:
    """What to pick; None: any."""

    target: str | None = None
    runname: str | None = None
    older_than: float | None = None  # seconds since the run's last activity

    def describe(self) -> str:
        parts = [f"target {self.target}" if self.target else "",
                 f"runname {self.runname}" if self.runname else "",
                 f"idle for {self.older_than:g} s" if self.older_than is not None else ""]
        return ", ".join(p for p in parts if p) or "every run"


def select_finished_runs(db: SqliteDatabase, selection: RunSelection, schema: str = "main",
                         now: float | None = None, include_moved: bool = False) -> list[int]:
    """Ids of the finished runs in `schema` (main, or an attached name) that match, oldest
    first. Runs marked MOVED (tombstones of a migration) are left out unless asked for."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown database schema {schema!r}")
    clauses, params = run_filters(selection, include_moved)
    marks = ", ".join("?" for _ in OPEN_STATES)
    clauses.append(f"NOT EXISTS (SELECT 1 FROM {schema}.job j WHERE j.run_id = r.id "  # noqa: S608
                   f"AND j.state IN ({marks}))")
    params.extend(OPEN_STATES)
    last = (f"coalesce((SELECT max(j.ended) FROM {schema}.job j WHERE j.run_id = r.id), "  # noqa: S608
            "r.created)")
    if selection.older_than is not None:
        clauses.append(f"{last} < ?")
        params.append((now if now is not None else time.time()) - selection.older_than)
    sql = (f"SELECT r.id FROM {schema}.run r WHERE {' AND '.join(clauses)} "  # noqa: S608
           f"ORDER BY {last}, r.id")
    return [row[0] for row in db.execute_sql(sql, params).fetchall()]


@dataclass(frozen=True)
class HeldBack:
    """Runs that match the target and runname but that the selection leaves out."""

    too_young: int = 0  # finished, but active more recently than `older_than`
    unfinished: int = 0  # a job still waits or runs


def held_back_runs(db: SqliteDatabase, selection: RunSelection, schema: str = "main",
                   now: float | None = None) -> HeldBack:
    """How many runs matching target and runname `select_finished_runs` leaves out, and why
    (so that a user who named a run learns why it did not move)."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown database schema {schema!r}")
    clauses, params = run_filters(selection, include_moved=False)
    marks = ", ".join("?" for _ in OPEN_STATES)
    is_open = (f"EXISTS (SELECT 1 FROM {schema}.job j WHERE j.run_id = r.id "  # noqa: S608
               f"AND j.state IN ({marks}))")
    last = (f"coalesce((SELECT max(j.ended) FROM {schema}.job j WHERE j.run_id = r.id), "  # noqa: S608
            "r.created)")
    cutoff = (now if now is not None else time.time()) - (selection.older_than or 0.0)
    young = "0" if selection.older_than is None else f"{last} >= ?"
    sql = (f"SELECT coalesce(sum({is_open}), 0), "  # noqa: S608
           f"coalesce(sum(NOT {is_open} AND {young}), 0) FROM {schema}.run r "
           f"WHERE {' AND '.join(clauses) or '1'}")
    values = [*OPEN_STATES, *OPEN_STATES, *([cutoff] if selection.older_than is not None else []),
              *params]
    unfinished, too_young = db.execute_sql(sql, values).fetchone()
    return HeldBack(int(too_young), int(unfinished))


def run_filters(selection: RunSelection, include_moved: bool = True
                ) -> tuple[list[str], list[object]]:
    """SQL conditions on a run aliased `r` (target and runname globs; MOVED tombstones left
    out unless `include_moved`) and their parameters."""
    clauses: list[str] = []
    params: list[object] = []
    if selection.target:
        clauses.append("r.target GLOB ?")
        params.append(selection.target)
    if selection.runname:
        clauses.append("r.runname GLOB ?")
        params.append(selection.runname)
    if not include_moved:
        clauses.append("r.state != 'MOVED'")
    return clauses, params


@contextmanager
def move_lock(folder: Path) -> Iterator[None]:
    """One run move at a time per area, archive or migration alike: recovery must never take
    another process's move in progress for an interrupted one (`folder`: RunStore.locks)."""
    make_private_dirs(str(folder))
    busy = AlreadyRunning("another megarun archive or migrate command is still running in "
                          "this area", "try again when it is done")
    with hold_or_refuse(folder / "moves.lock", busy, busy_timeout_seconds()):
        yield

"""Agent restarts, bounded: in memory for a `launch`, across processes for `sync` (cron).

A `launch` counts its own agents' deaths in memory (AgentRestarts): an agent that dies (not
one that exits when idle or stopped) is restarted at most MAX_RESTARTS times in
RESTART_WINDOW s, waiting RESTART_BACKOFF s, doubled at each restart up to
RESTART_BACKOFF_MAX, before each; one more death ends the launch (exit code 3).

`sync` is a new process every cycle, so it keeps the agents it started in a small file next to
the site's spool (an SSH site's mirror, a local site's work dir, both
`.megarun/sites/<site>/agent-starts.json` by default, 0600). An agent counts as dead
when the database settled it `dead`, or when it never wrote a heartbeat within the start grace.
After MAX_RESTARTS deaths within RESTART_WINDOW seconds no agent is started on that site until
the window has passed; the sync row says why (error, exit 3), and the jobs keep their state.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from peewee import SqliteDatabase

from megarun.agent.layout import agent_log_path
from megarun.core.files import write_private
from megarun.engine.agents import read_heartbeats
from megarun.errors import EnvironmentProblem
from megarun.sites.local_spool import LocalSpool

MAX_RESTARTS = 5
RESTART_WINDOW = 600.0
RESTART_BACKOFF = 0.25
RESTART_BACKOFF_MAX = 30.0
#: An agent with no heartbeat and no database row this long after its start died at start.
START_GRACE = 30.0


@dataclass
class AgentRestarts:
    """A site's agent deaths in one launch: restarts are bounded, with a growing wait before
    each."""

    site: str
    deaths: list[float] = field(default_factory=list)  # monotonic times, within the window
    not_before: float = 0.0

    def died(self, agent_id: str, last_line: str, where: str) -> None:
        """Count one agent death; raise EnvironmentProblem when the site keeps killing them."""
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < RESTART_WINDOW] + [now]
        if len(self.deaths) > MAX_RESTARTS:
            said = f"its log's last line: {last_line}" if last_line else "its log is empty"
            raise EnvironmentProblem(
                f"site {self.site!r}: the agent died {len(self.deaths)} times in "
                f"{RESTART_WINDOW / 60:.0f} min, last {agent_id}; {said} ({where})",
                "fix what the agent log says, then launch again; the jobs keep their state")
        self.not_before = now + min(RESTART_BACKOFF_MAX,
                                    RESTART_BACKOFF * 2 ** (len(self.deaths) - 1))

    def may_start(self) -> bool:
        return time.monotonic() >= self.not_before


@dataclass
class Start:
    agent: str
    time: float
    died: bool | None = None  # None: not known yet


def record_path(spool: LocalSpool) -> Path:
    return spool.root.parent / "agent-starts.json"


def refusal(db: SqliteDatabase, spool: LocalSpool, site: str, workdir: str,
            now: float | None = None) -> str:
    """Why no agent may be started on `site` (its work dir `workdir`, as the site sees it) now
    ("" when one may); updates the record."""
    now = time.time() if now is None else now
    starts = _judge(db, spool, _read(record_path(spool), now), now)
    _write(record_path(spool), starts)
    deaths = [s for s in starts if s.died]
    if len(deaths) < MAX_RESTARTS:
        return ""
    last = max(deaths, key=lambda s: s.time)
    return (f"site {site!r}: the agents sync started died {len(deaths)} times in "
            f"{RESTART_WINDOW / 60:.0f} min (last {last.agent}; its log on the site: "
            f"{agent_log_path(workdir, last.agent)}); none is started until "
            f"{RESTART_WINDOW / 60:.0f} min after that, and the jobs keep their state")


def record_start(spool: LocalSpool, agent: str, now: float | None = None) -> None:
    """Remember an agent this sync started."""
    now = time.time() if now is None else now
    path = record_path(spool)
    _write(path, [*_read(path, now), Start(agent, now)])


def _judge(db: SqliteDatabase, spool: LocalSpool, starts: list[Start],
           now: float) -> list[Start]:
    """Decide, where it can now be known, whether each started agent died."""
    beats = read_heartbeats(spool)
    for start in starts:
        if start.died is not None:
            continue
        row = db.execute_sql("SELECT state FROM agent WHERE id = ?", (start.agent,)).fetchone()
        if row is not None and row[0] in ("dead", "exited"):
            start.died = row[0] == "dead"
        elif row is None and start.agent not in beats and now - start.time > START_GRACE:
            start.died = True  # it never wrote a heartbeat
    return starts


def _read(path: Path, now: float) -> list[Start]:
    """The starts within the window; an unreadable record counts as empty (it only bounds)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        starts = [Start(str(s["agent"]), float(s["time"]), s.get("died")) for s in raw]
    except (OSError, ValueError, TypeError, KeyError):
        return []
    return [s for s in starts if now - s.time < RESTART_WINDOW]


def _write(path: Path, starts: list[Start]) -> None:
    write_private(path, json.dumps([{"agent": s.agent, "time": s.time, "died": s.died}
                                    for s in starts]).encode())

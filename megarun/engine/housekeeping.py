"""Housekeeping of a site's spool: the files of ended agents go once their events are in.

Every agent leaves an event log, a heartbeat and an agent log in `<work dir>/spool/` and
`<work dir>/logs/`. Once the database says the agent ended (settled `exited` or `dead`), its
heartbeat no longer shows it alive, and ingest has read its event log to the end (the stored
offset is the file's size, or only a torn last line follows), the event log and heartbeat are
removed and the agent log is folded into one bounded `logs/ended-agents.log` (megarun/agent/
tidy.py). `sync` and the launcher's cycle call this, so 1,000 launches leave a handful of files.

Why removing can neither lose nor repeat an event: a log is removed only when nothing in it is
left to read, and the agent's row (offset and last sequence number) stays in the database for
ever; should the same log ever come back, its events are at or below the stored sequence number
and are counted as duplicates. A crash between the removals (MEGARUN_FAULT=
housekeeping:after-event-log) leaves a heartbeat or agent log that the next cycle removes.

On an SSH site the site's own files are what the mirror copies, so they go first: the agents
to forget are written as markers (`spool/forget/<agent>`, holding the bytes the home host has),
the next exchange carries them, the site removes what it holds (checking the agent's process
itself), and the mirror copies are removed when the answer names the agent forgotten.
"""

from __future__ import annotations

import time

from peewee import SqliteDatabase

from megarun.agent.exchange import process_is_agent
from megarun.agent.layout import agent_log_name
from megarun.core.faults import fault_point
from megarun.db.jobstore import chunks
from megarun.engine.agents import HOSTNAME, AgentStatus, read_heartbeats
from megarun.sites.local_spool import LocalSpool
from megarun.sites.remote_spool import RemoteSpool

#: Agent row states written when an agent is settled (megarun.engine.agents._settle_agent).
ENDED_AGENT_STATES = frozenset({"exited", "dead"})
#: An agent log with no heartbeat, no event log and no database row this old belongs to an
#: agent that never started (it died before its first heartbeat).
ORPHAN_LOG_AGE = 600.0


def tidy_site(db: SqliteDatabase, site_id: int, spool: LocalSpool, dead_after: float) -> int:
    """Remove (or, on an SSH site, ask the next exchange to remove) the files of ended agents
    whose events are all ingested; return how many agents were tidied here."""
    candidates = spool.agents_with_files()
    if not candidates:
        return 0
    rows = _agent_rows(db, site_id, candidates)
    beats = read_heartbeats(spool)
    now = time.time()
    done = [agent for agent in sorted(candidates) if agent in rows
            and _finished(spool, agent, rows[agent], beats.get(agent), dead_after, now)]
    if isinstance(spool, RemoteSpool):
        spool.request_forget({agent: rows[agent][1] for agent in done})
        return 0
    for agent in done:
        spool.remove_event_log(agent)
        fault_point("housekeeping:after-event-log")
        spool.remove_agent_files(agent)
    for agent in sorted(candidates - rows.keys()):
        if _orphan_log(spool, agent, beats, now):
            spool.remove_agent_files(agent)
    return len(done)


def _agent_rows(db: SqliteDatabase, site_id: int, agents: set[str]) -> dict[str, tuple[str, int]]:
    """(state, events offset) of the site's agents among `agents`."""
    found: dict[str, tuple[str, int]] = {}
    for part in chunks(sorted(agents)):
        marks = ",".join("?" * len(part))
        sql = (f"SELECT id, state, events_offset FROM agent WHERE site_id = ? "  # noqa: S608
               f"AND id IN ({marks})")
        for agent, state, offset in db.execute_sql(sql, (site_id, *part)):
            found[str(agent)] = (str(state), int(offset or 0))
    return found


def _finished(spool: LocalSpool, agent: str, row: tuple[str, int], beat: AgentStatus | None,
              dead_after: float, now: float) -> bool:
    """Ended in the database, not alive by its heartbeat, and its event log read to the end."""
    state, offset = row
    if state not in ENDED_AGENT_STATES:
        return False
    if beat is not None and (beat.alive(dead_after, now) or _still_exiting(beat)):
        return False
    return spool.event_log_read(agent, offset)


def _still_exiting(beat: AgentStatus) -> bool:
    """An agent of this host that wrote its last heartbeat but whose process has not ended yet
    (it may still write its last log line): its files wait for the next cycle."""
    if beat.host != HOSTNAME or not beat.pid or beat.mirrored:
        return False
    return process_is_agent(beat.pid, beat.agent_id)


def _orphan_log(spool: LocalSpool, agent: str, beats: dict[str, AgentStatus], now: float) -> bool:
    if agent in beats or spool.event_log(agent).exists():
        return False
    try:
        age = now - (spool.logs_dir / agent_log_name(agent)).stat().st_mtime
    except FileNotFoundError:
        return False
    return age > ORPHAN_LOG_AGE

"""Forgetting the files of an ended agent once the home host holds all its events.

Each agent leaves an event log, a heartbeat and an agent log in the site's work dir; without
housekeeping, 1,000 launches leave 3,000 files. Once the agent has ended and the home host has
ingested its log to the end, the event log and heartbeat are removed and the agent log is
appended to one bounded `logs/ended-agents.log`. The home host keeps each agent's offset and
last sequence number in its database for ever (one row), so a log that came back would be read
as duplicates, never applied twice.

Used by the home host for a local site and, through the exchange, on an SSH site: stdlib only,
Python 3.6+.
"""

import os
from typing import Dict, List, Optional

from megarun.agent.layout import SpoolLayout, agent_log_name
from megarun.agent.spool import unlink_quietly, write_atomic

#: Ended agents' logs are appended here; past twice this size only its last part is kept.
ENDED_LOG = "ended-agents.log"
ENDED_LOG_KEEP = 1 << 20
#: A torn last line (an agent killed mid-write) is never longer than this.
TORN_MAX = 1 << 16


def fully_read(path: str, offset: int) -> bool:
    """Whether the event log at `path` holds nothing after `offset` but, at most, the torn
    last line of an agent that died mid-write (which no reader ever applies).

    A file shorter than `offset` (an older copy of a log read further already) holds nothing
    that a reader starting at `offset` would ever see.
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return True
    if size <= offset:
        return True
    if size - offset > TORN_MAX:
        return False
    with open(path, "rb") as handle:
        handle.seek(offset)
        return b"\n" not in handle.read()


def agent_log(logs_dir: str, agent_id: str) -> str:
    return os.path.join(logs_dir, agent_log_name(agent_id))


def fold_agent_log(logs_dir: str, agent_id: str) -> None:
    """Append an agent's own log to ENDED_LOG (bounded), then remove it.

    A crash between the two leaves the log in place and it is appended again next time: a
    repeated diagnostic block, never a lost one.
    """
    path = agent_log(logs_dir, agent_id)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    target = os.path.join(logs_dir, ENDED_LOG)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, "==> agent {} <==\n".format(agent_id).encode("utf-8"))
        with handle:
            while True:
                chunk = handle.read(1 << 16)
                if not chunk:
                    break
                os.write(fd, chunk)
    finally:
        os.close(fd)
    _trim(target)
    unlink_quietly(path)


def _trim(path: str) -> None:
    """Keep the last ENDED_LOG_KEEP bytes once the file is twice that (written aside, renamed)."""
    if os.path.getsize(path) <= 2 * ENDED_LOG_KEEP:
        return
    with open(path, "rb") as handle:
        handle.seek(-ENDED_LOG_KEEP, os.SEEK_END)
        data = handle.read()
    start = data.find(b"\n") + 1
    write_atomic(path, data[start:])


def forget_agents(layout: SpoolLayout, wanted: Dict[str, int],
                  alive: Dict[str, bool]) -> List[str]:
    """On a site: forget each agent of `wanted` (agent id -> bytes of its event log the home
    host holds) whose log has nothing more and whose process is not alive; return them.

    An agent whose files are already gone counts as forgotten (a repeated request after the
    home host was cut off before it could take the answer in).
    """
    forgotten = []
    for agent, size in sorted(wanted.items()):
        agent = os.path.basename(agent)
        if alive.get(agent):
            continue
        events = layout.event_log(agent)
        if not fully_read(events, int(size)):
            continue
        unlink_quietly(events)
        unlink_quietly(layout.heartbeat(agent))
        fold_agent_log(layout.logs, agent)
        forgotten.append(agent)
    return forgotten


def is_running(beat: Optional[Dict[str, object]]) -> bool:
    """Whether a heartbeat shows an agent whose process this host sees alive (the home host
    asks to forget only agents it judged ended; this is the site's last check)."""
    return beat is not None and beat.get("state") == "running" and beat.get("process") is True

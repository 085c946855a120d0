"""The spool layout: the one definition of where each file of the spool protocol lives.

docs/spool-protocol.md says what the files mean; this module names them and builds their
paths. The agent (spool.py, exchange.py, orphans.py, tidy.py) and the home host
(megarun/sites/local_spool.py, remote_spool.py) both take their folder names, file names and
suffixes from here, so the two halves of the protocol cannot drift apart.
Stdlib only, Python 3.6+, like the rest of the agent.
"""

import os
from typing import List, Optional

# Folders of a site work dir, and of its spool.
SPOOL = "spool"
QUEUE = "queue"
CLAIMED = "claimed"
CONTROL = "control"
KILL = "kill"
STOP = "stop"
AGENTS = "agents"
EVENTS = "events"
REJECTED = "rejected"
PUBLISHED = "published"  # markers of bundles an exchange already put in the queue
LOGS = "logs"
JOBS = "jobs"
#: claimed/_home: where the home host takes queued bundles back through (no agent has this id).
HOME_CLAIM = "_home"

# Folders of the home host's mirror of an SSH site's spool only (megarun/sites/remote_spool.py).
OUTBOX = "outbox"  # bundles not yet sent to the site
SENT = "sent"  # copies of bundles waiting in the site's queue
DROP = "drop"  # agents whose claimed folders the site should forget
FORGET = "forget"  # ended agents whose files the site should remove

# File names.
BUNDLE_SUFFIX = ".jsonl"
EVENT_LOG_SUFFIX = ".jsonl"
HEARTBEAT_SUFFIX = ".json"
AGENT_LOG_PREFIX = "agent-"
AGENT_LOG_SUFFIX = ".log"
#: "<pool>~<name>.jsonl" is a bundle of one pool (a batch job's own queue).
POOL_MARK = "~"
#: control/stop/all asks every agent to stop.
STOP_ALL = "all"

# Glob patterns of the same files (hidden names are files still being written).
BUNDLE_GLOB = "[!.]*" + BUNDLE_SUFFIX
EVENT_LOG_GLOB = "[!.]*" + EVENT_LOG_SUFFIX
HEARTBEAT_GLOB = "[!.]*" + HEARTBEAT_SUFFIX
AGENT_LOG_GLOB = AGENT_LOG_PREFIX + "*" + AGENT_LOG_SUFFIX


def is_bundle(name: str) -> bool:
    """Whether a file name in queue/ or claimed/<agent>/ is a finished bundle."""
    return name.endswith(BUNDLE_SUFFIX) and not name.startswith(".")


def bundle_name(name: str, pool: Optional[str] = None) -> str:
    """The file name of a bundle in `pool` (none: the shared queue)."""
    return pool + POOL_MARK + name if pool else name


def pool_of(name: str) -> str:
    """The pool of a bundle name ("bj7~123.jsonl" -> "bj7"); "" for the shared queue."""
    pool, mark, _ = name.partition(POOL_MARK)
    return pool if mark else ""


def event_log_name(agent_id: str) -> str:
    return agent_id + EVENT_LOG_SUFFIX


def agent_of_event_log(name: str) -> Optional[str]:
    """The agent id of an event log's file name; None for another file."""
    if name.startswith(".") or not name.endswith(EVENT_LOG_SUFFIX):
        return None
    return name[:-len(EVENT_LOG_SUFFIX)]


def heartbeat_name(agent_id: str) -> str:
    return agent_id + HEARTBEAT_SUFFIX


def is_heartbeat(name: str) -> bool:
    return name.endswith(HEARTBEAT_SUFFIX) and not name.startswith(".")


def agent_log_name(agent_id: str) -> str:
    """The file name of an agent's own log (its stdout and stderr), in the work dir's logs/."""
    return AGENT_LOG_PREFIX + os.path.basename(agent_id) + AGENT_LOG_SUFFIX


def agent_of_agent_log(name: str) -> str:
    """The agent id of a file name matching AGENT_LOG_GLOB."""
    return name[len(AGENT_LOG_PREFIX):-len(AGENT_LOG_SUFFIX)]


def agent_log_path(workdir: str, agent_id: str) -> str:
    """Where an agent started in `workdir` (by the launcher or the exchange) writes its log."""
    return os.path.join(workdir, LOGS, agent_log_name(agent_id))


def job_dir(workdir: str, job_id: int) -> str:
    """Where a plain job runs: jobs/<thousands>/<id> (with "/": it goes into job specs)."""
    return "{}/{}/{:06d}/{}".format(workdir, JOBS, job_id // 1000, job_id)


class SpoolLayout:
    """The paths of one site work dir's spool (strings joined with os.path)."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.root = os.path.join(workdir, SPOOL)
        self.queue = os.path.join(self.root, QUEUE)
        self.claimed = os.path.join(self.root, CLAIMED)
        self.control = os.path.join(self.root, CONTROL)
        self.kill_dir = os.path.join(self.control, KILL)
        self.stop_dir = os.path.join(self.control, STOP)
        self.agents = os.path.join(self.root, AGENTS)
        self.events = os.path.join(self.root, EVENTS)
        self.rejected = os.path.join(self.root, REJECTED)
        self.published = os.path.join(self.root, PUBLISHED)
        self.logs = os.path.join(workdir, LOGS)
        self.jobs = os.path.join(workdir, JOBS)

    def folders(self) -> List[str]:
        """The spool folders both halves make, each after its parent."""
        return [self.root, self.queue, self.claimed, self.control, self.kill_dir,
                self.stop_dir, self.agents, self.events]

    def claimed_dir(self, agent_id: str) -> str:
        return os.path.join(self.claimed, agent_id)

    def event_log(self, agent_id: str) -> str:
        return os.path.join(self.events, event_log_name(agent_id))

    def heartbeat(self, agent_id: str) -> str:
        return os.path.join(self.agents, heartbeat_name(agent_id))

    def agent_log(self, agent_id: str) -> str:
        return agent_log_path(self.workdir, agent_id)

    def kill_file(self, job_id: int) -> str:
        return os.path.join(self.kill_dir, str(job_id))

    def stop_file(self, agent_id: str) -> str:
        """The stop request of one agent, or of all (STOP_ALL)."""
        return os.path.join(self.stop_dir, agent_id)

    def job_dir(self, job_id: int) -> str:
        return job_dir(self.workdir, job_id)

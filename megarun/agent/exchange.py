"""One exchange with the home host: everything a sync cycle needs, in one SSH round trip.

The home host runs `python3 megarun-agent.pyz exchange` on the site with a JSON request on
stdin; this module applies it to the site's spool and answers with one JSON object on stdout:

request:  {"workdir": W, "publish": [{"name", "data"}], "kill": [job ids], "stop": {name: mode},
           "offsets": {agent: byte offset}, "read_limit": bytes, "take_back": bool or [pool],
           "drop_claimed": [agent ids], "start_agent": null or {"args": [...]},
           "forget": {agent: bytes of its event log the home host holds},
           "log_tail": [agent ids]}
answer:   {"version", "host", "time", "events": {agent: {"offset", "data"}},
           "heartbeats": [beat + "process": bool or null], "queue": [bundle names],
           "claimed": {agent: [bundle names]}, "taken_back": [{"name", "data"}],
           "started_agent": agent id or null, "published": [new bundle names],
           "disk_free": bytes, "forgotten": [agent ids whose files were removed],
           "log_tails": {agent: last line of its log}}

Kill and stop files are made to match the request exactly (the home host's copy is the truth).
An agent of this host whose process is gone is settled here (megarun/agent/orphans.py): what is
left of its jobs is killed, and its heartbeat says "dead" with `jobs_gone` before it is sent.
Stdlib only, Python 3.6+, like the rest of the agent.
"""

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from megarun.agent import AGENT_VERSION
from megarun.agent.layout import (
    SpoolLayout,
    agent_of_event_log,
    is_bundle,
    is_heartbeat,
    pool_of,
)
from megarun.agent.orphans import settle_dead_agent
from megarun.agent.private import ensure_private_dirs
from megarun.agent.runner import last_line
from megarun.agent.spool import unlink_quietly, write_atomic
from megarun.agent.tidy import forget_agents, is_running

DEFAULT_READ_LIMIT = 8 << 20


def _listing(folder: str) -> List[str]:
    try:
        return sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except FileNotFoundError:
        return []


class SiteSpool(SpoolLayout):
    """The spool folders of one site work dir (the home host's view, on the site)."""

    def __init__(self, workdir: str) -> None:
        super().__init__(os.path.abspath(os.path.expanduser(workdir)))

    def ensure(self) -> None:
        # refused (exit 3) when others may write them
        ensure_private_dirs(self.workdir, [*self.folders(), self.published, self.logs])


#: Publication markers older than this are pruned (a home host retries within minutes).
PUBLISHED_KEEP_SECONDS = 3 * 86400.0


def publish(spool: SiteSpool, bundles: List[Dict[str, str]]) -> List[str]:
    """Put bundles in the queue, each at most once; return the names that were new.

    A home host whose previous exchange was cut off after the bundles arrived sends them
    again: a marker in spool/published/ makes the second copy a no-op, so no job runs twice.
    """
    new = []
    for bundle in bundles:
        name = os.path.basename(bundle["name"])
        if not is_bundle(name):
            raise ValueError("bad bundle name {!r}".format(bundle["name"]))
        marker = os.path.join(spool.published, name)
        if os.path.exists(marker):
            continue
        write_atomic(os.path.join(spool.queue, name), bundle["data"].encode("utf-8"))
        write_atomic(marker, b"")
        new.append(name)
    return new


def prune_published(spool: SiteSpool, now: float) -> None:
    for name in _listing(spool.published):
        path = os.path.join(spool.published, name)
        try:
            if now - os.stat(path).st_mtime > PUBLISHED_KEEP_SECONDS:
                unlink_quietly(path)
        except FileNotFoundError:
            continue


def match_controls(spool: SiteSpool, kill: List[int], stop: Dict[str, str]) -> None:
    """Make control/kill and control/stop hold exactly what the home host asks for."""
    wanted_kills = {str(int(job)) for job in kill}
    for name in _listing(spool.kill_dir):
        if name not in wanted_kills:
            unlink_quietly(os.path.join(spool.kill_dir, name))
    for name in wanted_kills - set(_listing(spool.kill_dir)):
        write_atomic(os.path.join(spool.kill_dir, name), b"")
    for name in _listing(spool.stop_dir):
        if name not in stop:
            unlink_quietly(os.path.join(spool.stop_dir, name))
    for name, mode in stop.items():
        path = os.path.join(spool.stop_dir, os.path.basename(name))
        try:
            with open(path, "rb") as handle:
                if handle.read().decode("utf-8", "replace").strip() == mode:
                    continue
        except FileNotFoundError:
            pass
        write_atomic(path, mode.encode("utf-8"))


def read_events(spool: SiteSpool, offsets: Dict[str, int],
                limit: int) -> Dict[str, Dict[str, Any]]:
    """Each agent log's complete lines from its offset, at most `limit` bytes in all."""
    answer = {}
    budget = limit
    for name in _listing(spool.events):
        agent = agent_of_event_log(name)
        if agent is None or budget <= 0:
            continue
        offset = int(offsets.get(agent, 0))
        with open(os.path.join(spool.events, name), "rb") as handle:
            handle.seek(offset)
            data = handle.read(budget)
        cut = data.rfind(b"\n") + 1  # a line still being written waits for its end
        if cut:
            answer[agent] = {"offset": offset, "data": data[:cut].decode("utf-8", "replace")}
            budget -= cut
    return answer


def process_is_agent(pid: int, agent_id: str = "") -> bool:
    """The process `pid` exists and is a megarun agent (not another that reused the pid)."""
    try:
        with open("/proc/{}/cmdline".format(pid), "rb") as handle:
            args = handle.read().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: the pid is all that can be checked
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return (bool(agent_id) and agent_id.encode() in args) or any(b"megarun" in a for a in args)


def heartbeats(spool: SiteSpool) -> List[Dict[str, Any]]:
    """Every heartbeat, with `process` telling whether its agent's process lives (this host)."""
    host = socket.gethostname()
    beats = []
    for name in _listing(spool.agents):
        if not is_heartbeat(name):
            continue
        try:
            with open(os.path.join(spool.agents, name), "rb") as handle:
                beat = json.loads(handle.read().decode("utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(beat, dict):
            continue
        pid = beat.get("pid")
        if beat.get("host") == host and isinstance(pid, int):
            beat["process"] = process_is_agent(pid)
        else:
            beat["process"] = None
        beats.append(beat)
    return beats


def take_back(spool: SiteSpool, pools: Optional[List[str]] = None) -> List[Dict[str, str]]:
    """Take queued bundles (of `pools` only, when given) away from the agents (rename to a
    hidden name first)."""
    taken = []
    for name in _listing(spool.queue):
        if pools is not None and pool_of(name) not in pools:
            continue
        hidden = os.path.join(spool.queue, ".taken-" + name)
        try:
            os.rename(os.path.join(spool.queue, name), hidden)
        except FileNotFoundError:
            continue  # an agent claimed it first
        with open(hidden, "rb") as handle:
            taken.append({"name": name, "data": handle.read().decode("utf-8")})
        unlink_quietly(hidden)
    return taken


def drop_claimed(spool: SiteSpool, agents: List[str]) -> None:
    for agent in agents:
        folder = spool.claimed_dir(os.path.basename(agent))
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            unlink_quietly(os.path.join(folder, name))
        if os.path.isdir(folder):
            os.rmdir(folder)


def forget(spool: SiteSpool, wanted: Dict[str, int]) -> List[str]:
    """Remove the files of ended agents the home host has read to the end (agent/tidy.py)."""
    if not wanted:
        return []
    alive = {str(beat.get("agent")): is_running(beat) for beat in heartbeats(spool)}
    return forget_agents(spool, wanted, alive)


def settle_dead_agents(spool: SiteSpool, beats: List[Dict[str, Any]]) -> bool:
    """Settle every agent of this host that died; True when one was (read the beats again)."""
    settled = False
    for beat in beats:
        dead = beat.get("state") == "running" or (beat.get("state") == "dead"
                                                   and not beat.get("jobs_gone"))
        if beat.get("process") is False and dead and isinstance(beat.get("agent"), str):
            settle_dead_agent(spool.workdir, os.path.basename(beat["agent"]))
            settled = True
    return settled


def log_tails(spool: SiteSpool, agents: List[str]) -> Dict[str, str]:
    """The last line of each named agent's log (why an agent that died said it died)."""
    return {str(agent): last_line(spool.agent_log(str(agent))) for agent in agents}


def live_agent(beats: List[Dict[str, Any]], dead_after: float) -> bool:
    now = time.time()
    for beat in beats:
        if beat.get("state") != "running":
            continue
        if beat.get("process") is True:
            return True
        if beat.get("process") is None and now - float(beat.get("time", 0)) <= dead_after:
            return True
    return False


def start_agent(spool: SiteSpool, args: List[str]) -> str:
    """Start an agent detached from this SSH session (own session, no terminal, own log)."""
    agent_id = "{}-{}".format(socket.gethostname().split(".")[0], int(time.time() * 1e6))
    log_path = spool.agent_log(agent_id)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        subprocess.Popen(_agent_command() + ["run", "--workdir", spool.workdir,
                                             "--agent-id", agent_id] + [str(a) for a in args],
                         stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, close_fds=True,
                         start_new_session=True, cwd=spool.workdir)
    finally:
        os.close(fd)
    return agent_id


def _agent_command() -> List[str]:
    """How to start this very agent: its zipapp, or the package it was imported from."""
    if sys.argv and sys.argv[0].endswith(".pyz"):
        return [sys.executable, os.path.abspath(sys.argv[0])]
    return [sys.executable, "-m", "megarun.agent"]


def exchange(request: Dict[str, Any]) -> Dict[str, Any]:
    """Apply one request to the site's spool and gather the answer (see the module docstring)."""
    spool = SiteSpool(str(request["workdir"]))
    spool.ensure()
    published = publish(spool, request.get("publish") or [])
    match_controls(spool, request.get("kill") or [], request.get("stop") or {})
    wanted = request.get("take_back")
    pools = [str(p) for p in wanted] if isinstance(wanted, list) else None
    taken = take_back(spool, pools) if wanted else []
    drop_claimed(spool, request.get("drop_claimed") or [])
    forgotten = forget(spool, request.get("forget") or {})
    beats = heartbeats(spool)
    if settle_dead_agents(spool, beats):
        beats = heartbeats(spool)
    started: Optional[str] = None
    launch = request.get("start_agent")
    if launch is not None and not live_agent(beats, float(launch.get("dead_after", 60))):
        started = start_agent(spool, launch.get("args") or [])
    usage = os.statvfs(spool.workdir)
    now = time.time()
    if published:
        prune_published(spool, now)
    return {
        "version": AGENT_VERSION, "host": socket.gethostname(), "time": now,
        "events": read_events(spool, request.get("offsets") or {},
                              int(request.get("read_limit") or DEFAULT_READ_LIMIT)),
        "heartbeats": beats, "queue": [n for n in _listing(spool.queue) if is_bundle(n)],
        "claimed": {agent: [n for n in _listing(spool.claimed_dir(agent)) if is_bundle(n)]
                    for agent in _listing(spool.claimed)},
        "taken_back": taken, "started_agent": started, "published": published,
        "disk_free": usage.f_bavail * usage.f_frsize, "forgotten": forgotten,
        "log_tails": log_tails(spool, request.get("log_tail") or []),
    }


def main() -> int:
    try:
        request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
        answer = exchange(request)
    except (ValueError, KeyError, TypeError) as exc:
        sys.stdout.write(json.dumps({"error": "bad request: {}".format(exc)}) + "\n")
        return 2
    except OSError as exc:
        sys.stdout.write(json.dumps({"error": "{}: {}".format(exc.filename or "spool",
                                                                exc.strerror or exc)}) + "\n")
        return 3
    sys.stdout.write(json.dumps(answer, separators=(",", ":")) + "\n")
    return 0

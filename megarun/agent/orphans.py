"""A dead agent's jobs: kill what is left of them, confirm it is gone, keep what they ended.

An agent killed with SIGKILL cannot stop its jobs: each step runs in its own session and runs
on. Before any of those jobs may run again, whoever settles the dead agent on its host (the home
host for a local site, the exchange for an SSH site, both through `settle_dead_agent`) kills
what is left of its unfinished attempts and confirms it is gone. A job whose command had ended
before the agent died (its megarun.exit is there) gets the `finished` event the agent could not
write, so it ends as it really ended. The heartbeat is then marked `"state": "dead"` with
`"jobs_gone"`: true once nothing of the agent's jobs runs, false while something still does
(settled again at the next look).

A job's processes are found through /proc (Linux):
- the process group and session of the step leader that the `started` event names (a step
  leader's pid is also its group and session id), members that started no earlier than the
  leader (the `start` the agent recorded, field 22 of /proc/<pid>/stat): a process that reused
  a pid, or a group of someone else's, never matches;
- any process of ours whose environment names the job's id, attempt and work dir: this finds a
  step started in the instant before the agent died, before its `started` event was written,
  and descendants that left the step's session.
Stdlib only, Python 3.6+, like the rest of the agent.
"""

import json
import logging
import os
import signal
import time
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from megarun.agent import rules, runner, states
from megarun.agent.layout import SpoolLayout, is_bundle
from megarun.agent.spool import EventLog, Key, iter_job_events, read_bundle, write_atomic

log = logging.getLogger("megarun.agent")

#: How long a settle waits for killed processes to be gone before it says "not yet".
KILL_WAIT = 5.0
_HAS_PROC = os.path.isdir("/proc/self")


class Attempt:
    """One attempt of a job that a dead agent held and never reported ended."""

    def __init__(self, spec: Dict[str, Any], started: Optional[Dict[str, Any]],
                 leaders: List[Tuple[int, Optional[int]]]) -> None:
        self.spec = spec
        self.job = int(spec["id"])
        self.attempt = int(spec.get("attempt", 0))
        self.workdir = str(spec.get("workdir", ""))
        self.started = started
        #: (pid, start time) of each step leader the agent recorded
        self.leaders = leaders
        self.marks = frozenset([
            "MEGARUN_JOB_ID={}".format(self.job).encode(),
            "MEGARUN_ATTEMPT={}".format(self.attempt).encode(),
            "MEGARUN_WORKDIR={}".format(self.workdir).encode("utf-8", "surrogateescape"),
        ])


def settle_dead_agent(workdir: str, agent_id: str, wait: float = KILL_WAIT) -> bool:
    """Kill a dead agent's leftover jobs, report those that had ended; True when all are gone.

    Call only for an agent whose process is known gone (its heartbeat names this host).
    """
    layout = SpoolLayout(os.path.abspath(workdir))
    events_path = layout.event_log(agent_id)
    attempts = unfinished_attempts(layout.claimed_dir(agent_id), events_path)
    alive = kill_attempts(attempts, wait)
    if alive:
        log.warning("agent %s: processes of job(s) %s survive SIGKILL; settled later",
                    agent_id, ", ".join(str(a.job) for a in alive))
    ended = [a for a in attempts if a.started and a not in alive]
    _report_ended(events_path, ended)
    _mark_dead(layout.heartbeat(agent_id), not alive)
    return not alive


def unfinished_attempts(claimed: str, events_path: str) -> List[Attempt]:
    """The attempts in an agent's claimed bundles that its event log never reported ended."""
    started, leaders, ended = _outcomes(events_path)
    attempts = []
    for name in sorted(_listing(claimed)):
        for spec in read_bundle(os.path.join(claimed, name)):
            try:
                key = (int(spec["id"]), int(spec.get("attempt", 0)))
            except (TypeError, ValueError):
                continue
            if key not in ended:
                attempts.append(Attempt(spec, started.get(key), leaders.get(key, [])))
    return attempts



def _outcomes(path: str) -> Tuple[Dict[Key, Dict[str, Any]],
                                  Dict[Key, List[Tuple[int, Optional[int]]]], FrozenSet[Key]]:
    """From an event log: the `started` event of each (job, attempt), the (pid, start) of its
    step leaders (`started` and `step` events), and the attempts that ended."""
    started: Dict[Key, Dict[str, Any]] = {}
    leaders: Dict[Key, List[Tuple[int, Optional[int]]]] = {}
    ended = set()
    for key, event in iter_job_events(path):
        kind = event.get("ev")
        if kind in ("started", "step"):
            if kind == "started":
                started[key] = event
            start = event.get("start")
            if isinstance(event.get("pid"), int) and event["pid"] > 0:
                leaders.setdefault(key, []).append(
                    (event["pid"], start if isinstance(start, int) else None))
        elif kind in ("finished", "returned"):
            ended.add(key)
    return started, leaders, frozenset(ended)


def _listing(folder: str) -> List[str]:
    try:
        return [n for n in os.listdir(folder) if is_bundle(n)]
    except FileNotFoundError:
        return []


# -- finding and killing -----------------------------------------------------------------------
def kill_attempts(attempts: List[Attempt], wait: float) -> List[Attempt]:
    """SIGKILL every process of `attempts` until none is left; return those still alive."""
    if not attempts:
        return []
    deadline = time.monotonic() + wait
    while True:
        found = find_processes(attempts)
        if not found:
            return []
        if time.monotonic() >= deadline:
            owners = set(found.values())
            return [a for a in attempts if id(a) in owners]
        for pid in found:
            _kill_quietly(pid)
        time.sleep(0.02)


def find_processes(attempts: List[Attempt]) -> Dict[int, int]:
    """Living processes of the attempts: pid -> id() of the attempt it belongs to."""
    if not _HAS_PROC:
        return _find_without_proc(attempts)
    leaders = {pid: (attempt, start) for attempt in attempts for pid, start in attempt.leaders}
    found = {}
    for pid in _own_pids():
        stat = _stat(pid)
        if stat is None or stat[0] in "ZXx":  # a zombie runs nothing: it is gone
            continue
        owner = _by_group(stat, leaders) or _by_environment(pid, attempts)
        if owner is not None:
            found[pid] = id(owner)
    return found


def _by_group(stat: Tuple[str, int, int, int],
              leaders: Dict[int, Tuple[Attempt, Optional[int]]]) -> Optional[Attempt]:
    _state, group, session, start = stat
    for leader in (group, session):
        found = leaders.get(leader)
        # a member that started before the leader belongs to an earlier holder of the pid
        if found is not None and (found[1] is None or start >= found[1]):
            return found[0]
    return None


def _by_environment(pid: int, attempts: List[Attempt]) -> Optional[Attempt]:
    try:
        with open("/proc/{}/environ".format(pid), "rb") as handle:
            variables = set(handle.read().split(b"\0"))
    except OSError:
        return None
    for attempt in attempts:
        if attempt.marks <= variables:
            return attempt
    return None


def _own_pids() -> List[int]:
    """Processes of this user, this one excepted."""
    me, uid = os.getpid(), os.getuid()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if os.stat("/proc/" + name).st_uid == uid:
                pids.append(int(name))
        except OSError:
            continue
    return pids


def _stat(pid: int) -> Optional[Tuple[str, int, int, int]]:
    """(state, process group, session, start time) of a process; None when it is gone."""
    try:
        with open("/proc/{}/stat".format(pid), "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[-1].split()
        return (fields[0].decode("ascii", "replace"), int(fields[2]), int(fields[3]),
                int(fields[19]))
    except (OSError, IndexError, ValueError):
        return None


def _find_without_proc(attempts: List[Attempt]) -> Dict[int, int]:
    """Without /proc only the recorded process groups can be found (no pid-reuse check)."""
    found = {}
    for attempt in attempts:
        for pid, _start in attempt.leaders:
            try:
                os.killpg(pid, 0)
            except (ProcessLookupError, PermissionError):
                continue
            found[-pid] = id(attempt)  # a negative pid: _kill_quietly kills the group
    return found


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return  # gone meanwhile, or no longer ours


# -- what the dead agent could not write -------------------------------------------------------
def _report_ended(events_path: str, attempts: List[Attempt]) -> None:
    """Write `finished` for the attempts whose megarun.exit shows they ended."""
    ended = [fields for fields in map(ended_fields, attempts) if fields is not None]
    if not ended:
        return
    events = EventLog(events_path)
    try:
        for fields in ended:
            events.emit("finished", **fields)
        events.flush()
    finally:
        events.close()


def ended_fields(attempt: Attempt) -> Optional[Dict[str, Any]]:
    """The `finished` event of a started attempt whose megarun.exit is there; None if not."""
    found, rc = runner.read_exit_file(attempt.workdir)
    return _finished_fields(attempt, rc) if found and attempt.started else None


def _finished_fields(attempt: Attempt, rc: Optional[int]) -> Dict[str, Any]:
    note = "ended before its agent died (read from megarun.exit)"
    fields: Dict[str, Any] = {"job": attempt.job, "attempt": attempt.attempt,
              "reason": "exit" if rc is not None else "error", "rc": rc,
              "signal": -rc if rc is not None and rc < 0 else None,
              "message": note if not rc else "exit code {}: {}".format(rc, note),
              "runtime": _runtime(attempt)}
    spec_rules = attempt.spec.get("rules")
    if rc is not None and spec_rules:
        steps = rules.kept_steps(attempt.spec) + [
            str(s.get("name") or "step{}".format(n + 1))
            for n, s in enumerate(attempt.spec.get("steps") or [])]
        try:
            fields["status"] = rules.judge(spec_rules, rc, attempt.workdir, steps)
        except (ValueError, KeyError, TypeError) as exc:
            fields["status"] = states.FAIL
            fields["message"] = "bad rules in the job spec: {}".format(exc)
    return fields


def _runtime(attempt: Attempt) -> float:
    try:
        ended = os.stat(os.path.join(attempt.workdir, "megarun.exit")).st_mtime
    except OSError:
        return 0.0
    started = attempt.started.get("t") if attempt.started else None
    return round(max(0.0, ended - float(started)), 6) if started else 0.0


def _mark_dead(path: str, gone: bool) -> None:
    """Say in the heartbeat that the agent died and whether its jobs are gone."""
    try:
        with open(path, "rb") as handle:
            beat = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(beat, dict):
        return
    beat["state"] = "dead"
    beat["jobs_gone"] = gone
    beat["settled"] = time.time()
    write_atomic(path, json.dumps(beat, separators=(",", ":")).encode())

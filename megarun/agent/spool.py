"""The agent's side of the spool: claiming bundles, the event log, heartbeats and control files."""

import errno
import json
import logging
import os
import stat
import time
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from megarun.agent.layout import STOP_ALL, SpoolLayout, is_bundle, pool_of
from megarun.agent.private import ensure_private_dirs, make_private_dirs, private_problem

log = logging.getLogger("megarun.agent")

#: How much of the end of an event log is read to find the last sequence number.
_TAIL_BYTES = 1 << 16


def write_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` through a hidden temporary file and a rename, mode 0600."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, ".{}.{}.tmp".format(name, os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return


class AgentSpool:
    """The spool folders of one site work dir, as one agent sees them."""

    def __init__(self, workdir: str, agent_id: str, pool: str = "") -> None:
        layout = SpoolLayout(os.path.abspath(workdir))
        self.workdir = layout.workdir
        self.agent_id = agent_id
        self.pool = pool
        self.root = layout.root
        self.queue = layout.queue
        self.claimed = layout.claimed_dir(agent_id)
        self.kill_dir = layout.kill_dir
        self.stop_dir = layout.stop_dir
        self.rejected = layout.rejected
        self.events_path = layout.event_log(agent_id)
        self.heartbeat_path = layout.heartbeat(agent_id)
        self._layout = layout

    def ensure(self) -> None:
        """Make the spool folders (0700) and refuse a work dir or spool others may write."""
        ensure_private_dirs(self.workdir, [*self._layout.folders(), self.claimed])

    # -- bundles ----------------------------------------------------------------------------
    def claim_bundle(self) -> Optional[str]:
        """Take the oldest queued bundle of this agent's pool into claimed/<agent>/; None if none.

        A bundle named "<pool>~<name>.jsonl" belongs to a pool; an agent started with a pool
        takes only those, an agent without one only bundles whose name has no "~".
        """
        try:
            names = sorted(n for n in os.listdir(self.queue)
                           if is_bundle(n) and pool_of(n) == self.pool)
        except FileNotFoundError:
            return None
        for name in names:
            target = os.path.join(self.claimed, name)
            try:
                os.rename(os.path.join(self.queue, name), target)
            except FileNotFoundError:
                continue  # another agent (or the home host taking work back) was first
            if self.trusted_bundle(target):
                return target
        return None

    def leftover_bundles(self) -> List[str]:
        """Bundles this agent id claimed in an earlier life."""
        return sorted(path for path in (os.path.join(self.claimed, n)
                                        for n in os.listdir(self.claimed) if is_bundle(n))
                      if self.trusted_bundle(path))

    def trusted_bundle(self, path: str) -> bool:
        """Whether a claimed bundle is ours to run; one that is not is moved to rejected/.

        A bundle is a list of commands run as this user: one that another user wrote (or may
        rewrite) is never run, and its content (job ids included) is not believed.
        """
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        problem = bundle_problem(info, path)
        if problem is None:
            return True
        log.error("bundle not run: %s", problem)
        make_private_dirs(self.rejected)
        try:
            os.rename(path, os.path.join(self.rejected, os.path.basename(path)))
        except FileNotFoundError:
            pass  # taken away meanwhile: it is not run either
        return False

    def release_bundle(self, path: str) -> None:
        unlink_quietly(path)

    def forget_claimed(self) -> None:
        """Remove this agent's claimed folder once every job in it is accounted for."""
        for name in os.listdir(self.claimed):
            unlink_quietly(os.path.join(self.claimed, name))
        try:
            os.rmdir(self.claimed)
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.claimed, exc.strerror)

    # -- control ----------------------------------------------------------------------------
    def stop_request(self) -> Optional[str]:
        """'drain', 'kill' or 'return' when a stop was asked for this agent (or all agents)."""
        for name in (self.agent_id, STOP_ALL):
            try:
                with open(self._layout.stop_file(name), "rb") as handle:
                    mode = handle.read().decode("utf-8", "replace").strip()
            except FileNotFoundError:
                continue
            return mode if mode in ("kill", "return") else "drain"
        return None

    def kill_requests(self) -> List[int]:
        try:
            names = os.listdir(self.kill_dir)
        except FileNotFoundError:
            return []
        return [int(n) for n in names if n.isdigit()]

    def clear_kill(self, job_id: int) -> None:
        unlink_quietly(self._layout.kill_file(job_id))

    def write_heartbeat(self, beat: Dict[str, Any]) -> None:
        write_atomic(self.heartbeat_path, json.dumps(beat, separators=(",", ":")).encode())


def bundle_problem(info: os.stat_result, path: str) -> Optional[str]:
    """Why a bundle file must not be run (not a plain file, someone else's); None if it may."""
    if not stat.S_ISREG(info.st_mode):
        return "{} is not a regular file".format(path)
    problem = private_problem(info, path)
    return None if problem is None else str(problem)


def read_bundle(path: str) -> List[Dict[str, Any]]:
    """The job specs of a bundle; a line that is not a job spec is logged and skipped.

    The file is checked again on the very descriptor it is read from (no symlink, ours, not
    writable by others): one that is not is read as empty.
    """
    specs: List[Dict[str, Any]] = []
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        problem = bundle_problem(os.fstat(fd), path)
        if problem is not None:
            log.error("bundle not run: %s", problem)
            return specs
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                spec = json.loads(line.decode("utf-8"))
                int(spec["id"])
            except (ValueError, KeyError, TypeError):
                log.error("%s line %d: not a job spec, skipped", path, number)
                continue
            specs.append(spec)
    return specs


class EventLog:
    """The agent's append-only event log; sequence numbers continue across restarts.

    Events are buffered and written with one write per `flush`. A write that fails (a full
    disk) keeps the unwritten bytes and retries them at the next flush, so a line is never
    left cut in the middle.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.seq, needs_newline = _last_seq(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lines: List[str] = []
        self._unwritten = b"\n" if needs_newline else b""

    def emit(self, ev: str, **fields: Any) -> None:
        self.seq += 1
        record = {"seq": self.seq, "t": round(time.time(), 6), "ev": ev}
        record.update(fields)
        self._lines.append(json.dumps(record, separators=(",", ":")))

    def flush(self) -> bool:
        """Write what is buffered; False when the disk refused (kept for the next flush)."""
        if self._lines:
            self._unwritten += ("\n".join(self._lines) + "\n").encode("utf-8")
            self._lines = []
        while self._unwritten:
            try:
                written = os.write(self._fd, self._unwritten)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                    log.error("cannot write events to %s: %s (kept, will retry)",
                              self.path, exc.strerror)
                    return False
                raise
            self._unwritten = self._unwritten[written:]
        return True

    def pending(self) -> bool:
        return bool(self._lines or self._unwritten)

    def close(self) -> None:
        os.close(self._fd)


def _last_seq(path: str) -> Tuple[int, bool]:
    """The last sequence number in an existing log, and whether it ends mid-line."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read()
    except FileNotFoundError:
        return 0, False
    needs_newline = bool(tail) and not tail.endswith(b"\n")
    for line in reversed(tail.split(b"\n")):
        try:
            return int(json.loads(line.decode("utf-8"))["seq"]), needs_newline
        except (ValueError, KeyError, TypeError):
            continue
    return 0, needs_newline


Key = Tuple[int, int]


def iter_job_events(path: str) -> Iterator[Tuple[Key, Dict[str, Any]]]:
    """((job, attempt), event) for each readable job event of an event log (none if missing);
    a torn or foreign line is skipped."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            try:
                event = json.loads(line.decode("utf-8"))
                key = (int(event["job"]), int(event["attempt"]))
            except (ValueError, KeyError, TypeError):
                continue
            yield key, event


def scan_outcomes(path: str) -> Tuple[Set[Key], Set[Key]]:
    """(job, attempt) pairs with a `started` and with a `finished`/`returned` event in a log."""
    started: Set[Key] = set()
    ended: Set[Key] = set()
    for key, event in iter_job_events(path):
        if event.get("ev") == "started":
            started.add(key)
        elif event.get("ev") in ("finished", "returned"):
            ended.add(key)
    return started, ended

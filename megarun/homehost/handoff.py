"""`homehost migrate`: hand the working database from the home host to this host.

The new host (B) connects to the home host (A) and runs `megarun homehost release` there; the
two talk in JSON lines over that one SSH command:

  A: lock the hand-over, take the database's write lock and hold it to the end, check the
     area is quiet, mark the homehost file "moving_to B", write a snapshot   -> {"ready": ...}
  B: copy the snapshot (SFTP), verify it (checksum, integrity_check, row counts), put it in
     place                                                                   -> {"commit": ...}
  A: write the homehost file naming B, retire its own copy                   -> {"switched": true}

The homehost file names exactly one host at every moment, and only A writes it while the
hand-over runs, so a crash anywhere leaves one valid home: before A switches the file, A stays
home (its next command clears a "moving_to" mark nobody holds); after, B is home (B checks the
file when A's answer never comes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import quote

import paramiko

from megarun.agent.private import make_private_dirs
from megarun.config.area import Area
from megarun.core.faults import fault_point
from megarun.core.filelocks import hold_or_refuse
from megarun.core.files import fsync_dir
from megarun.core.quantities import format_age
from megarun.core.states import ACTIVE_STATES, names
from megarun.db.connection import busy_timeout_seconds
from megarun.errors import EnvironmentProblem, MegarunError, UsageError
from megarun.homehost import home as homehost
from megarun.homehost import mirror
from megarun.homehost.home import HomeHost, NotHomeHost
from megarun.transport.ssh.hostspec import parse_host_spec

#: No job may have been queued, launched or running for this long before a hand-over.
QUIET_SECONDS = 1800.0
ACTIVE = names(ACTIVE_STATES)
COUNTED = ("run", "job", "event", "site", "app")
FAULT_POINTS = ("homehost-release:after-mark", "homehost-release:after-snapshot",
                "homehost-release:after-switch", "homehost-migrate:after-copy",
                "homehost-migrate:after-verify", "homehost-migrate:after-commit")
ANSWER_SECONDS = 3600.0  # how long the home host waits for the new host's verdict


class HandoffFailed(EnvironmentProblem):
    """The working database could not be handed over; the old home stays the home."""


@dataclass(frozen=True)
class Moved:
    """What `homehost migrate` did."""

    old_host: str
    new_host: str
    db: Path
    size: int
    seconds: float


# -- the home host's side ------------------------------------------------------------------------
def release(area: Area, to_host: str, force: bool, answers: IO[str], say: Callable[[dict[str, Any]], None]
            ) -> bool:
    """Hand the working database to `to_host` (run on the home host, by the new host over SSH).

    True when the homehost file now names `to_host`.
    """
    home = homehost.establish(area)
    if home.host != homehost.this_host():
        raise NotHomeHost(f"{homehost.this_host()} is not the home host ({home.host} is)")
    busy = HandoffFailed("another hand-over of this working database is running")
    with hold_or_refuse(homehost.handoff_lock_path(home), busy):
        return _release_locked(area, home, to_host, force, answers, say)


def _release_locked(area: Area, home: HomeHost, to_host: str, force: bool,
                    answers: IO[str], say: Callable[[dict[str, Any]], None]) -> bool:
    snapshot = home.db.with_name(f"{home.db.name}.handoff-{_safe(to_host)}")
    writer = sqlite3.connect(home.db, isolation_level=None, timeout=busy_timeout_seconds())
    try:
        writer.execute("BEGIN IMMEDIATE")  # held to the end: nothing is written meanwhile
        problem = quiet_problem(writer, time.time())
        if problem and not force:
            raise HandoffFailed(f"the area is not quiet: {problem}",
                                "wait, or pass --force to move it anyway")
        homehost.write_homehost(area, replace(home, moving_to=to_host))
        fault_point("homehost-release:after-mark")
        size, digest = _snapshot(home.db, snapshot)
        fault_point("homehost-release:after-snapshot")
        say({"ready": {"snapshot": str(snapshot), "size": size, "sha256": digest,
                       "counts": row_counts(snapshot)}})
        commit = _read_message(answers)
        if commit is None or "commit" not in commit:
            _clear_mark(area, home)
            return False
        new_home = _home_from(commit["commit"], area)
        homehost.write_homehost(area, new_home)
        fault_point("homehost-release:after-switch")
        writer.execute("ROLLBACK")
        writer.close()
        _retire(home.db)
        say({"switched": True})
        return True
    except BaseException:
        _clear_mark(area, home)
        raise
    finally:
        writer.close()
        snapshot.unlink(missing_ok=True)


def quiet_problem(db: sqlite3.Connection, now: float) -> str:
    """Why the area is not quiet enough to move ('' when it is)."""
    marks = ", ".join("?" for _ in ACTIVE)
    active = db.execute(f"SELECT count(*) FROM job WHERE state IN ({marks})",  # noqa: S608
                        ACTIVE).fetchone()[0]
    if active:
        return f"{active} job(s) queued, launched or running"
    last = db.execute(f"SELECT max(time) FROM event WHERE from_state IN ({marks})",  # noqa: S608
                      ACTIVE).fetchone()[0]
    if last is not None and now - last < QUIET_SECONDS:
        return (f"a job was active {format_age(now - last)} ago (the area must be quiet for "
                f"{format_age(QUIET_SECONDS)})")
    return ""


def _clear_mark(area: Area, home: HomeHost) -> None:
    current = homehost.read_homehost(area)
    if current is not None and current.host == home.host and current.moving_to:
        homehost.write_homehost(area, replace(current, moving_to=None))


def _retire(db: Path) -> None:
    """Keep the old copy under another name (never deleted by megarun)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        path = db.with_name(db.name + suffix)
        if path.exists():
            os.replace(path, db.with_name(f"{db.name}.released-{stamp}{suffix}"))


def _home_from(data: dict[str, Any], area: Area) -> HomeHost:
    try:
        return replace(homehost.home_from_dict(data, area.root), since=time.time(),
                       moving_to=None)
    except (KeyError, TypeError, ValueError) as exc:
        raise HandoffFailed(f"the new host sent a malformed commit ({exc})") from None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64]


# -- both sides --------------------------------------------------------------------------------
def _snapshot(source: Path, target: Path) -> tuple[int, str]:
    """A consistent copy (journal DELETE) of `source` at `target`: its size and sha256."""
    target.unlink(missing_ok=True)
    os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
    mirror.copy_database(source, target)
    return target.stat().st_size, file_sha256(target)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def row_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True) as db:
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
                for table in COUNTED}


class _Lines(Protocol):
    def readline(self) -> str | bytes: ...


def _read_message(stream: _Lines) -> dict[str, Any] | None:
    """The next JSON line (None at the end of the stream or on a line that is not JSON)."""
    raw = stream.readline()
    line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# -- the new host's side -----------------------------------------------------------------------
def migrate_here(area: Area, force: bool, address: str | None, ssh: dict[str, str],
                 db_path: Path | None = None) -> Moved:
    """Move the working database from the home host to this host (see the module's doc)."""
    if address:
        parse_host_spec(address)  # a malformed address is refused before anything moves
    started = time.monotonic()
    home = homehost.read_homehost(area)
    me = homehost.this_host()
    if home is None or home.host == me:
        raise UsageError(f"this host ({me}) is already the home host of {area.root}")
    final = db_path or homehost.choose_db_path(area, host=me)
    if final == home.db:
        final = final.with_name(f"work-{_safe(me)}.db")
    make_private_dirs(str(final.parent))
    incoming = final.with_name(final.name + ".incoming")
    args = ["homehost", "release", "--to", me, *(["--force"] if force else [])]
    new_home = HomeHost(me, final, address or homehost.default_address(),
                        homehost.megarun_command(), time.time(), area.root,
                        {k: v for k, v in ssh.items() if v})
    failure: Exception | None = None
    try:
        _exchange(home, args, new_home, incoming)
    except (MegarunError, OSError, paramiko.SSHException) as exc:
        failure = exc
    finally:
        incoming.unlink(missing_ok=True)
    current = homehost.read_homehost(area)
    if current is None or current.host != me or current.db != final:
        if final.exists():
            _retire(final)  # not the home: our copy is kept aside, never used
        if isinstance(failure, MegarunError):
            raise failure
        raise HandoffFailed(f"{home.host} did not hand over the working database"
                            f"{f' ({failure})' if failure else ''}")
    mirror.refresh(final, area.mirror_path, force=True)
    return Moved(home.host, me, final, final.stat().st_size, time.monotonic() - started)


def _exchange(home: HomeHost, args: list[str], new_home: HomeHost, incoming: Path) -> None:
    """Talk the hand-over through with `homehost release` on the home host."""
    from megarun.homehost.forward import home_transport, remote_argv

    with home_transport(home) as transport, \
            transport.command_channel(remote_argv(home, args)) as channel:
        channel.settimeout(ANSWER_SECONDS)
        replies = channel.makefile("r")
        ready = _read_message(replies)
        if ready is None or "ready" not in ready:
            raise HandoffFailed(f"{home.host} did not release the working database: "
                                f"{_stderr_of(channel) or 'no answer'}")
        transport.get(ready["ready"]["snapshot"], incoming)
        fault_point("homehost-migrate:after-copy")
        _verify(incoming, ready["ready"])
        _put_in_place(incoming, new_home.db)
        fault_point("homehost-migrate:after-verify")
        stdin = channel.makefile_stdin("w")
        stdin.write(json.dumps({"commit": new_home.as_dict()}) + "\n")
        stdin.flush()
        fault_point("homehost-migrate:after-commit")
        _read_message(replies)  # {"switched": true}; the homehost file is the judge


def _verify(path: Path, ready: dict[str, Any]) -> None:
    if file_sha256(path) != ready["sha256"]:
        raise HandoffFailed("the copied working database does not match the home host's "
                            "(checksum differs)")
    with sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True) as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
    if check != "ok":
        raise HandoffFailed(f"the copied working database is damaged: {check}")
    if row_counts(path) != ready["counts"]:
        raise HandoffFailed("the copied working database has other row counts than the home "
                            "host's")


def _put_in_place(incoming: Path, final: Path) -> None:
    """The verified copy becomes `final`; a file already there is kept under another name."""
    if final.exists():
        _retire(final)
    for suffix in ("-wal", "-shm"):
        final.with_name(final.name + suffix).unlink(missing_ok=True)
    os.replace(incoming, final)
    fsync_dir(final.parent)


def _stderr_of(channel: Any) -> str:
    try:
        text = channel.makefile_stderr("r").read()
    except OSError:
        return ""
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[-1].removeprefix("megarun: error: ") if lines else ""

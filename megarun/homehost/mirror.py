"""The mirror: `<area>/.megarun/megarun.db`, a consistent snapshot of the working database
that every host can read without taking a SQLite lock on the shared file system.

A refresh copies the working database with SQLite's online backup (one step, so one read
transaction: a consistent snapshot even while others write), switches the copy to a
rollback journal (readers open it `immutable`: no -wal, no -shm), flushes it, and renames it
over the old mirror. A reader that has the old file open keeps reading the old file.

Only the home host refreshes. Refreshes are serialized by a lock next to the working database
(local disk), and skipped when the working database has not changed since the last one (its
and its WAL's size and mtime). A crash leaves at worst a temp file, removed by the next
refresh; the mirror in place is always a whole snapshot.

A copy is published only once it passes `PRAGMA quick_check` and holds every schema step and
table: a damaged working database raises DatabaseDamaged and the mirror stays as it was. The
mirror it replaces is kept as the previous generation, `megarun.db.1` (a hard link made
before the rename, so the mirror's name never goes missing): one bad refresh can never
destroy the only good copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from megarun.core.faults import fault_point
from megarun.core.filelocks import hold_or_refuse
from megarun.core.files import replacing, write_private
from megarun.core.quantities import format_age
from megarun.db.connection import DiskFull, is_disk_full, translate_operational_error
from megarun.db.integrity import (
    DatabaseDamaged,
    damaged,
    integrity_problems,
    read_only_uri,
    snapshot_problems,
)
from megarun.errors import DatabaseBusy, EnvironmentProblem, MegarunError

TEMP_PREFIX = ".megarun.db.tmp-"
#: Crash points of a refresh, for tests (megarun.core.faults).
FAULT_POINTS = ("mirror:after-copy", "mirror:after-verify", "mirror:after-keep",
                "mirror:after-rename")
LOCK_SECONDS = 120.0

#: The name of a keeper's thread. It is fork-safe: a fork waits until no keeper is copying (a
#: thread stopped half-way in SQLite would leave its locks held in the child), and the child
#: never runs the keeper.
KEEPER_THREAD = "megarun-mirror"
_COPYING = threading.Lock()  # held by a keeper while it copies, and across a fork
os.register_at_fork(before=_COPYING.acquire, after_in_parent=_COPYING.release,
                    after_in_child=_COPYING.release)


@dataclass(frozen=True)
class Refresh:
    """What one refresh did."""

    copied: bool
    seconds: float
    size: int


def refresh(working_db: Path, mirror: Path, force: bool = False) -> Refresh:
    """Bring the mirror up to date with the working database (skipped when unchanged)."""
    started = time.monotonic()
    with refresh_lock(working_db):
        _remove_leftovers(mirror)
        stamp = _stamp(working_db)
        stamp_file = working_db.with_name(working_db.name + ".mirror.stamp")
        if not force and mirror.exists() and _read_stamp(stamp_file) == stamp:
            return Refresh(False, time.monotonic() - started, mirror.stat().st_size)
        size = _snapshot(working_db, mirror)
        write_private(stamp_file, json.dumps(stamp))
        return Refresh(True, time.monotonic() - started, size)


@contextmanager
def refresh_lock(working_db: Path) -> Iterator[None]:
    """Hold the lock that serialises mirror refreshes (and keeps them off a restore)."""
    busy = DatabaseBusy("another megarun process kept refreshing the mirror",
                        f"waited {LOCK_SECONDS:g} s")
    with hold_or_refuse(working_db.with_name(working_db.name + ".mirror.lock"), busy,
                        LOCK_SECONDS):
        yield


def copy_database(source: Path, target: Path) -> None:
    """Copy `source` into the (existing, empty) file `target` as one consistent snapshot:
    SQLite's backup in one step (one read transaction), then a rollback journal, so that
    readers can open the copy immutable (no -wal, no -shm)."""
    src = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")
    finally:
        dst.close()
        src.close()


def previous_generation(mirror: Path) -> Path:
    """The mirror before the last refresh: `megarun.db.1`."""
    return mirror.with_name(mirror.name + ".1")


def _snapshot(working_db: Path, mirror: Path) -> int:
    temp = mirror.with_name(f"{TEMP_PREFIX}{os.getpid()}")
    temp.unlink(missing_ok=True)  # a leftover of a crashed refresh with this pid
    with replacing(mirror, durable=True, temp=temp):
        try:
            copy_database(working_db, temp)
        except sqlite3.DatabaseError as exc:
            raise _copy_error(exc, working_db, mirror) from exc
        fault_point("mirror:after-copy")
        problems = snapshot_problems(temp)
        if problems:
            raise damaged(working_db, "; ".join(problems[:3]))
        fault_point("mirror:after-verify")
        _keep_previous(mirror)
        fault_point("mirror:after-keep")
    fault_point("mirror:after-rename")
    return mirror.stat().st_size


def _copy_error(exc: sqlite3.DatabaseError, working_db: Path, mirror: Path) -> MegarunError:
    """A full disk under the new copy is not damage of the working database it reads."""
    if is_disk_full(exc):
        return DiskFull(f"no space left on device: cannot write the mirror {mirror}",
                        "free space on its file system; the mirror in place is unchanged")
    return translate_operational_error(exc, working_db)


def _keep_previous(mirror: Path) -> None:
    """Make the mirror in place the previous generation, leaving it in place too (hard link,
    renamed over the old `.1`: every step leaves a whole file under each name)."""
    if not mirror.exists():
        return
    link = mirror.with_name(f"{TEMP_PREFIX}{os.getpid()}.1")
    link.unlink(missing_ok=True)
    try:
        os.link(mirror, link)
    except OSError:  # a file system without hard links: a copy does the same, more slowly
        shutil.copyfile(mirror, link)
        os.chmod(link, 0o600)
    os.replace(link, previous_generation(mirror))
    # rename() does nothing when both names are already one file (a crash right after this
    # step left `.1` linked to the mirror): the link's own name is then still there
    link.unlink(missing_ok=True)


def _stamp(working_db: Path) -> list[int]:
    """Size and mtime of the database and its WAL: changes whenever a write commits.

    A missing and an empty WAL count the same: opening the database makes an empty one.
    """
    values: list[int] = []
    for path in (working_db, working_db.with_name(working_db.name + "-wal")):
        try:
            info = path.stat()
        except FileNotFoundError:
            values += [0, 0]
            continue
        values += [info.st_size, info.st_mtime_ns] if info.st_size else [0, 0]
    return values


def _read_stamp(path: Path) -> list[int] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


def _remove_leftovers(mirror: Path) -> None:
    """Temp files of refreshes that crashed (we hold the lock: nobody else is writing one)."""
    for leftover in mirror.parent.glob(f"{TEMP_PREFIX}*"):
        leftover.unlink(missing_ok=True)


def _keeper_lock_path(working_db: Path) -> Path:
    return working_db.with_name(working_db.name + ".keeper.lock")


def verify_unless_kept(working_db: Path, mirror: Path) -> None:
    """Before a process writes: `PRAGMA quick_check` of a working database that changed since
    its last verified snapshot while no megarun process kept its mirror (a crash, or a change
    from outside megarun, such as a disk error or a bad copy). A live process's keeper checks
    each of its snapshots anyway, so a command that runs beside it does not pay for a check.
    Raises DatabaseDamaged."""
    stamp_file = working_db.with_name(working_db.name + ".mirror.stamp")
    if not mirror.exists() and not previous_generation(mirror).exists():
        return  # a new area: nothing to protect yet, and the first refresh checks the copy
    fd = os.open(_keeper_lock_path(working_db), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another process keeps the mirror (and checks each snapshot) right now
        if _read_stamp(stamp_file) == _stamp(working_db):
            return
        conn = sqlite3.connect(read_only_uri(working_db, immutable=False), uri=True)
        try:
            problems = integrity_problems(conn)
        finally:
            conn.close()
        if problems:
            raise damaged(working_db, "; ".join(problems[:3]))
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def age_seconds(mirror: Path) -> float | None:
    """How long ago the mirror was written (None: there is none)."""
    try:
        return max(0.0, time.time() - mirror.stat().st_mtime)
    except FileNotFoundError:
        return None


def reading_notice(host: str, age: float | None) -> str:
    """What a reader on another host is told (the CLI with --verbose, the Python API as a
    warning): whose database the mirror copies, and how old it is."""
    when = f"written {format_age(age)} ago" if age is not None else "age unknown"
    return f"reading the mirror of {host}'s working database, {when}"


class MirrorKeeper:
    """Keeps the mirror at most a few seconds behind while this process works.

    A daemon thread looks at the working database's stamp every `interval` seconds and
    refreshes the mirror when it changed; `halt` ends the thread, `refresh_now` makes the
    last refresh (after the database is closed, so that its checkpoint is in the snapshot).
    """

    def __init__(self, working_db: Path, mirror: Path, interval: float = 1.0) -> None:
        self.working_db, self.mirror, self.interval = working_db, mirror, interval
        self.refreshes = 0
        self.error: str = ""
        self.damage: DatabaseDamaged | None = None  # the working database failed a check
        # held shared while this process keeps the mirror: see verify_unless_kept
        self._presence = os.open(_keeper_lock_path(working_db), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._presence, fcntl.LOCK_SH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=KEEPER_THREAD, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # once damaged, every further copy would fail the same way: stop and let it be told
        while self.damage is None and not self._stop.wait(self.interval):
            self._refresh_once()

    def _refresh_once(self) -> None:
        try:
            with _COPYING:
                copied = refresh(self.working_db, self.mirror).copied
            if copied:
                self.refreshes += 1
            self.error = ""
        except DatabaseDamaged as exc:
            self.damage, self.error = exc, str(exc)
        except (OSError, sqlite3.Error, EnvironmentProblem) as exc:
            self.error = str(exc)  # the next round tries again; stop() reports the last one

    def halt(self) -> None:
        self._stop.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join()

    def release(self) -> None:
        """This process no longer keeps the mirror (after its last refresh)."""
        if self._presence >= 0:
            os.close(self._presence)
            self._presence = -1

    def refresh_now(self) -> None:
        """The last refresh; a damaged working database is reported, never copied."""
        if self.damage is None:
            self._refresh_once()
        if self.damage is not None:
            raise self.damage

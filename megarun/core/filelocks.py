"""One way to take a user-private file lock that may be busy.

Every "only one at a time" in megarun (a site's launcher, its batch submissions, the area's
sync, run moves, the mirror refresh, a database hand-over) tries a lock file, goes on without it
or refuses when another megarun holds it, and releases it on the way out: `hold_lock` yields
whether it is held, `hold_or_refuse` raises the caller's error when it is not. The one lock held
by another process than its taker, a site's agent lock, is taken by `take_for_a_child` and
handed to the agent it starts.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from megarun.errors import MegarunError


@contextmanager
def hold_lock(path: Path, timeout: float = 0) -> Iterator[bool]:
    """Hold the lock file `path` (mode 0600), waiting up to `timeout` seconds; yields whether
    it is held (False: another process holds it)."""
    lock = FileLock(str(path), mode=0o600)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


@contextmanager
def hold_or_refuse(path: Path, busy: MegarunError, timeout: float = 0) -> Iterator[None]:
    """Hold the lock file `path` (mode 0600), waiting up to `timeout` seconds; raise `busy`
    when another process holds it longer."""
    with hold_lock(path, timeout) as held:
        if not held:
            raise busy
        yield


def take_for_a_child(path: Path) -> int | None:
    """An open descriptor holding the exclusive lock on `path` (mode 0600), to hand to a child
    process that holds it for its whole life; None when another process holds it.

    The lock belongs to the open file, so it stays held while any process keeps the descriptor
    open and the kernel drops it when the last one exits, `kill -9` included: no pid file to
    go stale. Close the caller's copy once the child has it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_held(path: Path, locks_table: str = "/proc/locks") -> bool | None:
    """Whether some process holds the lock file `path` now, asked of the kernel's table of
    locks without taking it (a taker that came at the same moment would find it busy); None
    when that cannot be told here (no such table: not Linux)."""
    try:
        table = Path(locks_table).read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return False  # no lock file: nobody ever took it
    # "1: FLOCK  ADVISORY  WRITE 1234 00:2b:567 0 EOF": device as hex major:minor, then inode
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    return any(wanted in line.split() for line in table.splitlines() if "FLOCK" in line)

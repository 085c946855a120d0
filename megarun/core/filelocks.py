"""One way to take a user-private file lock that may be busy.

Every "only one at a time" in megarun (a site's launcher, its batch submissions, the area's
sync, run moves, the mirror refresh, a database hand-over) tries a lock file, goes on without it
or refuses when another megarun holds it, and releases it on the way out: `hold_lock` yields
whether it is held, `hold_or_refuse` raises the caller's error when it is not.
"""

from __future__ import annotations

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

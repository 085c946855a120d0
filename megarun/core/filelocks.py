"""One way to take a user-private file lock that may be busy: yield whether it is held.

The launcher's per-site lock and the per-site submission lock both try a lock, go on without it
(or refuse) when another megarun holds it, and release it on the way out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


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

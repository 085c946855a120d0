"""The one way the home side replaces a file: a temp file beside it, then a rename.

A reader (another megarun, an agent on a shared file system) sees the old file or the new one,
never half of one; the file is the user's alone (0600 whatever the umask, or the mode asked
for); a failure leaves no temp file behind. `durable` adds the fsyncs that make the new content
survive a crash of the machine (the homehost file, the mirror, a restored database).
The agent, stdlib-only and shipped alone, keeps its own copy (megarun/agent/spool.py write_atomic).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from megarun.agent.private import NotPrivate, ensure_private_dirs
from megarun.errors import EnvironmentProblem


def temp_beside(path: Path) -> Path:
    """A hidden, unique name in the folder of `path` (same file system: the rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a crash after it cannot bring the old name back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: Path, mode: int = 0o600, durable: bool = False,
              temp: Path | None = None) -> Iterator[Path]:
    """Yield a new empty file (`mode`, whatever the umask) beside `path`, to fill by name;
    when the block ends without an error it is renamed over `path`, else deleted.

    `temp` names the temp file when something else looks for leftovers by name.
    """
    temp = temp or temp_beside(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, mode)  # the umask does not apply to fchmod: exactly `mode`
    finally:
        os.close(fd)
    try:
        yield temp
        if durable:
            _fsync_file(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


@contextmanager
def atomic_writer(path: Path, mode: int = 0o600, durable: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary handle whose content replaces `path` when the block ends cleanly."""
    with replacing(path, mode, durable) as temp, open(temp, "wb") as handle:
        yield handle


def write_private(path: Path, data: str | bytes, mode: int = 0o600, durable: bool = False,
                  create_only: bool = False) -> bool:
    """Replace `path` with `data` (text is UTF-8) atomically.

    With `create_only`, write it only if there is no `path` yet (a hard link: atomic, also on
    NFS); False when another process got there first.
    """
    content = data.encode("utf-8") if isinstance(data, str) else data
    if not create_only:
        if not durable:
            _replace(path, content, mode)
            return True
        with atomic_writer(path, mode, durable) as handle:
            handle.write(content)
        return True
    temp = temp_beside(path)
    try:
        with atomic_writer(temp, mode, durable) as handle:
            handle.write(content)
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
    finally:
        temp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)
    return True


def _replace(path: Path, data: bytes, mode: int) -> None:
    """`write_private` without fsyncs, in as few system calls as it takes (one open, no reopen
    by name): a report writes thousands of files."""
    temp = temp_beside(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, mode)  # the umask does not apply to fchmod
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def private_dirs(root: Path, *folders: Path) -> None:
    """Make `root` and `folders` (0700 whatever the umask) and refuse any that another user
    owns or may write (megarun/agent/private.py says why)."""
    try:
        ensure_private_dirs(str(root), [str(folder) for folder in folders])
    except NotPrivate as exc:
        raise EnvironmentProblem(f"{exc.path} {exc.problem}", exc.hint) from None

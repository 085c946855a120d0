"""Files and folder trees over SFTP: atomic uploads (temp name, then rename), and trees
merged in either direction with modes and symlinks kept."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import paramiko

from megarun.core.files import atomic_writer
from megarun.transport.base import temp_name_for
from megarun.transport.local import make_dir, replace_symlink
from megarun.transport.ssh.channel import CHUNK, TRANSIENT


def upload_atomic(sftp: paramiko.SFTPClient, path: str, chunks: Iterable[bytes],
                   mode: int) -> None:
    """Write to a hidden temp name (mode set before any data), then rename over `path`."""
    tmp = temp_name_for(path)
    with _removed_on_error(sftp, tmp):
        with sftp.open(tmp, "wx") as handle:
            handle.chmod(mode)
            handle.set_pipelined(True)
            for chunk in chunks:
                handle.write(chunk)
        sftp.posix_rename(tmp, path)


@contextlib.contextmanager
def _removed_on_error(sftp: paramiko.SFTPClient, tmp: str) -> Iterator[None]:
    """Remove the temporary `tmp` when the block fails (then let the failure through)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(*TRANSIENT):
            sftp.remove(tmp)
        raise


def put_tree(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
    """Merge a copy of the local folder `source` into the remote folder `target`."""
    mkdir_if_missing(sftp, target, os.stat(source).st_mode & 0o777)
    with os.scandir(source) as entries:
        for entry in entries:
            destination = posixpath.join(target, entry.name)
            if entry.is_symlink():
                _replace_symlink(sftp, os.readlink(entry.path), destination)
            elif entry.is_dir(follow_symlinks=False):
                put_tree(sftp, entry.path, destination)
            elif entry.is_file(follow_symlinks=False):
                put_file(sftp, entry.path, destination)


def put_file(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
    with open(source, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode & 0o777
        upload_atomic(sftp, target, iter(lambda: handle.read(CHUNK), b""), mode)


def _replace_symlink(sftp: paramiko.SFTPClient, link_target: str, path: str) -> None:
    tmp = temp_name_for(path)
    # paramiko sends (target, link) in the order OpenSSH's sftp-server expects.
    sftp.symlink(link_target, tmp)
    with _removed_on_error(sftp, tmp):
        sftp.posix_rename(tmp, path)


def get_tree(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
    """Merge a copy of the remote folder `source` into the local folder `target`."""
    mode = stat_mode(sftp.stat(source))
    if not stat.S_ISDIR(mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", source)
    make_dir(target, mode & 0o777)
    for attrs in sftp.listdir_attr(source):
        name = attrs.filename
        if not name or "/" in name or name in (".", ".."):
            continue  # a sane server never sends these; a path must not leave `target`
        remote, local = posixpath.join(source, name), os.path.join(target, name)
        kind = stat_mode(attrs)
        if stat.S_ISLNK(kind):
            link = sftp.readlink(remote)
            if link is not None:
                replace_symlink(link, local)
        elif stat.S_ISDIR(kind):
            get_tree(sftp, remote, local)
        elif stat.S_ISREG(kind):
            get_file(sftp, remote, local, kind & 0o777)


def get_file(sftp: paramiko.SFTPClient, source: str, target: str, mode: int) -> None:
    with atomic_writer(Path(target), mode) as handle:
        sftp.getfo(source, handle)


def path_prefixes(path: str) -> list[str]:
    """"/a/b/c" -> ["/a", "/a/b", "/a/b/c"]; "a/b" -> ["a", "a/b"]."""
    normal = posixpath.normpath(path)
    parts = [part for part in normal.split("/") if part]
    root = "/" if normal.startswith("/") else ""
    return [root + "/".join(parts[: i + 1]) for i in range(len(parts))]


def mkdir_if_missing(sftp: paramiko.SFTPClient, path: str, mode: int) -> None:
    try:
        if not stat.S_ISDIR(stat_mode(sftp.stat(path))):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        return
    except FileNotFoundError:
        pass
    try:
        sftp.mkdir(path, mode)
        sftp.chmod(path, mode)  # the server's umask masked mkdir's mode
    except OSError as exc:
        # Another process may have made it meanwhile; anything else is a real failure,
        # reported as mkdir saw it (not as the "no such file" of a second look).
        try:
            made = stat.S_ISDIR(stat_mode(sftp.stat(path)))
        except FileNotFoundError:
            made = False
        if not made:
            raise exc from None


def stat_mode(attrs: paramiko.SFTPAttributes) -> int:
    return attrs.st_mode if attrs.st_mode is not None else 0


def sftp_alive(sftp: paramiko.SFTPClient) -> bool:
    channel = sftp.get_channel()
    return (channel is not None and not bool(channel.closed)
            and channel.get_transport().is_active())

"""LocalTransport: the Transport protocol on this machine (subprocess and os)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from megarun.agent.private import make_private_dirs
from megarun.core.files import atomic_writer
from megarun.transport.base import (
    CommandResult,
    PathArg,
    check_argv,
    python_argv,
    temp_name_for,
)
from megarun.transport.errors import CommandTimeout

_CHUNK = 1 << 20


class LocalTransport:
    """Runs commands and moves files on the machine megarun runs on."""

    @property
    def description(self) -> str:
        return "local"

    def run(self, argv: Sequence[str], stdin: bytes | None = None,
            timeout: float | None = None) -> CommandResult:
        args = check_argv(argv)
        try:
            done = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL if stdin is None else None,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise CommandTimeout(f"{args[0]} did not finish within {timeout:g} s on local",
                                 hint="raise the timeout or check the command") from None
        except FileNotFoundError:
            return _shell_like_failure(127, f"{args[0]}: command not found")
        except PermissionError:
            return _shell_like_failure(126, f"{args[0]}: permission denied")
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def run_python(self, script: str, args: Sequence[str] = (), python: str = "python3",
                   stdin: bytes | None = None, timeout: float | None = None) -> CommandResult:
        argv, data = python_argv(script, args, python, stdin)
        return self.run(argv, stdin=data, timeout=timeout)

    def read_bytes(self, path: PathArg) -> bytes:
        return Path(path).read_bytes()

    def write_bytes_atomic(self, path: PathArg, data: bytes, mode: int = 0o600) -> None:
        _write_atomic(os.fspath(path), [data], mode)

    def put(self, local_path: PathArg, remote_path: PathArg) -> None:
        _copy_atomic(os.fspath(local_path), os.fspath(remote_path))

    def get(self, remote_path: PathArg, local_path: PathArg) -> None:
        _copy_atomic(os.fspath(remote_path), os.fspath(local_path))

    def makedirs(self, path: PathArg, mode: int = 0o700) -> None:
        make_private_dirs(os.fspath(path), mode)

    def exists(self, path: PathArg) -> bool:
        return os.path.lexists(path)

    def is_dir(self, path: PathArg) -> bool:
        return os.path.isdir(path)

    def put_tree(self, local_dir: PathArg, remote_dir: PathArg) -> str:
        copy_tree(os.fspath(local_dir), os.fspath(remote_dir))
        return "copy"

    def get_tree(self, remote_dir: PathArg, local_dir: PathArg) -> str:
        copy_tree(os.fspath(remote_dir), os.fspath(local_dir))
        return "copy"

    def close(self) -> None:
        """Nothing to release."""


def _shell_like_failure(code: int, message: str) -> CommandResult:
    """The result a remote shell gives for a missing or non-executable program."""
    return CommandResult(code, b"", f"megarun: {message}\n".encode())


def _write_atomic(path: str, chunks: Iterable[bytes], mode: int) -> None:
    """Write chunks to a temp file created with `mode` (before any data), then rename."""
    with atomic_writer(Path(path), mode) as handle:
        for chunk in chunks:
            handle.write(chunk)


def _copy_atomic(source: str, target: str) -> None:
    mode = os.stat(source).st_mode & 0o777
    with open(source, "rb") as handle:
        _write_atomic(target, iter(lambda: handle.read(_CHUNK), b""), mode)


def copy_tree(source: str, target: str) -> None:
    """Merge a copy of the directory `source` into `target` (see Transport.put_tree)."""
    if not stat.S_ISDIR(os.stat(source).st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", source)
    real_source, real_target = os.path.realpath(source), os.path.realpath(target)
    if real_target == real_source or real_target.startswith(real_source.rstrip("/") + "/"):
        raise OSError(errno.EINVAL, "cannot copy a folder into itself", target)
    _copy_tree_into(source, target)


def _copy_tree_into(source: str, target: str) -> None:
    make_dir(target, os.stat(source).st_mode & 0o777)
    with os.scandir(source) as entries:
        for entry in entries:
            destination = os.path.join(target, entry.name)
            if entry.is_symlink():
                replace_symlink(os.readlink(entry.path), destination)
            elif entry.is_dir(follow_symlinks=False):
                _copy_tree_into(entry.path, destination)
            elif entry.is_file(follow_symlinks=False):
                _copy_atomic(entry.path, destination)


def make_dir(path: str, mode: int) -> None:
    """Create one directory (umask applies); an existing directory is fine, a file is not."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", path) from None


def replace_symlink(link_target: str, path: str) -> None:
    """Make `path` a symlink to `link_target`, atomically replacing a file or link there."""
    tmp = temp_name_for(path)
    os.symlink(link_target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


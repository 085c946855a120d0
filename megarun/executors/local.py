"""LocalExecutor: the Executor protocol on this machine (subprocess and os)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from megarun.executors.base import (
    CommandResult,
    PathArg,
    check_argv,
    python_argv,
    temp_name_for,
)
from megarun.executors.errors import CommandTimeout

_CHUNK = 1 << 20


class LocalExecutor:
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
        os.makedirs(path, mode=mode, exist_ok=True)

    def exists(self, path: PathArg) -> bool:
        return os.path.lexists(path)

    def close(self) -> None:
        """Nothing to release."""


def _shell_like_failure(code: int, message: str) -> CommandResult:
    """The result a remote shell gives for a missing or non-executable program."""
    return CommandResult(code, b"", f"megarun: {message}\n".encode())


def _write_atomic(path: str, chunks: Iterable[bytes], mode: int) -> None:
    """Write chunks to a temp file created with `mode` (before any data), then rename."""
    tmp = temp_name_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _copy_atomic(source: str, target: str) -> None:
    mode = os.stat(source).st_mode & 0o777
    with open(source, "rb") as handle:
        _write_atomic(target, iter(lambda: handle.read(_CHUNK), b""), mode)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


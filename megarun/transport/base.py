"""The Transport protocol: WHERE commands run and files live (this machine or an SSH host).

Schedulers and services build argv lists; an Transport runs them and moves files. Commands are
always argv lists, never shell strings: an implementation that needs a shell (SSH) quotes every
element with shlex.quote, so user data can never be executed.

File operations raise OSError (FileNotFoundError for a missing path) on both implementations.
Remote paths are POSIX paths, absolute or relative to the login directory.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from megarun.errors import UsageError

PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class CommandResult:
    """Exit code and raw output of one command."""

    code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stdout_text(self) -> str:
        return self.text

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


@runtime_checkable
class Transport(Protocol):
    """Runs argv and moves files on one host."""

    @property
    def description(self) -> str:
        """Where this transport runs, for messages: "local" or "user@host:port"."""
        ...

    def run(self, argv: Sequence[str], stdin: bytes | None = None,
            timeout: float | None = None) -> CommandResult:
        """Run argv (a list, never a shell string); raise CommandTimeout after `timeout` s."""
        ...

    def run_python(self, script: str, args: Sequence[str] = (), python: str = "python3",
                   stdin: bytes | None = None, timeout: float | None = None) -> CommandResult:
        """Run a Python script with `python` on the host, passing `args` as sys.argv[1:]."""
        ...

    def read_bytes(self, path: PathArg) -> bytes:
        ...

    def write_bytes_atomic(self, path: PathArg, data: bytes, mode: int = 0o600) -> None:
        """Write under a temporary name in the same directory, then rename over `path`."""
        ...

    def put(self, local_path: PathArg, remote_path: PathArg) -> None:
        """Copy a local file to the host atomically, keeping its permission bits."""
        ...

    def get(self, remote_path: PathArg, local_path: PathArg) -> None:
        """Copy a file from the host atomically, keeping its permission bits."""
        ...

    def makedirs(self, path: PathArg, mode: int = 0o700) -> None:
        """Create a directory and its missing parents; existing ones are left as they are."""
        ...

    def exists(self, path: PathArg) -> bool:
        ...

    def is_dir(self, path: PathArg) -> bool:
        """True when `path` is a directory on the host (symlinks followed)."""
        ...

    def put_tree(self, local_dir: PathArg, remote_dir: PathArg) -> str:
        """Copy a local directory tree to the host; return how ("copy", "sftp" or "rsync").

        `remote_dir` becomes a copy of `local_dir`, merged into what is there already:
        missing folders are made, files are written atomically keeping their permission bits,
        symlinks are copied as symlinks, and other special files are skipped.
        """
        ...

    def get_tree(self, remote_dir: PathArg, local_dir: PathArg) -> str:
        """Copy a directory tree from the host, as put_tree does the other way."""
        ...

    def close(self) -> None:
        ...


def check_argv(argv: Sequence[str]) -> list[str]:
    """Return argv as a list of str; refuse a bare string (it would split into characters)."""
    if isinstance(argv, str | bytes):
        raise UsageError("a command must be a list of arguments, not a string",
                         hint=f"got {argv[:40]!r}")
    args = list(argv)
    if not args:
        raise UsageError("cannot run an empty command")
    for arg in args:
        if not isinstance(arg, str):
            raise UsageError(f"command arguments must be strings, got {type(arg).__name__}")
        if "\0" in arg:
            raise UsageError("a command argument contains a NUL byte")
    return args


def shell_join(argv: Sequence[str]) -> str:
    """One shell command line whose words are exactly argv (each element shlex-quoted)."""
    return " ".join(shlex.quote(arg) for arg in check_argv(argv))


def python_argv(script: str, args: Sequence[str], python: str,
                stdin: bytes | None) -> tuple[list[str], bytes]:
    """argv and stdin to run `script`: piped on stdin (`python -`) unless stdin is taken."""
    extra = check_argv(["-", *args])[1:]
    if stdin is None:
        return [python, "-", *extra], script.encode("utf-8")
    return [python, "-c", script, *extra], stdin


def temp_name_for(path: str) -> str:
    """A hidden, unique name in the same directory as `path`, for write-then-rename."""
    head, tail = posixpath.split(path)
    return posixpath.join(head, f".{tail}.{os.getpid()}.{os.urandom(4).hex()}.tmp")

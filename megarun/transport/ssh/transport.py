"""SshTransport: the Transport protocol on an SSH host, over one lazily opened paramiko connection.

What it honours and guarantees:
- ~/.ssh/config (HostName, User, Port, IdentityFile, IdentitiesOnly, UserKnownHostsFile, one
  ProxyJump hop); explicit constructor options override it (ssh_config.py).
- Host keys are checked against known_hosts; an unknown key raises HostKeyUnknown and is added
  only with accept_host_key=True; a changed key raises HostKeyMismatch and is never accepted
  (known_hosts.py).
- Authentication failures are final; transient connection failures are retried with
  exponential backoff, then HostUnreachable (connection.py).
- One connection per transport (keepalive on, reopened if it died between calls), one reused
  SFTP client, at most `max_channels` channels at once (below sshd's MaxSessions of 10).
- argv is joined with shlex.quote on every element: arguments arrive literally.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import posixpath
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import paramiko

from megarun.transport import rsync
from megarun.transport.base import (
    CommandResult,
    PathArg,
    check_argv,
    python_argv,
    shell_join,
)
from megarun.transport.errors import CommandTimeout, HostUnreachable
from megarun.transport.ssh import sftp as sftp_files
from megarun.transport.ssh.channel import (
    TRANSIENT,
    Expired,
    collect_output,
    copy_output,
    exit_status,
    one_line,
)
from megarun.transport.ssh.connection import Connection, is_alive, transport_of
from megarun.transport.ssh.hostspec import HostSpec, parse_host_spec
from megarun.transport.ssh.known_hosts import known_hosts_path
from megarun.transport.ssh.ssh_config import load_ssh_config, resolve_endpoint, resolve_jump

DEFAULT_MAX_CHANNELS = 8
_log = logging.getLogger(__name__)


class SshTransport:
    """Runs commands and moves files on one SSH host over one connection."""

    def __init__(self, host: str | HostSpec, *, site_name: str | None = None,
                 identity_file: PathArg | None = None, jump: str | HostSpec | None = None,
                 known_hosts: PathArg | None = None, ssh_config: PathArg | None = None,
                 accept_host_key: bool = False, allow_agent: bool = True,
                 connect_timeout: float = 10.0, attempts: int = 3, retry_delay: float = 0.2,
                 max_channels: int = DEFAULT_MAX_CHANNELS, keepalive: int = 30) -> None:
        config = load_ssh_config(ssh_config)
        spec = host if isinstance(host, HostSpec) else parse_host_spec(host)
        self.endpoint = resolve_endpoint(spec, config, identity_file)
        self.jump_endpoint = resolve_jump(config, self.endpoint, jump, identity_file)
        self.known_hosts = known_hosts_path(known_hosts, self.endpoint)
        self.site_name = site_name
        self._connection = Connection(
            self.endpoint, self.jump_endpoint, self.known_hosts, site_name,
            accept_host_key=accept_host_key, allow_agent=allow_agent,
            connect_timeout=connect_timeout, attempts=attempts, retry_delay=retry_delay,
            keepalive=keepalive)
        # SFTP holds one slot for good: at least one more is needed for commands.
        self._slots = threading.BoundedSemaphore(max(2, max_channels))
        self._lock = threading.RLock()
        self._sftp_lock = threading.Lock()
        self._sftp: paramiko.SFTPClient | None = None

    # -- description and state --------------------------------------------------------------
    @property
    def connect_attempts(self) -> int:
        """SSH connections tried so far (jump host included): for diagnostics and tests."""
        return self._connection.attempts_made

    @property
    def description(self) -> str:
        return self.endpoint.label

    @property
    def ssh_transport(self) -> paramiko.Transport | None:
        """The current connection's transport (None before the first use or after close)."""
        client = self._connection.client
        return client.get_transport() if client is not None else None

    @property
    def jump_transport(self) -> paramiko.Transport | None:
        client = self._connection.jump_client
        return client.get_transport() if client is not None else None

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], stdin: bytes | None = None,
            timeout: float | None = None) -> CommandResult:
        """Run argv on the host; on timeout the channel is closed and CommandTimeout raised.

        The remote process is not killed on timeout (sshd offers no reliable way): a command
        that must die should carry its own limit (e.g. coreutils `timeout`).
        """
        command = shell_join(argv)
        program = check_argv(argv)[0]
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._session() as channel:
            channel.settimeout(timeout)
            channel.exec_command(command)
            try:
                out, err = collect_output(channel, stdin, deadline)
                code = exit_status(channel, deadline)
            except Expired:
                raise CommandTimeout(
                    f"{program} did not finish within {timeout:g} s on {self.description}",
                    hint="raise the timeout or check the host") from None
            if code is None:
                raise HostUnreachable(f"the connection to {self.description} was lost while "
                                      f"{program} ran")
            return CommandResult(code, out, err)

    def run_python(self, script: str, args: Sequence[str] = (), python: str = "python3",
                   stdin: bytes | None = None, timeout: float | None = None) -> CommandResult:
        """Run `script` with the host's `python`: piped on stdin, or as `-c` if stdin is used."""
        argv, data = python_argv(script, args, python, stdin)
        return self.run(argv, stdin=data, timeout=timeout)

    @contextlib.contextmanager
    def command_channel(self, argv: Sequence[str]) -> Iterator[paramiko.Channel]:
        """The channel of a running command, for a caller that talks with it as it runs."""
        with self._session() as channel:
            channel.exec_command(shell_join(argv))
            yield channel

    def stream(self, argv: Sequence[str], stdout: BinaryIO, stderr: BinaryIO) -> int:
        """Run argv, copying its output to `stdout`/`stderr` as it comes; its exit code."""
        program = check_argv(argv)[0]
        with self.command_channel(argv) as channel:
            channel.shutdown_write()
            copy_output(channel, stdout, stderr)
            code = exit_status(channel, None)
        if code is None:
            raise HostUnreachable(f"the connection to {self.description} was lost while "
                                  f"{program} ran")
        return code

    # -- files (SFTP) --------------------------------------------------------------------------
    def read_bytes(self, path: PathArg) -> bytes:
        buffer = io.BytesIO()
        with self._sftp_session() as sftp:
            sftp.getfo(os.fspath(path), buffer)
        return buffer.getvalue()

    def write_bytes_atomic(self, path: PathArg, data: bytes, mode: int = 0o600) -> None:
        with self._sftp_session() as sftp:
            sftp_files.upload_atomic(sftp, os.fspath(path), [data], mode)

    def put(self, local_path: PathArg, remote_path: PathArg) -> None:
        with self._sftp_session() as sftp:
            sftp_files.put_file(sftp, os.fspath(local_path), os.fspath(remote_path))

    def get(self, remote_path: PathArg, local_path: PathArg) -> None:
        source = os.fspath(remote_path)
        with self._sftp_session() as sftp:
            mode = sftp_files.stat_mode(sftp.stat(source))
            sftp_files.get_file(sftp, source, os.fspath(local_path), mode & 0o777)

    def makedirs(self, path: PathArg, mode: int = 0o700) -> None:
        with self._sftp_session() as sftp:
            for prefix in sftp_files.path_prefixes(os.fspath(path)):
                sftp_files.mkdir_if_missing(sftp, prefix, mode)

    def exists(self, path: PathArg) -> bool:
        with self._sftp_session() as sftp:
            try:
                sftp.lstat(os.fspath(path))
            except FileNotFoundError:
                return False
        return True

    # -- trees (SFTP; rsync for large ones, see megarun/transport/rsync.py) ---------------------
    _remote_has_rsync: bool | None = None  # learnt on first need, per transport

    def is_dir(self, path: PathArg) -> bool:
        with self._sftp_session() as sftp:
            try:
                return stat.S_ISDIR(sftp_files.stat_mode(sftp.stat(os.fspath(path))))
            except FileNotFoundError:
                return False

    def put_tree(self, local_dir: PathArg, remote_dir: PathArg) -> str:
        source, target = os.fspath(local_dir), os.fspath(remote_dir)
        if not stat.S_ISDIR(os.stat(source).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", source)
        parent = posixpath.dirname(target.rstrip("/"))
        if parent:
            self.makedirs(parent)
        if rsync.tree_is_large(source) and self._remote_rsync():
            rsync_target = self._rsync_target()
            if rsync_target is not None and self._rsync(
                    rsync_target, source, rsync_target.remote(target), target):
                return "rsync"
        with self._sftp_session() as sftp:
            sftp_files.put_tree(sftp, source, target)
        return "sftp"

    def get_tree(self, remote_dir: PathArg, local_dir: PathArg) -> str:
        source, target = os.fspath(remote_dir), os.fspath(local_dir)
        rsync_target = self._rsync_target()
        if rsync_target is not None:
            probe = self._probe_tree(source)
            if probe.get("exists") is False:
                raise FileNotFoundError(errno.ENOENT, "no such file", source)
            if probe.get("dir") and probe.get("large") and probe.get("rsync"):
                os.makedirs(target, exist_ok=True)
                if self._rsync(rsync_target, rsync_target.remote(source), target, source):
                    return "rsync"
        with self._sftp_session() as sftp:
            sftp_files.get_tree(sftp, source, target)
        return "sftp"

    def _rsync_target(self) -> rsync.RsyncTarget | None:
        """How rsync reaches this host; None when rsync cannot be used from here."""
        if self.jump_endpoint is not None or rsync.local_rsync() is None:
            return None
        end = self.endpoint
        return rsync.rsync_target(end.user, end.hostname, end.port, end.identity_files,
                                  str(self.known_hosts), self._connection.connect_timeout)

    def _remote_rsync(self) -> bool:
        if rsync.local_rsync() is None:
            return False
        if self._remote_has_rsync is None:
            self._remote_has_rsync = self.run(["rsync", "--version"], timeout=60).ok
        return self._remote_has_rsync

    def _probe_tree(self, path: str) -> dict[str, object]:
        """Facts about a remote folder for choosing rsync; {} when the probe cannot run."""
        result = self.run_python(rsync.REMOTE_PROBE, [path, str(rsync.RSYNC_MIN_FILES),
                                                      str(rsync.RSYNC_MIN_BYTES)], timeout=120)
        try:
            facts: dict[str, object] = json.loads(result.stdout_text) if result.ok else {}
        except ValueError:
            return {}
        self._remote_has_rsync = bool(facts.get("rsync"))
        return facts

    def _rsync(self, target: rsync.RsyncTarget, source: str, destination: str,
               shown: str) -> bool:
        """Run rsync; False (use SFTP) when the connection failed, OSError when a file did."""
        done = rsync.run_rsync(rsync.rsync_argv(target, source, destination))
        if done.returncode == 0:
            return True
        reason = rsync.error_line(done.stderr)
        if done.returncode in rsync.CONNECTION_CODES:
            _log.warning("rsync to %s failed (exit %d: %s); copying over SFTP instead",
                         self.description, done.returncode, reason)
            return False
        raise OSError(errno.EIO, f"rsync failed (exit {done.returncode}): {reason}", shown)

    # -- closing ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close SFTP, then the connection, then the jump host's connection."""
        with self._lock:
            self._close_sftp()
            self._connection.close()

    # -- channels ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _session(self) -> Iterator[paramiko.Channel]:
        with self._slots:
            channel = self._open_session()
            try:
                yield channel
            finally:
                channel.close()

    def _open_session(self) -> paramiko.Channel:
        client, timeout = self._ensure_client(), self._connection.connect_timeout
        try:
            return transport_of(client).open_session(timeout=timeout)
        except TRANSIENT as exc:
            if is_alive(client):
                raise HostUnreachable(f"cannot open a session on {self.description}: "
                                      f"{one_line(exc)}") from None
        # The connection died under us: reopen it once.
        return transport_of(self._ensure_client()).open_session(timeout=timeout)

    @contextlib.contextmanager
    def _sftp_session(self) -> Iterator[paramiko.SFTPClient]:
        sftp = self._ensure_sftp()
        with self._sftp_lock:
            yield sftp

    def _ensure_sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is not None and sftp_files.sftp_alive(self._sftp):
                return self._sftp
            self._close_sftp()
        # The SFTP channel holds one slot for its whole life; wait for it outside the lock.
        self._slots.acquire()
        try:
            with self._lock:
                if self._sftp is not None and sftp_files.sftp_alive(self._sftp):
                    self._slots.release()  # another thread opened it meanwhile
                    return self._sftp
                self._sftp = self._open_sftp()
                return self._sftp
        except BaseException:
            self._slots.release()
            raise

    def _open_sftp(self) -> paramiko.SFTPClient:
        client = self._ensure_client()
        try:
            return client.open_sftp()
        except TRANSIENT as exc:
            if is_alive(client):
                raise HostUnreachable(f"cannot start SFTP on {self.description}: "
                                      f"{one_line(exc)}") from None
        return self._ensure_client().open_sftp()

    def _close_sftp(self) -> None:
        if self._sftp is None:
            return
        with contextlib.suppress(*TRANSIENT):
            self._sftp.close()
        self._sftp = None
        self._slots.release()

    def _ensure_client(self) -> paramiko.SSHClient:
        with self._lock:
            if self._connection.dropped():
                self._close_sftp()  # it went down with the connection
            return self._connection.open_client()

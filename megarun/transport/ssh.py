"""SshTransport: the Transport protocol on an SSH host, over one lazily opened paramiko connection.

What it honours and guarantees:
- ~/.ssh/config (HostName, User, Port, IdentityFile, IdentitiesOnly, UserKnownHostsFile, one
  ProxyJump hop); explicit constructor options override it.
- Host keys are checked against known_hosts; an unknown key raises HostKeyUnknown and is added
  only with accept_host_key=True; a changed key raises HostKeyMismatch and is never accepted.
- Authentication failures are final; transient connection failures are retried with
  exponential backoff, then HostUnreachable.
- One connection per transport (keepalive on, reopened if it died between calls), one reused
  SFTP client, at most `max_channels` channels at once (below sshd's MaxSessions of 10).
- argv is joined with shlex.quote on every element: arguments arrive literally.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import getpass
import io
import json
import logging
import os
import posixpath
import re
import select
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn, TypeVar, cast

import paramiko

from megarun.agent.private import make_private_dirs
from megarun.core.files import atomic_writer
from megarun.errors import ConfigError, EnvironmentProblem, UsageError
from megarun.transport import rsync
from megarun.transport.base import (
    CommandResult,
    PathArg,
    Transport,
    check_argv,
    python_argv,
    shell_join,
    temp_name_for,
)
from megarun.transport.errors import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    HostUnreachable,
    SshError,
)

DEFAULT_PORT = 22
DEFAULT_MAX_CHANNELS = 8
_CHUNK = 1 << 20
# Failures worth another try: refused, reset, timeout, DNS, a dropped handshake.
_TRANSIENT = (OSError, EOFError, paramiko.SSHException)
_SHELL_META = set(" \t\n\r;&|$`'\"<>(){}[]*?!~#\\=%^,")
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+\Z")
_log = logging.getLogger(__name__)


# -- host specs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostSpec:
    """`[user@]host[:port]` as the user wrote it; unset parts come from ~/.ssh/config."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{_bracketed(self.host)}{port}"


def parse_host_spec(spec: str) -> HostSpec:
    """Parse `[user@]host[:port]` (optionally `ssh://...`, IPv6 as `[addr]`); UsageError if bad."""
    text = spec[len("ssh://"):] if spec.startswith("ssh://") else spec
    if not text:
        raise _bad_spec(spec, "it is empty")
    user, at, hostport = text.rpartition("@")
    if at and not user:
        raise _bad_spec(spec, "the user before '@' is empty")
    host, port_text = _split_host_port(spec, hostport)
    if at:
        _check_name(spec, "user", user)
    if not _IPV6_RE.match(host) or ":" not in host:
        _check_name(spec, "host", host)
    return HostSpec(host=host, user=user or None, port=_parse_port(spec, port_text))


def _split_host_port(spec: str, hostport: str) -> tuple[str, str | None]:
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket or ":" not in host or not _IPV6_RE.match(host):
            raise _bad_spec(spec, "a bracketed address must be an IPv6 address like [::1]")
        if rest and not rest.startswith(":"):
            raise _bad_spec(spec, f"unexpected {rest!r} after the address")
        return host, rest[1:] if rest else None
    host, colon, port = hostport.partition(":")
    if not host:
        raise _bad_spec(spec, "the host is empty")
    return host, port if colon else None


def _parse_port(spec: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text:
        raise _bad_spec(spec, "the port after ':' is empty")
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _bad_spec(spec, f"the port {text!r} is not a number from 1 to 65535")
    return int(text)


def _check_name(spec: str, what: str, name: str) -> None:
    if _NAME_RE.match(name):
        return
    meta = sorted({char for char in name if char in _SHELL_META})
    if meta:
        shown = " ".join(repr(char) for char in meta)
        raise _bad_spec(spec, f"the {what} contains shell metacharacters: {shown}")
    if name.startswith("-"):
        raise _bad_spec(spec, f"the {what} must not start with '-'")
    raise _bad_spec(spec, f"the {what} {name!r} may only contain letters, digits, '.', '_', '-'")


def _bad_spec(spec: str, reason: str) -> UsageError:
    return UsageError(f"invalid host {spec!r}: {reason}", hint="expected [user@]host[:port]")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -- resolution through ~/.ssh/config ------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    """A host resolved through ssh config: where to connect, as whom, with which keys."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    proxy_jump: str | None
    known_hosts: str | None

    @property
    def label(self) -> str:
        return f"{self.user}@{_bracketed(self.hostname)}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name of this host in known_hosts: `host`, or `[host]:port` off port 22."""
        if self.port == DEFAULT_PORT:
            return self.hostname
        return f"[{self.hostname}]:{self.port}"


def load_ssh_config(path: PathArg | None) -> paramiko.SSHConfig:
    """The ssh config at `path` (default ~/.ssh/config); an empty one if the file is absent."""
    chosen = Path(path) if path is not None else Path.home() / ".ssh" / "config"
    if not chosen.is_file():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(chosen))
    except (paramiko.ssh_exception.ConfigParseError, ValueError) as exc:
        raise ConfigError(f"cannot parse ssh config {chosen}: {exc}") from None


def resolve_endpoint(spec: HostSpec, config: paramiko.SSHConfig,
                     identity_file: PathArg | None = None) -> Endpoint:
    """Fill the parts `spec` leaves open from `config`; an explicit identity file wins."""
    found = config.lookup(spec.host)
    identities = ((os.fspath(identity_file),) if identity_file is not None
                  else tuple(found.get("identityfile", [])))
    known_hosts = found.get("userknownhostsfile")
    return Endpoint(
        alias=spec.host,
        hostname=found.get("hostname", spec.host),
        port=spec.port or _config_port(spec.host, found.get("port")),
        user=spec.user or found.get("user") or getpass.getuser(),
        identity_files=tuple(os.path.expanduser(path) for path in identities),
        identities_only=found.get("identitiesonly", "no").lower() == "yes",
        proxy_jump=_config_jump(spec.host, found.get("proxyjump")),
        known_hosts=os.path.expanduser(known_hosts.split()[0]) if known_hosts else None,
    )


def _config_port(alias: str, value: str | None) -> int:
    if value is None:
        return DEFAULT_PORT
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ConfigError(f"ssh config: Port {value!r} of host {alias!r} is not a valid port")
    return int(value)


def _config_jump(alias: str, value: str | None) -> str | None:
    if value is None or value.lower() == "none":
        return None
    if "," in value:
        raise ConfigError(f"ssh config: ProxyJump of host {alias!r} has several hops ({value}); "
                          "megarun supports one")
    return value


# -- known_hosts ---------------------------------------------------------------------------------
def append_known_host(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append `name keytype base64` to known_hosts, creating it (0600, dir 0700) if needed."""
    make_private_dirs(str(path.parent))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as handle:
        prefix = b"\n" if handle.tell() > 0 and not _ends_with_newline(path) else b""
        handle.write(prefix + f"{name} {key.get_name()} {key.get_base64()}\n".encode())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def load_known_hosts(keys: paramiko.HostKeys, path: Path) -> None:
    """Add the entries of a known_hosts file, skipping lines paramiko cannot read (as ssh does)."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "@")):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError):
            continue
        if entry is not None and entry.key is not None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)


class _UnknownHostKeyRejected(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, raising a HostKeyUnknown that says how to accept the key."""

    def __init__(self, known_hosts: Path, site_name: str | None) -> None:
        self._known_hosts = known_hosts
        self._site_name = site_name

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> NoReturn:
        raise HostKeyUnknown(hostname, key.get_name(), key.fingerprint,
                             str(self._known_hosts), self._site_name)


class _UnknownHostKeyRecorded(paramiko.MissingHostKeyPolicy):
    """Used only when the user asked to accept a host key: append it to known_hosts."""

    def __init__(self, known_hosts: Path) -> None:
        self._known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        append_known_host(self._known_hosts, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)


# -- the transport --------------------------------------------------------------------------------
class SshTransport:
    """Runs commands and moves files on one SSH host over one pooled connection."""

    def __init__(self, host: str | HostSpec, *, site_name: str | None = None,
                 identity_file: PathArg | None = None, jump: str | HostSpec | None = None,
                 known_hosts: PathArg | None = None, ssh_config: PathArg | None = None,
                 accept_host_key: bool = False, allow_agent: bool = True,
                 connect_timeout: float = 10.0, attempts: int = 3, retry_delay: float = 0.2,
                 max_channels: int = DEFAULT_MAX_CHANNELS, keepalive: int = 30) -> None:
        config = load_ssh_config(ssh_config)
        spec = host if isinstance(host, HostSpec) else parse_host_spec(host)
        self.endpoint = resolve_endpoint(spec, config, identity_file)
        self.jump_endpoint = self._resolve_jump(config, jump, identity_file)
        self.known_hosts = _known_hosts_path(known_hosts, self.endpoint)
        self.site_name = site_name
        self._accept_host_key = accept_host_key
        self._allow_agent = allow_agent
        self._connect_timeout = connect_timeout
        self._attempts = max(1, attempts)
        self._retry_delay = retry_delay
        self._keepalive = keepalive
        # SFTP holds one slot for good: at least one more is needed for commands.
        self._slots = threading.BoundedSemaphore(max(2, max_channels))
        self._lock = threading.RLock()
        self._sftp_lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._jump_client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self.connect_attempts = 0
        """SSH connections tried so far (jump host included): for diagnostics and tests."""

    def _resolve_jump(self, config: paramiko.SSHConfig, jump: str | HostSpec | None,
                      identity_file: PathArg | None) -> Endpoint | None:
        if jump is None and self.endpoint.proxy_jump is None:
            return None
        chosen = jump if jump is not None else cast(str, self.endpoint.proxy_jump)
        spec = chosen if isinstance(chosen, HostSpec) else parse_host_spec(chosen)
        endpoint = resolve_endpoint(spec, config)
        if endpoint.proxy_jump is not None:
            raise ConfigError(f"jump host {spec} has a ProxyJump of its own; megarun "
                              "supports one hop")
        if not endpoint.identity_files and identity_file is not None:
            endpoint = _with_identity(endpoint, os.fspath(identity_file))
        return endpoint

    # -- description and state --------------------------------------------------------------
    @property
    def description(self) -> str:
        return self.endpoint.label

    @property
    def ssh_transport(self) -> paramiko.Transport | None:
        """The current connection's transport (None before the first use or after close)."""
        return self._client.get_transport() if self._client is not None else None

    @property
    def jump_transport(self) -> paramiko.Transport | None:
        return self._jump_client.get_transport() if self._jump_client is not None else None

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
                out, err = _collect_output(channel, stdin, deadline)
                code = _exit_status(channel, deadline)
            except _Expired:
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
            while True:
                _pump(channel, stdout, stderr)
                if _drained(channel):
                    break
                select.select([channel], [], [], 1.0)
            code = _exit_status(channel, None)
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
            _upload_atomic(sftp, os.fspath(path), [data], mode)

    def put(self, local_path: PathArg, remote_path: PathArg) -> None:
        mode = os.stat(local_path).st_mode & 0o777
        with open(local_path, "rb") as handle, self._sftp_session() as sftp:
            _upload_atomic(sftp, os.fspath(remote_path),
                           iter(lambda: handle.read(_CHUNK), b""), mode)

    def get(self, remote_path: PathArg, local_path: PathArg) -> None:
        with self._sftp_session() as sftp:
            mode = _stat_mode(sftp.stat(os.fspath(remote_path)))
            _sftp_get_file(sftp, os.fspath(remote_path), os.fspath(local_path), mode & 0o777)

    def makedirs(self, path: PathArg, mode: int = 0o700) -> None:
        with self._sftp_session() as sftp:
            for prefix in _path_prefixes(os.fspath(path)):
                _mkdir_if_missing(sftp, prefix, mode)

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
                return stat.S_ISDIR(_stat_mode(sftp.stat(os.fspath(path))))
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
            _sftp_put_tree(sftp, source, target)
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
            _sftp_get_tree(sftp, source, target)
        return "sftp"

    def _rsync_target(self) -> rsync.RsyncTarget | None:
        """How rsync reaches this host; None when rsync cannot be used from here."""
        if self.jump_endpoint is not None or rsync.local_rsync() is None:
            return None
        end = self.endpoint
        return rsync.rsync_target(end.user, end.hostname, end.port, end.identity_files,
                                  str(self.known_hosts), self._connect_timeout)

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
            for client in (self._client, self._jump_client):
                if client is not None:
                    client.close()
            self._client = None
            self._jump_client = None

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
        client = self._ensure_client()
        try:
            return _transport(client).open_session(timeout=self._connect_timeout)
        except _TRANSIENT as exc:
            if _is_alive(client):
                raise HostUnreachable(f"cannot open a session on {self.description}: "
                                      f"{_one_line(exc)}") from None
        # The connection died under us: reopen it once.
        return _transport(self._ensure_client()).open_session(timeout=self._connect_timeout)

    @contextlib.contextmanager
    def _sftp_session(self) -> Iterator[paramiko.SFTPClient]:
        sftp = self._ensure_sftp()
        with self._sftp_lock:
            yield sftp

    def _ensure_sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is not None and _sftp_alive(self._sftp):
                return self._sftp
            self._close_sftp()
        # The SFTP channel holds one slot for its whole life; wait for it outside the lock.
        self._slots.acquire()
        try:
            with self._lock:
                if self._sftp is not None and _sftp_alive(self._sftp):
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
        except _TRANSIENT as exc:
            if _is_alive(client):
                raise HostUnreachable(f"cannot start SFTP on {self.description}: "
                                      f"{_one_line(exc)}") from None
        return self._ensure_client().open_sftp()

    def _close_sftp(self) -> None:
        if self._sftp is None:
            return
        with contextlib.suppress(*_TRANSIENT):
            self._sftp.close()
        self._sftp = None
        self._slots.release()

    # -- connecting ------------------------------------------------------------------------------
    def _ensure_client(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None and _is_alive(self._client):
                return self._client
            if self._client is not None:
                self._close_sftp()
                self._client.close()
                self._client = None
            self._client = self._connect_with_retries(self.endpoint, self._connect_target)
            return self._client

    def _connect_target(self) -> paramiko.SSHClient:
        sock = self._jump_channel() if self.jump_endpoint is not None else None
        return self._connect_once(self.endpoint, sock)

    def _jump_channel(self) -> paramiko.Channel:
        jump = cast(Endpoint, self.jump_endpoint)
        if self._jump_client is None or not _is_alive(self._jump_client):
            if self._jump_client is not None:
                self._jump_client.close()
            self._jump_client = None
            self._jump_client = self._connect_with_retries(
                jump, lambda: self._connect_once(jump, None))
        target = (self.endpoint.hostname, self.endpoint.port)
        return _transport(self._jump_client).open_channel(
            "direct-tcpip", target, ("127.0.0.1", 0), timeout=self._connect_timeout)

    def _connect_with_retries(self, endpoint: Endpoint,
                              connect: Callable[[], paramiko.SSHClient]) -> paramiko.SSHClient:
        reason = "no attempt made"
        for attempt in range(1, self._attempts + 1):
            try:
                return connect()
            except _TRANSIENT as exc:
                reason = _one_line(exc)
            if attempt < self._attempts:
                time.sleep(self._retry_delay * 2 ** (attempt - 1))
        raise HostUnreachable(
            f"host unreachable: cannot connect to {endpoint.label} after {self._attempts} "
            f"attempt(s): {reason}",
            hint="check that the host is up, the port is right and the network allows it")

    def _connect_once(self, endpoint: Endpoint, sock: paramiko.Channel | None
                      ) -> paramiko.SSHClient:
        keys = _usable_identity_files(endpoint)
        client = paramiko.SSHClient()
        self._load_known_hosts(client)
        client.set_missing_host_key_policy(self._host_key_policy())
        self.connect_attempts += 1
        try:
            with _closed_on_error(client):
                client.connect(
                    endpoint.hostname, endpoint.port, username=endpoint.user,
                    # paramiko takes a list here; its stubs only say str.
                    key_filename=list(keys) or None,  # type: ignore[arg-type]
                    sock=sock, timeout=self._connect_timeout,
                    banner_timeout=self._connect_timeout, auth_timeout=self._connect_timeout,
                    channel_timeout=self._connect_timeout,
                    allow_agent=self._allow_agent and not endpoint.identities_only,
                    look_for_keys=not keys)
        except paramiko.SSHException as exc:
            raise self._connect_error(endpoint, exc) from None
        _transport(client).set_keepalive(self._keepalive)
        return client

    def _host_key_policy(self) -> paramiko.MissingHostKeyPolicy:
        if self._accept_host_key:
            return _UnknownHostKeyRecorded(self.known_hosts)
        return _UnknownHostKeyRejected(self.known_hosts, self.site_name)

    def _connect_error(self, endpoint: Endpoint, exc: paramiko.SSHException) -> Exception:
        """The megarun error for a failed connect; transient failures stay as they are."""
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyMismatch(
                endpoint.known_hosts_name,
                f"{exc.key.get_name()} {exc.key.fingerprint}",
                f"{exc.expected_key.get_name()} {exc.expected_key.fingerprint}",
                str(self.known_hosts))
        if (isinstance(exc, paramiko.AuthenticationException)
                or "No authentication methods available" in str(exc)):
            return _auth_failed(endpoint, exc)
        return exc

    def _load_known_hosts(self, client: paramiko.SSHClient) -> None:
        if self.known_hosts.is_file():
            load_known_hosts(client.get_host_keys(), self.known_hosts)


@contextlib.contextmanager
def _closed_on_error(client: paramiko.SSHClient) -> Iterator[None]:
    try:
        yield
    except BaseException:
        client.close()
        raise


def _auth_failed(endpoint: Endpoint, exc: BaseException) -> AuthenticationFailed:
    keys = ", ".join(endpoint.identity_files) or "the default keys and the ssh agent"
    hint = "check that the public key is in the host's ~/.ssh/authorized_keys"
    if isinstance(exc, paramiko.PasswordRequiredException):
        hint = "the key is protected by a passphrase: load it into ssh-agent first"
    return AuthenticationFailed(f"{endpoint.label} refused the login with {keys}: "
                                f"{_one_line(exc)}", hint=hint)


def _usable_identity_files(endpoint: Endpoint) -> tuple[str, ...]:
    """The identity files that exist; a missing file named on purpose is an error."""
    usable = tuple(path for path in endpoint.identity_files if os.path.isfile(path))
    if endpoint.identity_files and not usable:
        raise AuthenticationFailed(
            f"no identity file for {endpoint.label} exists: "
            f"{', '.join(endpoint.identity_files)}",
            hint="fix the IdentityFile in ~/.ssh/config or the site's identity_file")
    return usable


def _with_identity(endpoint: Endpoint, identity_file: str) -> Endpoint:
    return Endpoint(endpoint.alias, endpoint.hostname, endpoint.port, endpoint.user,
                    (identity_file,), endpoint.identities_only, endpoint.proxy_jump,
                    endpoint.known_hosts)


def _known_hosts_path(explicit: PathArg | None, endpoint: Endpoint) -> Path:
    if explicit is not None:
        return Path(explicit)
    if endpoint.known_hosts is not None:
        return Path(endpoint.known_hosts)
    return Path.home() / ".ssh" / "known_hosts"


def _transport(client: paramiko.SSHClient) -> paramiko.Transport:
    transport = client.get_transport()
    if transport is None:
        raise HostUnreachable("the SSH connection is closed")
    return transport


def _is_alive(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()


def _sftp_alive(sftp: paramiko.SFTPClient) -> bool:
    channel = sftp.get_channel()
    return (channel is not None and not bool(channel.closed)
            and channel.get_transport().is_active())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).replace("[Errno None] ", "").split()) or type(exc).__name__
    return text[:200]


# -- reading a command's output ------------------------------------------------------------------
class _Expired(Exception):
    """The command's deadline passed."""


def _collect_output(channel: paramiko.Channel, stdin: bytes | None,
                    deadline: float | None) -> tuple[bytes, bytes]:
    """Feed stdin (in a thread: the command may not read it) and read stdout and stderr."""
    _start_stdin(channel, stdin)
    out, err = bytearray(), bytearray()
    while True:
        while channel.recv_ready():
            out += channel.recv(_CHUNK)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(_CHUNK)
        if _drained(channel):
            return bytes(out), bytes(err)
        select.select([channel], [], [], min(_remaining(deadline), 1.0))


def _pump(channel: paramiko.Channel, stdout: BinaryIO, stderr: BinaryIO) -> None:
    """Copy what output has arrived, and flush it (a forwarded command reads as if local)."""
    moved = False
    while channel.recv_ready():
        stdout.write(channel.recv(_CHUNK))
        moved = True
    while channel.recv_stderr_ready():
        stderr.write(channel.recv_stderr(_CHUNK))
        moved = True
    if moved:
        stdout.flush()
        stderr.flush()


def _drained(channel: paramiko.Channel) -> bool:
    finished = bool(channel.eof_received or channel.closed)
    return finished and not channel.recv_ready() and not channel.recv_stderr_ready()


def _exit_status(channel: paramiko.Channel, deadline: float | None) -> int | None:
    """The exit code; 255 if the command died without one (a signal); None if the link died."""
    while not channel.status_event.wait(min(_remaining(deadline), 1.0)):
        pass
    if channel.exit_status >= 0:
        return channel.exit_status
    transport = channel.get_transport()
    return 255 if transport.is_active() else None


def _remaining(deadline: float | None) -> float:
    if deadline is None:
        return 1.0
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Expired
    return left


def _start_stdin(channel: paramiko.Channel, stdin: bytes | None) -> None:
    if not stdin:
        channel.shutdown_write()
        return
    threading.Thread(target=_feed_stdin, args=(channel, stdin), daemon=True,
                     name="megarun-ssh-stdin").start()


def _feed_stdin(channel: paramiko.Channel, data: bytes) -> None:
    # The command may exit without reading its stdin: a failed send is not an error.
    with contextlib.suppress(*_TRANSIENT):
        channel.sendall(data)
        channel.shutdown_write()


# -- SFTP helpers ----------------------------------------------------------------------------------
def _upload_atomic(sftp: paramiko.SFTPClient, path: str, chunks: Iterable[bytes],
                   mode: int) -> None:
    """Write to a hidden temp name (mode set before any data), then rename over `path`."""
    tmp = temp_name_for(path)
    try:
        with sftp.open(tmp, "wx") as handle:
            handle.chmod(mode)
            handle.set_pipelined(True)
            for chunk in chunks:
                handle.write(chunk)
        sftp.posix_rename(tmp, path)
    except BaseException:
        with contextlib.suppress(*_TRANSIENT):
            sftp.remove(tmp)
        raise


def _sftp_put_tree(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
    """Merge a copy of the local folder `source` into the remote folder `target`."""
    _mkdir_if_missing(sftp, target, os.stat(source).st_mode & 0o777)
    with os.scandir(source) as entries:
        for entry in entries:
            destination = posixpath.join(target, entry.name)
            if entry.is_symlink():
                _sftp_replace_symlink(sftp, os.readlink(entry.path), destination)
            elif entry.is_dir(follow_symlinks=False):
                _sftp_put_tree(sftp, entry.path, destination)
            elif entry.is_file(follow_symlinks=False):
                _sftp_put_file(sftp, entry.path, destination)


def _sftp_put_file(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
    with open(source, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode & 0o777
        _upload_atomic(sftp, target, iter(lambda: handle.read(_CHUNK), b""), mode)


def _sftp_replace_symlink(sftp: paramiko.SFTPClient, link_target: str, path: str) -> None:
    tmp = temp_name_for(path)
    # paramiko sends (target, link) in the order OpenSSH's sftp-server expects.
    sftp.symlink(link_target, tmp)
    try:
        sftp.posix_rename(tmp, path)
    except BaseException:
        with contextlib.suppress(*_TRANSIENT):
            sftp.remove(tmp)
        raise


def _sftp_get_tree(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
    """Merge a copy of the remote folder `source` into the local folder `target`."""
    from megarun.transport.local import make_dir, replace_symlink

    mode = _stat_mode(sftp.stat(source))
    if not stat.S_ISDIR(mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", source)
    make_dir(target, mode & 0o777)
    for attrs in sftp.listdir_attr(source):
        name = attrs.filename
        if not name or "/" in name or name in (".", ".."):
            continue  # a sane server never sends these; a path must not leave `target`
        remote, local = posixpath.join(source, name), os.path.join(target, name)
        kind = _stat_mode(attrs)
        if stat.S_ISLNK(kind):
            link = sftp.readlink(remote)
            if link is not None:
                replace_symlink(link, local)
        elif stat.S_ISDIR(kind):
            _sftp_get_tree(sftp, remote, local)
        elif stat.S_ISREG(kind):
            _sftp_get_file(sftp, remote, local, kind & 0o777)


def _sftp_get_file(sftp: paramiko.SFTPClient, source: str, target: str, mode: int) -> None:
    with atomic_writer(Path(target), mode) as handle:
        sftp.getfo(source, handle)


def _path_prefixes(path: str) -> list[str]:
    """"/a/b/c" -> ["/a", "/a/b", "/a/b/c"]; "a/b" -> ["a", "a/b"]."""
    normal = posixpath.normpath(path)
    parts = [part for part in normal.split("/") if part]
    root = "/" if normal.startswith("/") else ""
    return [root + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _mkdir_if_missing(sftp: paramiko.SFTPClient, path: str, mode: int) -> None:
    try:
        if not stat.S_ISDIR(_stat_mode(sftp.stat(path))):
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
            made = stat.S_ISDIR(_stat_mode(sftp.stat(path)))
        except FileNotFoundError:
            made = False
        if not made:
            raise exc from None


def _stat_mode(attrs: paramiko.SFTPAttributes) -> int:
    return attrs.st_mode if attrs.st_mode is not None else 0


# -- one transport per site per process -------------------------------------------------------------
TransportT = TypeVar("TransportT", bound=Transport)
_POOL: dict[str, Transport] = {}
_POOL_LOCK = threading.Lock()


def get_transport(key: str, factory: Callable[[], TransportT]) -> TransportT:
    """The pooled transport for `key` (a site name), made by `factory` on first use."""
    with _POOL_LOCK:
        found = _POOL.get(key)
        if found is None:
            found = factory()
            _POOL[key] = found
        return cast(TransportT, found)


def close_all() -> None:
    """Close every pooled transport (also run at interpreter exit)."""
    with _POOL_LOCK:
        transports = list(_POOL.values())
        _POOL.clear()
    for transport in transports:
        with contextlib.suppress(*_TRANSIENT, EnvironmentProblem):
            transport.close()


atexit.register(close_all)

__all__ = [
    "AuthenticationFailed",
    "Endpoint",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "HostSpec",
    "HostUnreachable",
    "SshError",
    "SshTransport",
    "append_known_host",
    "close_all",
    "get_transport",
    "load_known_hosts",
    "load_ssh_config",
    "parse_host_spec",
    "resolve_endpoint",
]

"""Host key policy: keys are checked against known_hosts; an unknown key is refused (with how
to accept it) unless the user asked to accept it, and a changed key is never accepted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import paramiko

from megarun.agent.private import make_private_dirs
from megarun.transport.base import PathArg
from megarun.transport.errors import HostKeyUnknown
from megarun.transport.ssh.hostspec import Endpoint


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


class UnknownHostKeyRejected(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, raising a HostKeyUnknown that says how to accept the key."""

    def __init__(self, known_hosts: Path, site_name: str | None) -> None:
        self._known_hosts = known_hosts
        self._site_name = site_name

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> NoReturn:
        raise HostKeyUnknown(hostname, key.get_name(), key.fingerprint,
                             str(self._known_hosts), self._site_name)


class UnknownHostKeyRecorded(paramiko.MissingHostKeyPolicy):
    """Used only when the user asked to accept a host key: append it to known_hosts."""

    def __init__(self, known_hosts: Path) -> None:
        self._known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        append_known_host(self._known_hosts, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)


def host_key_policy(known_hosts: Path, accept: bool,
                    site_name: str | None) -> paramiko.MissingHostKeyPolicy:
    """What to do with a host key known_hosts lacks: record it (if asked to) or refuse it."""
    if accept:
        return UnknownHostKeyRecorded(known_hosts)
    return UnknownHostKeyRejected(known_hosts, site_name)


def known_hosts_path(explicit: PathArg | None, endpoint: Endpoint) -> Path:
    """The known_hosts file: the one given, the ssh config's UserKnownHostsFile, or ~/.ssh's."""
    if explicit is not None:
        return Path(explicit)
    if endpoint.known_hosts is not None:
        return Path(endpoint.known_hosts)
    return Path.home() / ".ssh" / "known_hosts"

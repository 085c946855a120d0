"""One paramiko connection to an SSH host, through at most one jump host.

Transient failures (refused, reset, timeout, DNS, a dropped handshake) are retried with
exponential backoff, then HostUnreachable; authentication failures are final; host keys are
checked against known_hosts (known_hosts.py). The connection keeps alive and is reopened when
it died between two uses.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import paramiko

from megarun.transport.errors import AuthenticationFailed, HostKeyMismatch, HostUnreachable
from megarun.transport.ssh.channel import TRANSIENT, one_line
from megarun.transport.ssh.hostspec import Endpoint
from megarun.transport.ssh.known_hosts import host_key_policy, load_known_hosts


class Connection:
    """The SSH client of one host (and of its jump host), opened on demand."""

    def __init__(self, endpoint: Endpoint, jump_endpoint: Endpoint | None, known_hosts: Path,
                 site_name: str | None, *, accept_host_key: bool, allow_agent: bool,
                 connect_timeout: float, attempts: int, retry_delay: float,
                 keepalive: int) -> None:
        self.endpoint = endpoint
        self.jump_endpoint = jump_endpoint
        self.known_hosts = known_hosts
        self.site_name = site_name
        self.connect_timeout = connect_timeout
        self._accept_host_key = accept_host_key
        self._allow_agent = allow_agent
        self._attempts = max(1, attempts)
        self._retry_delay = retry_delay
        self._keepalive = keepalive
        self.client: paramiko.SSHClient | None = None
        self.jump_client: paramiko.SSHClient | None = None
        self.attempts_made = 0
        """SSH connections tried so far (jump host included): for diagnostics and tests."""

    def dropped(self) -> bool:
        """Whether a connection was open and has died since."""
        return self.client is not None and not is_alive(self.client)

    def open_client(self) -> paramiko.SSHClient:
        """The live client, connecting (again) if there is none."""
        if self.client is not None and is_alive(self.client):
            return self.client
        if self.client is not None:
            self.client.close()
            self.client = None
        self.client = self._connect_with_retries(self.endpoint, self._connect_target)
        return self.client

    def close(self) -> None:
        """Close the connection, then the jump host's."""
        for client in (self.client, self.jump_client):
            if client is not None:
                with contextlib.suppress(*TRANSIENT):
                    client.close()
        self.client = None
        self.jump_client = None

    def _connect_target(self) -> paramiko.SSHClient:
        sock = self._jump_channel() if self.jump_endpoint is not None else None
        return self._connect_once(self.endpoint, sock)

    def _jump_channel(self) -> paramiko.Channel:
        jump = cast(Endpoint, self.jump_endpoint)  # only called when there is one
        if self.jump_client is None or not is_alive(self.jump_client):
            if self.jump_client is not None:
                self.jump_client.close()
            self.jump_client = None
            self.jump_client = self._connect_with_retries(
                jump, lambda: self._connect_once(jump, None))
        target = (self.endpoint.hostname, self.endpoint.port)
        return transport_of(self.jump_client).open_channel(
            "direct-tcpip", target, ("127.0.0.1", 0), timeout=self.connect_timeout)

    def _connect_with_retries(self, endpoint: Endpoint,
                              connect: Callable[[], paramiko.SSHClient]) -> paramiko.SSHClient:
        reason = "no attempt made"
        for attempt in range(1, self._attempts + 1):
            try:
                return connect()
            except TRANSIENT as exc:
                reason = one_line(exc)
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
        if self.known_hosts.is_file():
            load_known_hosts(client.get_host_keys(), self.known_hosts)
        client.set_missing_host_key_policy(
            host_key_policy(self.known_hosts, self._accept_host_key, self.site_name))
        self.attempts_made += 1
        try:
            with _closed_on_error(client):
                client.connect(
                    endpoint.hostname, endpoint.port, username=endpoint.user,
                    # paramiko takes a list here; its stubs only say str.
                    key_filename=list(keys) or None,  # type: ignore[arg-type]
                    sock=sock, timeout=self.connect_timeout,
                    banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout,
                    channel_timeout=self.connect_timeout,
                    allow_agent=self._allow_agent and not endpoint.identities_only,
                    look_for_keys=not keys)
        except paramiko.SSHException as exc:
            raise self._connect_error(endpoint, exc) from None
        transport_of(client).set_keepalive(self._keepalive)
        return client

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
                                f"{one_line(exc)}", hint=hint)


def _usable_identity_files(endpoint: Endpoint) -> tuple[str, ...]:
    """The identity files that exist; a missing file named on purpose is an error."""
    usable = tuple(path for path in endpoint.identity_files if os.path.isfile(path))
    if endpoint.identity_files and not usable:
        raise AuthenticationFailed(
            f"no identity file for {endpoint.label} exists: "
            f"{', '.join(endpoint.identity_files)}",
            hint="fix the IdentityFile in ~/.ssh/config or the site's identity_file")
    return usable


def transport_of(client: paramiko.SSHClient) -> paramiko.Transport:
    """The client's paramiko transport; HostUnreachable once the connection is closed."""
    transport = client.get_transport()
    if transport is None:
        raise HostUnreachable("the SSH connection is closed")
    return transport


def is_alive(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()

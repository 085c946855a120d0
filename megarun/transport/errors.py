"""Errors raised by transports: what went wrong with a host, and what the user can do about it.

All are EnvironmentProblem (exit code 3): something outside megarun failed. Messages never hold
secrets (no passphrases, no command arguments beyond the program name).
"""

from __future__ import annotations

from megarun.errors import EnvironmentProblem


class CommandTimeout(EnvironmentProblem):
    """A command did not finish within its timeout."""


class SshError(EnvironmentProblem):
    """Root of the SSH connection problems."""


class HostKeyUnknown(SshError):
    """The host's key is not in known_hosts: the user must check and accept it once."""

    def __init__(self, host: str, key_type: str, fingerprint: str, known_hosts: str,
                 site_name: str | None = None) -> None:
        self.host = host
        self.key_type = key_type
        self.fingerprint = fingerprint
        self.known_hosts = known_hosts
        site = site_name or "SITE"
        super().__init__(
            f"the host key of {host} is not known ({key_type} {fingerprint}; "
            f"not in {known_hosts})",
            hint=f"check the fingerprint with the host's admin, then accept it with: "
                 f"megarun site check {site} --accept-host-key")


class HostKeyMismatch(SshError):
    """The host presented a key different from the one in known_hosts: never accepted."""

    def __init__(self, host: str, offered: str, expected: str, known_hosts: str) -> None:
        self.host = host
        super().__init__(
            f"WARNING: THE HOST KEY OF {host} HAS CHANGED! It offered {offered} but "
            f"{known_hosts} holds {expected}. Someone may be intercepting the connection "
            "(man-in-the-middle), or the host was reinstalled. megarun will not connect",
            hint=f"if the change is expected, remove the old key with: "
                 f"ssh-keygen -R '{host}' -f {known_hosts}; then accept the new one")


class AuthenticationFailed(SshError):
    """The host refused every key offered: retrying would not help."""


class HostUnreachable(SshError):
    """The host could not be reached after the retries."""

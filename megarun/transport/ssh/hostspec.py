"""Where an SSH site is: `[user@]host[:port]` as the user wrote it, and the endpoint it resolves to.

Kept apart from paramiko so that checking a host spec (site add, homehost set-address) does
not load the SSH stack; megarun/transport/ssh/ssh_config.py resolves a spec into an Endpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from megarun.errors import UsageError

DEFAULT_PORT = 22
_SHELL_META = set(" \t\n\r;&|$`'\"<>(){}[]*?!~#\\=%^,")
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+\Z")


@dataclass(frozen=True)
class HostSpec:
    """`[user@]host[:port]` as the user wrote it; unset parts come from ~/.ssh/config."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{bracketed(self.host)}{port}"


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


def bracketed(host: str) -> str:
    """`host`, in brackets when it is an IPv6 address (so a port can follow)."""
    return f"[{host}]" if ":" in host else host


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
        return f"{self.user}@{bracketed(self.hostname)}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name of this host in known_hosts: `host`, or `[host]:port` off port 22."""
        if self.port == DEFAULT_PORT:
            return self.hostname
        return f"[{self.hostname}]:{self.port}"

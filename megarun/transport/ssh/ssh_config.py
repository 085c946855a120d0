"""Resolving a host spec through ~/.ssh/config: HostName, User, Port, IdentityFile,
IdentitiesOnly, UserKnownHostsFile and one ProxyJump hop (explicit options win)."""

from __future__ import annotations

import dataclasses
import getpass
import os
from pathlib import Path

import paramiko

from megarun.errors import ConfigError
from megarun.transport.base import PathArg
from megarun.transport.ssh.hostspec import DEFAULT_PORT, Endpoint, HostSpec, parse_host_spec


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


def resolve_jump(config: paramiko.SSHConfig, endpoint: Endpoint, jump: str | HostSpec | None,
                 identity_file: PathArg | None) -> Endpoint | None:
    """The jump host of `endpoint` (`jump`, else its ProxyJump), or None; one hop only.

    A jump host without keys of its own uses the target's explicit identity file.
    """
    chosen = jump if jump is not None else endpoint.proxy_jump
    if chosen is None:
        return None
    spec = chosen if isinstance(chosen, HostSpec) else parse_host_spec(chosen)
    found = resolve_endpoint(spec, config)
    if found.proxy_jump is not None:
        raise ConfigError(f"jump host {spec} has a ProxyJump of its own; megarun "
                          "supports one hop")
    if not found.identity_files and identity_file is not None:
        found = dataclasses.replace(found, identity_files=(os.fspath(identity_file),))
    return found

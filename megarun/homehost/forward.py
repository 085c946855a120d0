"""Forwarding a command that writes to the home host, over SSH, as if it ran here."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from megarun.core.faults import FAULT_ENV
from megarun.errors import EnvironmentProblem
from megarun.homehost.home import HomeHost
from megarun.transport.errors import SshError

if TYPE_CHECKING:
    from megarun.transport.ssh.transport import SshTransport


class HomeUnreachable(EnvironmentProblem):
    """A command that writes could not be forwarded to the home host."""


def home_transport(home: HomeHost) -> SshTransport:
    """An SSH connection to the home host, with the settings the homehost file records."""
    from megarun.transport.ssh.transport import SshTransport

    return SshTransport(home.address, site_name=None, identity_file=home.ssh.get("identity"),
                       jump=home.ssh.get("jump"), known_hosts=home.ssh.get("known_hosts"))


def remote_argv(home: HomeHost, args: Sequence[str]) -> list[str]:
    """The command line that runs `megarun <args>` on the home host, in the same area.

    A crash-injection setting for tests travels along (`env` sets it there).
    """
    argv = [*home.megarun, "--area", str(home.area), *args]
    fault = os.environ.get(FAULT_ENV)
    return ["env", f"{FAULT_ENV}={fault}", *argv] if fault else argv


def forward(home: HomeHost, args: Sequence[str]) -> int:
    """Run `megarun <args>` on the home host; its output appears here; its exit code."""
    try:
        with home_transport(home) as transport:
            return transport.stream(remote_argv(home, args), sys.stdout.buffer, sys.stderr.buffer)
    except SshError as exc:
        raise HomeUnreachable(
            f"this command writes to the working database, which lives on {home.host}, and "
            f"{home.host} cannot be reached ({exc})",
            f"run it on {home.host}, or try again when {home.address} answers") from None

"""What the CLI does past its command line: forward a writing command to the home host.

Kept apart from megarun.cli.app because it needs the home-host wing (and through it the
database layer): `megarun --help` and shell completion never load this module.
"""

from __future__ import annotations

import sys

from megarun.cli.routing import Invocation
from megarun.config.area import locate_area
from megarun.errors import MegarunError
from megarun.homehost import home as homehost
from megarun.homehost.forward import forward


def forward_if_elsewhere(invocation: Invocation, verbose: bool) -> int | None:
    """Run a command that writes on the area's home host when that is another host; None
    when it runs here (this is the home, or there is no area)."""
    try:
        home = homehost.read_homehost(locate_area(invocation.area))
    except MegarunError:
        return None  # no area here: the command reports that itself
    if home is None or home.host == homehost.this_host():
        return None
    if verbose:
        print(f"megarun: forwarding to the home host {home.host} ({home.address})",
              file=sys.stderr)
    return forward(home, invocation.forwarded)

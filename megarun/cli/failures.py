"""What the CLI does past its command line: forward a writing command to the home host, and
turn a database failure into a megarun error.

Kept apart from megarun.cli.app because both need the database layer (peewee): `megarun
--help` and shell completion never load this module.
"""

from __future__ import annotations

import sqlite3
import sys

from peewee import DatabaseError

from megarun.cli.routing import Invocation
from megarun.config.area import locate_area
from megarun.db.connection import from_outside, translate_operational_error
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


def database_failure(exc: Exception) -> MegarunError | None:
    """The megarun error for a SQLite failure from outside megarun (locked, full, corrupt);
    None for any other exception, a constraint megarun broke included (that is a bug)."""
    if not isinstance(exc, (DatabaseError, sqlite3.DatabaseError)) or not from_outside(exc):
        return None
    return translate_operational_error(exc)



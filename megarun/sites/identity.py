"""What reaching a site needs to know of it, as a type of its own.

The registry (registry.py) makes SiteInfo from the database; reaching a site (connect.py) and
mirroring its spool (remote_spool.py) only need its name, host, work dir and interpreter. They
depend on this protocol, not on the registry, so the registry may build a site's spool from
them without an import cycle.
"""

from __future__ import annotations

from typing import Any, Protocol


class SiteIdentity(Protocol):
    """A site as connect.py and remote_spool.py see it; SiteInfo is one."""

    @property
    def name(self) -> str: ...

    @property
    def scheduler(self) -> str: ...

    @property
    def host(self) -> str | None:
        """`[user@]host[:port]` of an SSH site; None for a site on this machine."""

    @property
    def workdir(self) -> str: ...

    @property
    def settings(self) -> dict[str, Any]: ...

    @property
    def python(self) -> str:
        """The interpreter that runs the agent on the site."""

    @property
    def ssh(self) -> dict[str, str]:
        """identity, jump and known_hosts, when set."""

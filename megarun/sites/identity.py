"""What reaching a site needs to know of it, as a type of its own.

The registry (registry.py) makes SiteInfo from the database; reaching a site (connect.py) and
mirroring its spool (remote_spool.py) only need its name, host, work dir and typed spec. They
depend on this protocol, not on the registry, so the registry may build a site's spool from
them without an import cycle.
"""

from __future__ import annotations

from typing import Protocol

from megarun.sites.spec import SiteSpec


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
    def spec(self) -> SiteSpec:
        """The site's settings, read once into a typed spec (sites/spec.py)."""

"""What the engine works with, handed in by its caller: the database, the area, the site.

The engine never reaches for a Context (the CLI's composition root): a command builds an
AreaScope from its Context once, and a SiteScope for each site it works on, and passes them
in. So every engine function says in its signature what it touches, and a test or a future
Python API can call it with a database and an area of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peewee import SqliteDatabase

from megarun.config.area import Area, LauncherSettings
from megarun.sites.local_spool import LocalSpool
from megarun.sites.registry import SiteInfo


def _nothing() -> None:
    """A home check for callers that never lose the database (tests, one-shot commands)."""


@dataclass(frozen=True)
class AreaScope:
    """The area-wide dependencies: the working database, the area and its run root.

    `check_home` raises when the database moved away (`homehost migrate`) or was found
    damaged; long-running loops call it now and then.
    """

    db: SqliteDatabase
    area: Area
    run_root: Path
    check_home: Callable[[], None] = field(default=_nothing, compare=False)

    @property
    def launcher(self) -> LauncherSettings:
        return self.area.config.launcher

    def on(self, site: SiteInfo, sid: int) -> SiteScope:
        return SiteScope(self, site, sid)


@dataclass(frozen=True)
class SiteScope:
    """One site with the area it belongs to; `sid` is the site's row id."""

    home: AreaScope
    site: SiteInfo
    sid: int

    @property
    def db(self) -> SqliteDatabase:
        return self.home.db

    @property
    def area(self) -> Area:
        return self.home.area

    @property
    def launcher(self) -> LauncherSettings:
        return self.home.area.config.launcher

    @property
    def name(self) -> str:
        return self.site.name

    def spool(self) -> LocalSpool:
        return self.site.spool()

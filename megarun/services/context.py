"""The per-command context: which area, and its database opened once, lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from peewee import SqliteDatabase

from megarun.config.area import Area, locate_area
from megarun.db.connection import open_database


@dataclass
class Context:
    """What a service needs to find the area and its database."""

    area_override: str | None = None
    cwd: Path | None = None
    _area: Area | None = field(default=None, repr=False)
    _db: SqliteDatabase | None = field(default=None, repr=False)

    @property
    def area(self) -> Area:
        if self._area is None:
            self._area = locate_area(self.area_override, self.cwd)
        return self._area

    @property
    def db(self) -> SqliteDatabase:
        if self._db is None:
            self.area.state_dir.mkdir(mode=0o700, exist_ok=True)
            self._db = open_database(self.area.db_path)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

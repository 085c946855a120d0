"""What every page producer of the report reads: the database, the area, the filters given to
`megarun report`, and the last build's manifest with the fingerprints to compare with."""

from __future__ import annotations

from dataclasses import dataclass, field

from peewee import SqliteDatabase

from megarun.config.area import Area
from megarun.report.html.site import Manifest


@dataclass
class ReportInput:
    """What every producer reads: the database, the area, the filters, the last manifest."""

    db: SqliteDatabase
    area: Area
    target: str | None = None  # a glob, as `runs ls --target`
    runname: str | None = None
    old: Manifest = field(default_factory=Manifest)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def unchanged(self, key: str, fingerprint: str) -> bool:
        """Record `fingerprint` for `key`; True when the last build recorded the same."""
        self.fingerprints[key] = fingerprint
        return self.old.fingerprints.get(key) == fingerprint

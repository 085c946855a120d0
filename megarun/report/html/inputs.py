"""What every page producer of the report reads: the database, the area, the filters given to
`megarun report`, and the last build's manifest with the fingerprints to compare with."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from peewee import SqliteDatabase

from megarun.config.area import Area
from megarun.errors import ConfigError
from megarun.report.html.campaign_data import CampaignData
from megarun.report.html.rundata import RunRow, list_runs
from megarun.report.html.site import Manifest
from megarun.suites.stale import read_area_definitions, stale_tests_by_run

#: How many runs of a target its history page shows by default (`megarun report --history`).
HISTORY_RUNS = 20


@dataclass
class ReportInput:
    """What every producer reads: the database, the area, the filters, the last manifest."""

    db: SqliteDatabase
    area: Area
    target: str | None = None  # a glob, as `runs ls --target`
    runname: str | None = None
    old: Manifest = field(default_factory=Manifest)
    fingerprints: dict[str, str] = field(default_factory=dict)
    folder: Path | None = None  # where the report is written: a kept page must still be there
    history: int = HISTORY_RUNS
    _runs: list[RunRow] | None = None
    _stale: dict[int, set[str]] | None = None
    _listed: dict[str, frozenset[str]] = field(default_factory=dict)
    _campaign: CampaignData | None = None

    def unchanged(self, key: str, fingerprint: str) -> bool:
        """Record `fingerprint` for `key`; True when the last build recorded the same."""
        self.fingerprints[key] = fingerprint
        return self.old.fingerprints.get(key) == fingerprint

    def runs(self) -> list[RunRow]:
        """The runs the report shows (the filters'), oldest first; read once per build."""
        if self._runs is None:
            self._runs = list_runs(self.db, self.target, self.runname, self.stale())
        return self._runs

    def campaign(self) -> CampaignData:
        """What the campaign and batch views read (shared by their producers)."""
        if self._campaign is None:
            self._campaign = CampaignData(self.db)
        return self._campaign

    def kept_as_before(self, key: str, fingerprint: str, folder: str) -> list[str] | None:
        """When `fingerprint` is the last build's for `key` and every page the last build
        wrote under `folder`/ is still there: those pages, their own fingerprints (`key`:...)
        carried over as they were. Else None (and nothing carried over)."""
        if not self.unchanged(key, fingerprint):
            return None
        prefix = folder + "/"
        kept = [path for path in self.old.pages if path.startswith(prefix)]
        if not kept or not self.still_there(kept):
            return None
        own = key.split(":", 1)[0] + ":"
        self.fingerprints.update((name, value) for name, value in self.old.fingerprints.items()
                                 if name.startswith(own))
        return kept

    def stale(self) -> dict[int, set[str]]:
        """Per run, the tests whose COMPLETED results are STALE now (their test.toml or the
        variables changed since), as `status` shows them; read once per build. A test.toml
        that cannot be read now leaves the results as recorded."""
        if self._stale is None:
            try:
                definitions = read_area_definitions(
                    self.area.tests_dir, self.area.config.raw, self.area.config.keys,
                    self.area.root / "megarun.toml")
                self._stale = stale_tests_by_run(self.db, definitions)
            except ConfigError:
                self._stale = {}
        return self._stale

    def still_there(self, paths: list[str]) -> bool:
        """True when the last build wrote every page of `paths` and each is still in the
        folder (a page removed by hand is written again, not kept). Each folder is listed
        once per build: a run's 10,000 item pages cost one listing, not 10,000 stats."""
        if not all(path in self.old.pages for path in paths):
            return False
        if self.folder is None:
            return True
        for path in paths:
            folder, _, name = path.rpartition("/")
            if name not in self._listing(folder):
                return False
        return True

    def _listing(self, folder: str) -> frozenset[str]:
        if folder not in self._listed:
            try:
                names = os.listdir(os.path.join(str(self.folder), folder))
            except OSError:  # gone, or not a folder: nothing of it is still there
                names = []
            self._listed[folder] = frozenset(names)
        return self._listed[folder]

"""The per-command context: which area, and its database opened once, lazily.

On the home host the database is the working database, and the mirror is kept fresh while
the command runs and once more when it ends. On any other host it is the mirror, opened
read-only (commands that write are forwarded to the home host before they start: see
megarun.homehost.forward).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peewee import DatabaseError, SqliteDatabase

from megarun.config.area import Area, locate_area
from megarun.core.files import private_dirs
from megarun.db.connection import (
    check_header,
    from_outside,
    open_database,
    open_snapshot,
    translate_operational_error,
)
from megarun.db.fulldb import attach_full
from megarun.db.integrity import DatabaseDamaged
from megarun.errors import EnvironmentProblem, MegarunError
from megarun.homehost import home as homehost
from megarun.homehost import mirror


@dataclass
class Context:
    """What a service needs to find the area and its database."""

    area_override: str | None = None
    cwd: Path | None = None
    on_mirror: Callable[[str, float | None], None] | None = None  # told (host, age) on opening
    read_only: bool = False  # True once the database opened is the mirror
    _area: Area | None = field(default=None, repr=False)
    _db: SqliteDatabase | None = field(default=None, repr=False)
    _home: homehost.HomeHost | None = field(default=None, repr=False)
    _keeper: mirror.MirrorKeeper | None = field(default=None, repr=False)
    _mirror_seen: tuple[int, int, int] | None = field(default=None, repr=False)

    @property
    def area(self) -> Area:
        if self._area is None:
            self._area = locate_area(self.area_override, self.cwd)
        return self._area

    @property
    def home(self) -> homehost.HomeHost:
        """The area's home host (this host becomes it when the area has none yet)."""
        if self._home is None:
            private_dirs(self.area.state_dir)
            self._home = homehost.establish(self.area)
        return self._home

    @property
    def is_home(self) -> bool:
        return self.home.host == homehost.this_host()

    @property
    def db(self) -> SqliteDatabase:
        if self._db is None:
            if self.is_home:
                homehost.check_not_moving(self.area, self.home)
                self._check_db_present()
                private_dirs(self.home.db.parent)
                mirror.verify_unless_kept(self.home.db, self.area.mirror_path)
                self._db = open_database(self.home.db)
                self._keeper = mirror.MirrorKeeper(self.home.db, self.area.mirror_path)
            else:
                self._db = self._open_mirror()
        return self._db

    def _check_db_present(self) -> None:
        """A working database that has had a mirror must exist and be whole: never start an
        empty one in its place (the disk was wiped or filled, a copy was cut short, or the
        homehost file was edited by hand)."""
        db, had_mirror = self.home.db, self._has_mirror()
        if not db.exists() and had_mirror:
            raise EnvironmentProblem(
                f"the working database {db} named in {self.area.homehost_path} is missing",
                "restore the mirror's last snapshot with 'megarun db restore --from-mirror'")
        if db.exists() and db.stat().st_size == 0 and had_mirror:
            raise DatabaseDamaged(
                f"the working database {db} is empty (0 bytes), though it had a mirror",
                "restore the mirror's last snapshot with 'megarun db restore --from-mirror', "
                "which keeps the empty file aside")
        if db.exists():
            check_header(db)

    def _has_mirror(self) -> bool:
        path = self.area.mirror_path
        return path.exists() or mirror.previous_generation(path).exists()

    def _open_mirror(self) -> SqliteDatabase:
        path = self.area.mirror_path
        if not path.exists():
            raise EnvironmentProblem(
                f"no mirror of the working database yet ({path})",
                f"run any megarun command on the home host {self.home.host} to write it")
        self.read_only = True
        self._mirror_seen = _file_identity(path)
        db = open_snapshot(path)
        if self.on_mirror is not None:
            self.on_mirror(self.home.host, self.mirror_age())
        return db

    def reread_mirror(self) -> None:
        """For commands that keep reading (`status --follow`, `watch`): open the mirror again
        when the home host replaced it since it was opened. A snapshot is opened immutable and
        never sees later writes; the working database on the home host needs nothing."""
        if self._db is None or not self.read_only:
            return
        if _file_identity(self.area.mirror_path) == self._mirror_seen:
            return
        self._db.close()
        self._db = None
        self._db = self._open_mirror()

    def mirror_age(self) -> float | None:
        """How old the mirror is, in seconds (None: there is none)."""
        return mirror.age_seconds(self.area.mirror_path)

    def check_still_home(self) -> None:
        """For long-running loops: stop when `homehost migrate` moved the database away, or
        when the working database was found damaged."""
        self.check_database()
        if self._home is not None and self.is_home:
            current = homehost.read_homehost(self.area)
            if current is not None and (current.host != self._home.host
                                        or current.db != self._home.db):
                raise homehost.NotHomeHost(
                    f"the working database moved to {current.host}; this process stops")

    def check_database(self) -> None:
        """For long-running loops: stop when the mirror keeper found the working database
        damaged (it copies nothing from then on)."""
        if self._keeper is not None and self._keeper.damage is not None:
            raise self._keeper.damage

    def include_archive(self) -> bool:
        """`--full-db`: from here on this context's reads include the runs archived in
        completed-runs.db; False when there is no archive yet."""
        return attach_full(self)

    def close(self) -> None:
        """Close the database, then refresh the mirror a last time; a damaged working
        database raises DatabaseDamaged here (the mirror is left as it was)."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.halt()
        if self._db is not None:
            self._db.close()
            self._db = None
        if keeper is not None:
            try:
                keeper.refresh_now()  # after the close: its checkpoint is in the snapshot
            finally:
                keeper.release()


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten (inode, mtime, size); None: absent."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def database_failure(exc: Exception) -> MegarunError | None:
    """The megarun error for a SQLite failure from outside megarun (locked, full, corrupt);
    None for any other exception, a constraint megarun broke included (that is a bug)."""
    if not isinstance(exc, (DatabaseError, sqlite3.DatabaseError)) or not from_outside(exc):
        return None
    return translate_operational_error(exc)

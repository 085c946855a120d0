"""The engine's locks: one launcher per site, one sync per area, one agent per local site.

A launcher holds its site's lock for as long as it runs; `sync` leaves dispatch and agents to
it while it does. The sync lock lives next to the working database (a local disk: file locks
on a network file system are not to be trusted), as only the home host syncs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from megarun.agent.private import make_private_dirs
from megarun.config.area import Area
from megarun.core.filelocks import hold_lock, hold_or_refuse
from megarun.errors import AlreadyRunning


def lock_path(area: Area, site: str) -> Path:
    folder = area.state_dir / "locks"
    make_private_dirs(str(folder))
    return folder / f"launch-{site}.lock"


@contextmanager
def launcher_lock(area: Area, site: str) -> Iterator[bool]:
    """Hold the site's launcher lock if it is free; yields whether it was."""
    with hold_lock(lock_path(area, site)) as held:
        yield held


def launcher_busy(area: Area, site: str) -> bool:
    with launcher_lock(area, site) as free:
        return not free


def launch_locks(area: Area) -> list[Path]:
    """The launcher lock files of the area's sites that ever had a launcher."""
    return list((area.state_dir / "locks").glob("launch-*.lock"))


def sync_lock_path(db_path: Path) -> Path:
    """The area's sync lock file, beside the working database at `db_path`."""
    return db_path.parent / "locks" / "sync.lock"


@contextmanager
def sync_lock(db_path: Path) -> Iterator[None]:
    """Hold the area's sync lock (beside the working database at `db_path`); AlreadyRunning
    when another sync holds it."""
    path = sync_lock_path(db_path)
    make_private_dirs(str(path.parent))
    with hold_or_refuse(path,
                        AlreadyRunning("another megarun sync is running in this area")):
        yield


def agent_lock_path(area: Area, site: str) -> Path:
    """The lock a local site's agent holds for its life (see `site_kinds.LocalCycle`): while it
    is held, nobody starts another agent there."""
    folder = area.state_dir / "locks"
    make_private_dirs(str(folder))
    return folder / f"agent-{site}.lock"

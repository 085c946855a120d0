"""`megarun db check` and `megarun db restore`: how sound an area's database files are, and the
way back from a damaged working database to the mirror's last good snapshot.

Nothing here opens the working database through the Context (which refuses a damaged one):
every file is opened read-only, and a restore never deletes anything. The damaged file (and its
-wal and -shm) is renamed aside, a verified copy of a mirror generation is renamed into place.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from megarun.core.files import private_dirs, replacing
from megarun.db import integrity
from megarun.errors import AlreadyRunning, EnvironmentProblem, UsageError
from megarun.homehost import home as homehost
from megarun.homehost import mirror
from megarun.homehost.context import Context


class Health(str, Enum):
    """What `db check` found of one file."""

    OK = "ok"
    DAMAGED = "damaged"
    MISSING = "missing"
    ELSEWHERE = "elsewhere"  # the working database of another home host: not readable here


@dataclass(frozen=True)
class FileReport:
    """One database file's verdict."""

    role: str  # working, mirror, mirror.1, completed-runs
    path: Path
    health: Health
    problems: list[str] = field(default_factory=list)
    jobs: int | None = None
    size: int | None = None


@dataclass(frozen=True)
class CheckReport:
    """`db check`: every file, and whether the area is sound."""

    files: list[FileReport]
    full: bool

    @property
    def ok(self) -> bool:
        """False when a file is damaged, or the working database is gone while a mirror
        exists (the state `db restore` mends)."""
        by_role = {report.role: report for report in self.files}
        had_mirror = any(by_role[r].health is not Health.MISSING for r in ("mirror", "mirror.1"))
        working_gone = by_role["working"].health is Health.MISSING and had_mirror
        return not working_gone and all(r.health is not Health.DAMAGED for r in self.files)


@dataclass(frozen=True)
class RestoreResult:
    """What `db restore` did."""

    working: Path
    source: Path
    generation: int
    moved_aside: list[Path]
    jobs: int


def mirror_generations(ctx: Context) -> list[Path]:
    """The mirror (generation 0) and the one before it (generation 1)."""
    return [ctx.area.mirror_path, mirror.previous_generation(ctx.area.mirror_path)]


def check_area(ctx: Context, full: bool = False) -> CheckReport:
    """Check the working database (on the home host), both mirror generations and
    completed-runs.db."""
    if ctx.is_home:
        working = check_file("working", ctx.home.db, full, snapshot=False)
    else:
        working = FileReport("working", ctx.home.db, Health.ELSEWHERE,
                             [f"on the home host {ctx.home.host}"])
    current, previous = mirror_generations(ctx)
    return CheckReport([
        working,
        check_file("mirror", current, full, snapshot=True),
        check_file("mirror.1", previous, full, snapshot=True),
        check_file("completed-runs", ctx.area.completed_db_path, full, snapshot=False),
    ], full)


def check_file(role: str, path: Path, full: bool, snapshot: bool) -> FileReport:
    """Header, integrity (`full`: integrity_check), tables, foreign keys and, for a snapshot,
    schema steps. `snapshot`: opened immutable (no journal to read)."""
    if not path.exists():
        return FileReport(role, path, Health.MISSING)
    size = path.stat().st_size
    problem = "it is empty (0 bytes)" if size == 0 else integrity.header_problem(path)
    if problem:
        return FileReport(role, path, Health.DAMAGED, [problem], size=size)
    conn = sqlite3.connect(integrity.read_only_uri(path, immutable=snapshot), uri=True)
    try:
        problems = integrity.file_problems(conn, full)
        if not problems:
            problems = integrity.foreign_key_problems(conn)
        steps = integrity.missing_steps(conn) if snapshot and not problems else []
        if steps:
            problems = [f"schema steps missing: {', '.join(steps)}"]
        jobs = None if problems else _count_jobs(conn)
    except sqlite3.DatabaseError as exc:
        problems, jobs = [str(exc)], None
    finally:
        conn.close()
    return FileReport(role, path, Health.DAMAGED if problems else Health.OK, problems, jobs,
                      size)


def _count_jobs(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM job").fetchone()[0])


# -- restore -------------------------------------------------------------------------------------
def restore_from_mirror(ctx: Context, generation: int | None = None,
                        force: bool = False) -> RestoreResult:
    """Put a verified copy of a mirror generation in place of the working database, which is
    renamed aside (never deleted). Refuses a healthy working database unless `force`."""
    if not ctx.is_home:
        raise homehost.NotHomeHost(f"the working database is on {ctx.home.host}",
                                   "run 'megarun db restore' there")
    working = ctx.home.db
    with _sole_user(working), mirror.refresh_lock(working):
        health = check_file("working", working, False, snapshot=False)
        if health.health is Health.OK and not force:
            raise UsageError(f"the working database {working} is sound: nothing to restore",
                             "--force replaces it with the mirror all the same")
        chosen, source = _choose_generation(ctx, generation)
        with replacing(working, durable=True) as temp:
            _copy_verified(source, temp)
            moved = _move_aside(working)
    conn = sqlite3.connect(integrity.read_only_uri(working, immutable=False), uri=True)
    try:
        jobs = _count_jobs(conn)
    finally:
        conn.close()
    return RestoreResult(working, source, chosen, moved, jobs)


@contextmanager
def _sole_user(working: Path) -> Iterator[None]:
    """No other megarun process may have the working database open while it is replaced
    (each holds the keeper lock shared while it does)."""
    private_dirs(working.parent)
    fd = os.open(working.with_name(working.name + ".keeper.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning("another megarun process has the working database open",
                                 "stop it (launch, sync --loop), then restore") from None
        yield
    finally:
        os.close(fd)


def _choose_generation(ctx: Context, generation: int | None) -> tuple[int, Path]:
    """The asked generation if it is sound; else the newest sound one."""
    paths = mirror_generations(ctx)
    if generation is not None and not 0 <= generation < len(paths):
        raise UsageError(f"--generation {generation}: there are generations 0 (the mirror "
                         f"{paths[0].name}) and 1 ({paths[1].name})")
    verdicts = [integrity.snapshot_problems(path) for path in paths]
    sound = [index for index, problems in enumerate(verdicts) if not problems]
    if generation is not None and generation in sound:
        return generation, paths[generation]
    if generation is None and sound:
        return sound[0], paths[sound[0]]
    asked = [generation] if generation is not None else list(range(len(paths)))
    why = "; ".join(f"{paths[i]}: {verdicts[i][0]}" for i in asked)
    other = [i for i in sound if i not in asked]
    hint = (f"generation {other[0]} is sound: --generation {other[0]}" if other
            else "no mirror generation is sound; restore the working database from a backup")
    raise EnvironmentProblem(f"cannot restore from the mirror ({why})", hint)


def _copy_verified(source: Path, temp: Path) -> None:
    """Copy `source` to `temp` (owner-only), check the copy, switch it to WAL, flush it."""
    with open(source, "rb") as src, open(temp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    problems = integrity.snapshot_problems(temp)
    if problems:
        raise EnvironmentProblem(f"the copy of {source} failed its check ({problems[0]})",
                                 "check the disk holding the working database")
    conn = sqlite3.connect(temp)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())


def _move_aside(working: Path) -> list[Path]:
    """Rename the working database and its -wal and -shm to `<name>.damaged-<time>...`."""
    suffixes = ("", "-wal", "-shm")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    taken = 0
    while any(working.with_name(f"{working.name}.damaged-{stamp}{suffix}").exists()
              for suffix in suffixes):  # a second restore within the second: never overwrite
        taken += 1
        stamp = f"{time.strftime('%Y%m%dT%H%M%S')}.{taken}"
    moved: list[Path] = []
    for suffix in suffixes:
        path = working.with_name(working.name + suffix)
        if path.exists():
            target = working.with_name(f"{working.name}.damaged-{stamp}{suffix}")
            os.replace(path, target)
            moved.append(target)
    return moved

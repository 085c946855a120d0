"""Launch gates: how many READY jobs may start now, and why fewer (or none) do.

Four gates, all from megarun.toml (`[limits]`, `[jobgroups]`): a cap on the area's active jobs,
per-jobgroup caps, free space on the run root's file system, and a user's launch-limiter
script. Active means QUEUED, LAUNCHED, RUNNING or KILLREQ on any site: a job handed to an
agent counts against the caps even before it starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from peewee import SqliteDatabase

from megarun.config.area import LaunchLimits
from megarun.core.quantities import format_size
from megarun.core.states import ACTIVE_STATES, names
from megarun.errors import ConfigError

#: The active states as SQL parameters.
_ACTIVE = names(ACTIVE_STATES)
#: Seconds a free-space reading is reused (statvfs is cheap, but not free on NFS).
DISK_CHECK_SECONDS = 2.0
LIMITER_TIMEOUT = 30.0


@dataclass(frozen=True)
class GateDecision:
    """What a dispatch cycle may do.

    `allowed` is the most jobs that may be dispatched (None: no limit); `group_budget` the
    most per capped jobgroup (a group at 0 is skipped); `held` says why fewer than all READY
    jobs go; `blocking` marks a hold that waiting for running jobs will not lift (a full disk).
    """

    allowed: int | None = None
    group_budget: dict[str, int] = field(default_factory=dict)
    held: str = ""
    blocking: bool = False


def existing_parent(path: Path) -> Path:
    """`path` or its nearest existing ancestor (the run root may not exist yet)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


class LaunchGates:
    """Decides, once per dispatch cycle, how much may be launched (see module docstring)."""

    def __init__(self, limits: LaunchLimits, area_root: Path, run_root: Path,
                 site_name: str) -> None:
        self.limits = limits
        self.area_root = area_root
        self.run_root = run_root
        self.site_name = site_name
        self._disk: tuple[float, int] | None = None
        self._limiter: tuple[float, int | None, str] | None = None
        if limits.launch_limiter:
            check_limiter(limits.launch_limiter, area_root)

    @property
    def active(self) -> bool:
        return self.limits.any

    def decide(self, db: SqliteDatabase, ready: int) -> GateDecision:
        """The gates for the next dispatch, given how many jobs are READY."""
        if not self.limits.any or ready == 0:
            return GateDecision()
        space = self._space_hold()
        if space:
            return GateDecision(allowed=0, held=space, blocking=True)
        allowed: int | None = None
        held = ""
        running = active_jobs(db) if (self.limits.max_concurrent_jobs
                                      or self.limits.launch_limiter) else 0
        if self.limits.max_concurrent_jobs:
            allowed = max(0, self.limits.max_concurrent_jobs - running)
            if allowed < ready:
                held = f"max_concurrent_jobs = {self.limits.max_concurrent_jobs} reached"
        if self.limits.launch_limiter:
            permitted, why = self._ask_limiter(running, ready)
            if permitted is not None and (allowed is None or permitted < allowed):
                allowed, held = permitted, why
        budget = self._group_budget(db)
        if not held and any(v == 0 for v in budget.values()):
            full = sorted(g for g, v in budget.items() if v == 0)
            held = f"jobgroup cap reached: {', '.join(full)}"
        return GateDecision(allowed, budget, held)

    # -- the gates ---------------------------------------------------------------------------
    def spent(self, launched: int) -> None:
        """Count jobs just dispatched against the limiter's last answer ("at most N now")."""
        if self._limiter is None:
            return
        at, permitted, why = self._limiter
        if permitted is not None:
            self._limiter = (at, max(0, permitted - launched), why)

    def _space_hold(self) -> str:
        if not self.limits.minspace:
            return ""
        now = time.monotonic()
        if self._disk is None or now - self._disk[0] > DISK_CHECK_SECONDS:
            self._disk = (now, shutil.disk_usage(existing_parent(self.run_root)).free)
        free = self._disk[1]
        if free >= self.limits.minspace:
            return ""
        return (f"not launching: only {format_size(free)} free under {self.run_root} "
                f"(limits.minspace is {format_size(self.limits.minspace)})")

    def _group_budget(self, db: SqliteDatabase) -> dict[str, int]:
        caps = self.limits.jobgroups
        if not caps:
            return {}
        marks = ",".join("?" * len(caps))
        states = ",".join("?" * len(_ACTIVE))
        counts = dict(db.execute_sql(
            f"SELECT jobgroup, count(*) FROM job WHERE state IN ({states}) "  # noqa: S608
            f"AND jobgroup IN ({marks}) GROUP BY jobgroup", (*_ACTIVE, *caps)).fetchall())
        return {group: max(0, cap - counts.get(group, 0)) for group, cap in caps.items()}

    def _ask_limiter(self, running: int, ready: int) -> tuple[int | None, str]:
        now = time.monotonic()
        if self._limiter is not None and now - self._limiter[0] < self.limits.launch_limiter_interval:
            return self._limiter[1], self._limiter[2]
        permitted, why = run_limiter(self.limits.launch_limiter, self.area_root, {
            "MEGARUN_SITE": self.site_name, "MEGARUN_ACTIVE_JOBS": str(running),
            "MEGARUN_READY_JOBS": str(ready)})
        self._limiter = (now, permitted, why)
        return permitted, why


def active_jobs(db: SqliteDatabase) -> int:
    marks = ",".join("?" * len(_ACTIVE))
    row = db.execute_sql(f"SELECT count(*) FROM job WHERE state IN ({marks})",  # noqa: S608
                         _ACTIVE).fetchone()
    return int(row[0])


def _limiter_program(argv: tuple[str, ...], area_root: Path) -> str:
    program = argv[0]
    if "/" in program:
        path = Path(program).expanduser()
        return str(path if path.is_absolute() else area_root / path)
    return shutil.which(program) or program


def check_limiter(argv: tuple[str, ...], area_root: Path) -> None:
    """Refuse to start with a limiter that cannot run at all."""
    program = _limiter_program(argv, area_root)
    if not (os.path.isfile(program) and os.access(program, os.X_OK)):
        raise ConfigError(f"limits.launch_limiter: {argv[0]!r} is not an executable file "
                          f"(looked for {program})")


def run_limiter(argv: tuple[str, ...], area_root: Path,
                extra_env: dict[str, str]) -> tuple[int | None, str]:
    """Ask the limiter: exit 0 and no output = go; exit 0 and a number N = at most N now;
    any other exit = hold (its last line of output says why)."""
    command = [_limiter_program(argv, area_root), *argv[1:]]
    env = {**os.environ, "MEGARUN_AREA": str(area_root), **extra_env}
    try:
        done = subprocess.run(command, cwd=area_root, env=env, capture_output=True, text=True,
                              timeout=LIMITER_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 0, f"launch limiter took longer than {LIMITER_TIMEOUT:.0f} s; holding"
    except OSError as exc:
        return 0, f"launch limiter could not start: {exc.strerror}; holding"
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        return 0, f"held by the launch limiter: {reason}"
    words = done.stdout.split()
    if not words:
        return None, ""
    try:
        permitted = max(0, int(words[0]))
    except ValueError:
        return 0, f"launch limiter printed {words[0]!r}, not a number of jobs; holding"
    return permitted, f"launch limiter allows {permitted} more now"

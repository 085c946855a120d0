"""The area: a directory with megarun.toml at its root, found by walking up like git."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megarun.config.tomlfile import check_keys, expect_type, load_toml
from megarun.core.quantities import DAY, MAX_AGE, MEBIBYTE, parse_duration, parse_size
from megarun.errors import AreaNotFound, ConfigError

AREA_FILE = "megarun.toml"
STATE_DIR = ".megarun"
ENV_AREA = "MEGARUN_AREA"

_TOP_KEYS = {"name", "keys", "default_site", "launcher", "limits", "default", "targets", "jobgroups",
             "runroot", "matching", "allow-runs", "auto-migrate", "archive"}
_LAUNCHER_KEYS = {"retries", "heartbeat", "dead_after", "kill_grace", "idle_exit"}
_LIMIT_KEYS = {"max_concurrent_jobs", "minspace", "launch_limiter", "launch_limiter_interval"}
_MATCHING_KEYS = {"policy"}
_ARCHIVE_KEYS = {"auto-reduce"}
_AUTO_MIGRATE_KEYS = {"destination", "target", "older-than"}
#: How a job with no site picks one of the sites that satisfy its app's requirements.
MATCHING_POLICIES = ("first", "round-robin", "least-loaded")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class LauncherSettings:
    """How the launcher and the agents behave; every field has a sane default."""

    retries: int = 0
    heartbeat: float = 5.0
    dead_after: float = 60.0
    kill_grace: float = 3.0
    idle_exit: float = 3.0


@dataclass(frozen=True)
class LaunchLimits:
    """Launch gates: what may start now (docs/writing-tests.md, "Launch gates")."""

    max_concurrent_jobs: int = 0  # 0: no cap
    minspace: int = 0  # bytes that must stay free on the run root's file system; 0: no check
    launch_limiter: tuple[str, ...] = ()  # argv of a script asked before launching
    launch_limiter_interval: float = 5.0
    jobgroups: dict[str, int] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return bool(self.max_concurrent_jobs or self.minspace or self.launch_limiter
                    or self.jobgroups)


@dataclass(frozen=True)
class MatchingSettings:
    """Site matching (docs/concepts.md, "Site matching")."""

    policy: str = "first"


@dataclass(frozen=True)
class AutoMigrateRule:
    """One `[[auto-migrate]]` table: sync moves finished runs matching `target` (a glob) and
    idle for `older_than` seconds into the area at `destination` (absolute)."""

    destination: Path
    target: str = "*"
    older_than: float = 30 * 86400.0


@dataclass(frozen=True)
class AreaConfig:
    """The parsed megarun.toml."""

    name: str
    keys: tuple[str, ...] = ()
    default_site: str = "local"
    launcher: LauncherSettings = field(default_factory=LauncherSettings)
    limits: LaunchLimits = field(default_factory=LaunchLimits)
    raw: dict[str, Any] = field(default_factory=dict)
    matching: MatchingSettings = field(default_factory=MatchingSettings)
    allow_runs: bool = True  # `allow-runs = false`: no new runs here (a receiving area)
    auto_migrate: tuple[AutoMigrateRule, ...] = ()
    archive_auto_reduce: float | None = None  # `[archive] auto-reduce`: seconds; None: no rule


@dataclass(frozen=True)
class Area:
    """An area on disk and where megarun keeps its state in it."""

    root: Path
    config: AreaConfig

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def db_path(self) -> Path:
        """The working database's place when the area is on a local disk (see
        megarun.homehost.home, which decides where it really is)."""
        return self.state_dir / "work.db"

    @property
    def mirror_path(self) -> Path:
        """The read-only snapshot every host can read."""
        return self.state_dir / "megarun.db"

    @property
    def completed_db_path(self) -> Path:
        """The completed-runs archive (same schema as the working database)."""
        return self.state_dir / "completed-runs.db"

    @property
    def homehost_path(self) -> Path:
        """Which host is home and where its working database is."""
        return self.state_dir / "homehost"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def sites_dir(self) -> Path:
        return self.state_dir / "sites"

    @property
    def apps_dir(self) -> Path:
        return self.root / "apps"

    @property
    def tests_dir(self) -> Path:
        return self.root / "tests"


def find_area_root(start: Path) -> Path | None:
    """The nearest directory at or above `start` holding megarun.toml."""
    current = start.resolve()
    for candidate in (current, *current.parents):
        if (candidate / AREA_FILE).is_file():
            return candidate
    return None


def locate_area(override: str | None = None, cwd: Path | None = None) -> Area:
    """Find and load the area: --area, then $MEGARUN_AREA, then walking up from the cwd."""
    explicit = override or os.environ.get(ENV_AREA)
    if explicit:
        root = Path(explicit).expanduser().resolve()
        if not (root / AREA_FILE).is_file():
            raise AreaNotFound(f"{root} is not a megarun area (no {AREA_FILE})")
    else:
        start = cwd or Path.cwd()
        found = find_area_root(start)
        if found is None:
            raise AreaNotFound(
                f"no {AREA_FILE} in {start} or any parent",
                "run 'megarun init' to make an area, or pass --area",
            )
        root = found
    return Area(root=root, config=load_area_config(root / AREA_FILE))


def load_area_config(path: Path) -> AreaConfig:
    """Parse and validate megarun.toml."""
    data = load_toml(path)
    origin = str(path)
    check_keys(data, _TOP_KEYS, origin)
    name = expect_type(data.get("name", path.parent.name), str, origin, "name")
    keys = expect_type(data.get("keys", []), list, origin, "keys")
    for key in keys:
        expect_type(key, str, origin, "keys")
        if not _NAME_RE.match(key):
            raise ConfigError(f"{origin}: key name {key!r} must be letters, digits, '_', '.' or '-'")
    default_site = expect_type(data.get("default_site", "local"), str, origin, "default_site")
    launcher = _launcher_settings(data.get("launcher", {}), origin)
    limits = _launch_limits(data.get("limits", {}), data.get("jobgroups", {}), origin)
    matching = _matching_settings(data.get("matching", {}), origin)
    allow_runs = expect_type(data.get("allow-runs", True), bool, origin, "allow-runs")
    rules = _auto_migrate_rules(data.get("auto-migrate", []), path.parent, origin)
    return AreaConfig(name, tuple(keys), default_site, launcher, limits, data, matching,
                      allow_runs=allow_runs, auto_migrate=rules,
                      archive_auto_reduce=_archive_auto_reduce(data.get("archive", {}), origin))


def _archive_auto_reduce(table: Any, origin: str) -> float | None:
    """`[archive] auto-reduce = "30d"`: sync archives finished runs idle that long."""
    expect_type(table, dict, origin, "archive")
    check_keys(table, _ARCHIVE_KEYS, origin, "archive")
    if "auto-reduce" not in table:
        return None
    return parse_duration(table["auto-reduce"], f"{origin}: key 'archive.auto-reduce'", DAY,
                          ConfigError, MAX_AGE)


def _auto_migrate_rules(tables: Any, root: Path, origin: str) -> tuple[AutoMigrateRule, ...]:
    """`[[auto-migrate]]` tables; a relative destination counts from the area's root."""
    expect_type(tables, list, origin, "auto-migrate")
    rules = []
    for number, table in enumerate(tables, 1):
        where = f"auto-migrate #{number}"
        expect_type(table, dict, origin, where)
        check_keys(table, _AUTO_MIGRATE_KEYS, origin, where)
        if "destination" not in table:
            raise ConfigError(f"{origin}: [{where}] needs a 'destination' (the path of an area)")
        destination = Path(expect_type(table["destination"], str, origin, f"{where}.destination"))
        destination = (root / destination.expanduser()).resolve()
        if destination == root.resolve():
            raise ConfigError(f"{origin}: [{where}] destination is this area itself")
        target = expect_type(table.get("target", "*"), str, origin, f"{where}.target")
        seconds = parse_duration(table.get("older-than", "30d"),
                                 f"{origin}: key '{where}.older-than'", DAY, ConfigError, MAX_AGE)
        rules.append(AutoMigrateRule(destination, target or "*", seconds))
    return tuple(rules)


def _matching_settings(table: Any, origin: str) -> MatchingSettings:
    expect_type(table, dict, origin, "matching")
    check_keys(table, _MATCHING_KEYS, origin, "matching")
    policy = expect_type(table.get("policy", "first"), str, origin, "matching.policy")
    if policy not in MATCHING_POLICIES:
        raise ConfigError(f"{origin}: unknown matching policy {policy!r}; valid policies: "
                          f"{', '.join(MATCHING_POLICIES)}")
    return MatchingSettings(policy)


#: Launcher settings that are intervals an agent sleeps or waits on: zero would spin or
#: declare every agent dead at once.
_POSITIVE_LAUNCHER_KEYS = {"heartbeat", "dead_after"}
#: More retries than this is a typo, not a plan (and 1 + retries must fit in 64 bits).
MAX_RETRIES = 1000


def _launcher_settings(table: Any, origin: str) -> LauncherSettings:
    expect_type(table, dict, origin, "launcher")
    check_keys(table, _LAUNCHER_KEYS, origin, "launcher")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "retries":
            number = expect_type(value, int, origin, "launcher.retries")
            if number < 0:
                raise ConfigError(f"{origin}: key 'launcher.retries' must not be negative")
            if number > MAX_RETRIES:
                raise ConfigError(f"{origin}: key 'launcher.retries' must be at most {MAX_RETRIES}")
        else:  # the others are durations: a bare number is seconds
            number = parse_duration(value, f"{origin}: key 'launcher.{key}'", error=ConfigError)
        if key in _POSITIVE_LAUNCHER_KEYS and number == 0:
            raise ConfigError(f"{origin}: key 'launcher.{key}' must be more than 0 seconds")
        values[key] = number
    return LauncherSettings(**values)


def _launch_limits(table: Any, groups: Any, origin: str) -> LaunchLimits:
    expect_type(table, dict, origin, "limits")
    check_keys(table, _LIMIT_KEYS, origin, "limits")
    expect_type(groups, dict, origin, "jobgroups")
    caps = {}
    for group, cap in groups.items():
        if expect_type(cap, int, origin, f"jobgroups.{group}") < 1:
            raise ConfigError(f"{origin}: key 'jobgroups.{group}' must be at least 1")
        caps[group] = cap
    most = expect_type(table.get("max_concurrent_jobs", 0), int, origin,
                       "limits.max_concurrent_jobs")
    if most < 0:
        raise ConfigError(f"{origin}: key 'limits.max_concurrent_jobs' must not be negative")
    interval = parse_duration(table.get("launch_limiter_interval", 5.0),
                              f"{origin}: key 'limits.launch_limiter_interval'", error=ConfigError)
    minspace = parse_size(table.get("minspace", 0), f"{origin}: key 'limits.minspace'", MEBIBYTE,
                          ConfigError)
    return LaunchLimits(most, minspace,
                        _limiter_argv(table.get("launch_limiter"), origin), float(interval), caps)


def _limiter_argv(value: Any, origin: str) -> tuple[str, ...]:
    """The launch limiter: a command line (split like a shell would, never run by one) or a list."""
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(f"{origin}: key 'limits.launch_limiter': {exc}") from None
    else:
        argv = expect_type(value, list, origin, "limits.launch_limiter")
        for part in argv:
            expect_type(part, str, origin, "limits.launch_limiter")
    if not argv:
        raise ConfigError(f"{origin}: key 'limits.launch_limiter' is empty")
    return tuple(argv)


def validate_name(kind: str, name: str) -> str:
    """Names of sites, apps and the like: short, no spaces, no shell metacharacters."""
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"invalid {kind} name {name!r}: use up to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


AREA_TEMPLATE = """\
# megarun area configuration. Every command run below this directory uses this area.
name = "{name}"

# The keys that make up a target: `keys = ["os", "arch"]` -> `--target linux/x86_64`.
keys = {keys}

# Where jobs run when they name no site.
default_site = "local"

[launcher]
# Extra attempts for a job that ends FAIL, TIMEOUT or DEAD.
retries = 0
# Durations (90s, 10m, 1h30m; a bare number is seconds): between agent heartbeats, and
# after which a silent agent is declared dead.
heartbeat = 5
dead_after = 60
# Seconds between SIGTERM and SIGKILL when a job is killed or times out.
kill_grace = 3
# Seconds an agent waits with nothing to do before it exits.
idle_exit = 3
"""

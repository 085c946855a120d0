"""A site's [elastic] table: pilots submitted and released by the backlog, checked on load.

The elastic policy (megarun.engine.elastic) submits pilots while READY jobs wait and cancels
queued ones nobody needs; its settings live in the site's settings like every other key, so
`site add --set elastic.max_batch_jobs=4` and `site set` check them by the same rules. A range
is written `MIN..MAX` (`nodes = "1..8"`, `walltime = "30m..2h"`); a single value is fixed.
Elastic is on when `max_batch_jobs` is more than 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from megarun.config.tomlfile import check_keys, expect_type
from megarun.core.quantities import MINUTE, SECOND, parse_duration
from megarun.errors import ConfigError

#: A pilot with nothing to do for this long exits (seconds), unless the site says otherwise.
DEFAULT_IDLE_EXIT = 120.0
#: The walltime of an elastic pilot when the site names none (minutes).
DEFAULT_WALLTIME = 60.0
_KEYS = {"min_batch_jobs", "max_batch_jobs", "max_queued", "nodes", "walltime", "queue",
         "account", "idle_exit", "submit_every", "backlog_per_node"}
_COUNTS = ("min_batch_jobs", "max_batch_jobs", "max_queued", "backlog_per_node")
#: Large enough for any machine, small enough that no sum of them overflows SQLite's integers.
_MOST = 1_000_000


@dataclass(frozen=True)
class ElasticSpec:
    """The [elastic] table read: counts, the node and walltime ranges (minutes), seconds."""

    min_batch_jobs: int = 0
    max_batch_jobs: int = 0
    max_queued: int = 0  # pilots waiting in the scheduler at once (0: up to max_batch_jobs)
    nodes_min: int = 1
    nodes_max: int = 1
    walltime_min: float = DEFAULT_WALLTIME
    walltime_max: float = DEFAULT_WALLTIME
    queue: str = ""  # "": the site's default_queue
    account: str = ""  # "": the site's account
    idle_exit: float = DEFAULT_IDLE_EXIT
    submit_every: float = 0.0  # at most one elastic submission this often (0: no limit)
    backlog_per_node: int = 0  # READY jobs one requested node is for (0: node.cpus, else 1)

    @property
    def enabled(self) -> bool:
        return self.max_batch_jobs > 0

    @property
    def queued_limit(self) -> int:
        return self.max_queued or self.max_batch_jobs


def read_elastic(table: Any, origin: str) -> ElasticSpec:
    """Check an [elastic] table (ConfigError naming `origin` and the key) and read it."""
    table = expect_type(table, dict, origin, "elastic")
    check_keys(table, _KEYS, origin, "elastic")
    counts = {key: _count(table.get(key, 0), origin, key) for key in _COUNTS}
    if counts["min_batch_jobs"] > counts["max_batch_jobs"]:
        raise ConfigError(f"{origin}: elastic.min_batch_jobs {counts['min_batch_jobs']} is more "
                          f"than elastic.max_batch_jobs {counts['max_batch_jobs']}")
    nodes = _range(table.get("nodes", 1), origin, "nodes", _node_count)
    walltime = _range(table.get("walltime", DEFAULT_WALLTIME), origin, "walltime", _minutes)
    idle = _seconds(table.get("idle_exit", DEFAULT_IDLE_EXIT), origin, "idle_exit")
    if idle <= 0:
        raise ConfigError(f"{origin}: key 'elastic.idle_exit' must be more than 0 seconds")
    return ElasticSpec(
        counts["min_batch_jobs"], counts["max_batch_jobs"], counts["max_queued"],
        int(nodes[0]), int(nodes[1]), walltime[0], walltime[1],
        expect_type(table.get("queue", ""), str, origin, "elastic.queue"),
        expect_type(table.get("account", ""), str, origin, "elastic.account"),
        idle, _seconds(table.get("submit_every", 0), origin, "submit_every"),
        counts["backlog_per_node"])


def check_against_queues(spec: ElasticSpec, queues: dict[str, Any], default_queue: str,
                         origin: str, scheduler: str = "slurm") -> None:
    """Elastic needs a batch scheduler; the elastic queue must be one of the site's, and its
    ranges within that queue's limits (`queues`: name -> config.presets.Queue)."""
    if spec.enabled and scheduler == "local":
        raise ConfigError(f"{origin}: elastic.max_batch_jobs is for sites with a batch scheduler "
                          "(slurm, pbs, lsf, cobalt); this one has none")
    name = spec.queue or default_queue
    if spec.queue and queues and spec.queue not in queues:
        raise ConfigError(f"{origin}: elastic.queue {spec.queue!r} is not one of the queues: "
                          f"{', '.join(queues)}")
    queue = queues.get(name)
    if queue is None or not spec.enabled:
        return
    if spec.nodes_max > queue.max_nodes or spec.nodes_min < queue.min_nodes:
        raise ConfigError(f"{origin}: elastic.nodes {spec.nodes_min}..{spec.nodes_max} is "
                          f"outside queue {name!r}'s {queue.min_nodes}..{queue.max_nodes} nodes")
    if spec.walltime_min > queue.max_walltime:
        raise ConfigError(f"{origin}: elastic.walltime {spec.walltime_min:g} min is more than "
                          f"queue {name!r}'s max_walltime {queue.max_walltime} min")


def _count(value: Any, origin: str, key: str) -> int:
    number = expect_type(value, int, origin, f"elastic.{key}")
    if isinstance(number, bool) or not 0 <= number <= _MOST:
        raise ConfigError(f"{origin}: key 'elastic.{key}' must be a whole number from 0 to "
                          f"{_MOST:,}, got {value!r}")
    return int(number)


def _node_count(value: Any, origin: str, key: str) -> float:
    text = value.strip() if isinstance(value, str) else value
    try:
        number = int(text)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, (bool, float)) or not 1 <= number <= _MOST:
        raise ConfigError(f"{origin}: key 'elastic.{key}' expects a node count from 1 to "
                          f"{_MOST:,} or MIN..MAX, got {value!r}")
    return float(number)


def _minutes(value: Any, origin: str, key: str) -> float:
    seconds = parse_duration(value, f"{origin}: key 'elastic.{key}'", MINUTE, ConfigError)
    if seconds < MINUTE:
        raise ConfigError(f"{origin}: key 'elastic.{key}' must be at least 1 minute, got "
                          f"{value!r}")
    return seconds / MINUTE


def _seconds(value: Any, origin: str, key: str) -> float:
    return parse_duration(value, f"{origin}: key 'elastic.{key}'", SECOND, ConfigError)


def _range(value: Any, origin: str, key: str, read: Any) -> tuple[float, float]:
    """`N` or `MIN..MAX` (a string) read by `read`; MIN must not be more than MAX."""
    if isinstance(value, str) and ".." in value:
        low_text, _sep, high_text = value.partition("..")
        low, high = read(low_text, origin, key), read(high_text, origin, key)
        if low > high:
            raise ConfigError(f"{origin}: key 'elastic.{key}' {value!r}: MIN is more than MAX")
        return low, high
    single = read(value, origin, key)
    return single, single

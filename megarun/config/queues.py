"""A preset's queues and the limits their scheduler enforces, read from [queues.NAME] tables.

Centres tie a job's longest walltime to its size: Frontier's `batch` gives 2 h up to 91 nodes,
6 h up to 183 and 12 h above; Aurora's `prod` takes 256 nodes at least. Checking only a queue's
largest walltime let a small, long job pass megarun and be refused by the scheduler, so a queue
keeps its node-count bins and answers three questions: which walltime a job of N nodes may ask
for (`Queue.max_walltime_for`, read by the elastic policy to size pilots), what is wrong with a
request (`Queue.problem`, one line naming the bin and the limit), and which queue of a site
takes a request its default queue refuses (`pick_queue`: a 1-node job on Aurora gets `debug` or
`capacity`, never `prod`). Per-user and per-project job limits are kept for the same readers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from megarun.config.tomlfile import check_keys, expect_type
from megarun.core.quantities import MINUTE, parse_duration
from megarun.errors import ConfigError

#: Jobs a user (or a project) may have, as the centre documents them; 0: no limit known.
JOB_LIMIT_KEYS = ("max_queued", "max_running", "project_max_queued", "project_max_running")
_QUEUE_KEYS = {"min_nodes", "max_nodes", "max_walltime", "description", "walltime_bins",
               "unverified", "auto", "min_walltime", *JOB_LIMIT_KEYS}
_BIN_KEYS = {"max_nodes", "max_walltime"}
_QUEUE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class WalltimeBin:
    """Jobs of up to `max_nodes` nodes (from the previous bin's end) may run `max_walltime`."""

    max_nodes: int
    max_walltime: int  # minutes


@dataclass(frozen=True)
class Queue:
    """One queue (partition, QOS) of a preset, with its limits."""

    name: str
    max_nodes: int
    max_walltime: int  # minutes: the longest, for the largest jobs
    min_nodes: int = 1
    description: str = ""
    #: Shorter walltimes for smaller jobs, by node count, ascending; above the last bin the
    #: queue's max_walltime applies.
    walltime_bins: tuple[WalltimeBin, ...] = ()
    max_queued: int = 0  # per user, queued or running; 0: no limit known
    max_running: int = 0
    project_max_queued: int = 0
    project_max_running: int = 0
    #: The limits could not be confirmed from the centre's documentation.
    unverified: bool = False
    min_walltime: int = 0  # minutes; 0: none known (ALCF's queues refuse under 5 minutes)
    #: False: never chosen for a request without --queue (a preemptable queue, one that shares
    #: nodes or hands out single GPUs, one for projects out of hours).
    auto: bool = True

    def node_range(self, nodes: int) -> tuple[int, int, int]:
        """The bin a job of `nodes` falls in: its first and last node count and its walltime
        in minutes (the whole queue when it has no bins)."""
        low = self.min_nodes
        for step in self.walltime_bins:
            if nodes <= step.max_nodes:
                return low, step.max_nodes, step.max_walltime
            low = step.max_nodes + 1
        return low, self.max_nodes, self.max_walltime

    def max_walltime_for(self, nodes: int) -> int:
        """The longest walltime, in minutes, a job of `nodes` nodes may ask for here."""
        return self.node_range(nodes)[2]

    def problem(self, nodes: int | None, walltime: float | None) -> str | None:
        """Why the scheduler would refuse this request (nodes, walltime in minutes), as the end
        of a sentence that starts with the queue's name; None when it takes it. A None part is
        not checked."""
        if nodes is not None and nodes > self.max_nodes:
            return f"takes at most {self.max_nodes} nodes, asked for {nodes}"
        if nodes is not None and nodes < self.min_nodes:
            return f"takes at least {self.min_nodes} nodes, asked for {nodes}"
        if walltime is None:
            return None
        if walltime < self.min_walltime:
            return f"takes at least {self.min_walltime} minutes, asked for {walltime:g}"
        low, high, limit = self.node_range(nodes if nodes is not None else self.max_nodes)
        if walltime <= limit:
            return None
        if self.walltime_bins and nodes is not None:
            return (f"allows at most {limit} minutes ({describe_minutes(limit)}) for "
                    f"{low}-{high} nodes, asked for {walltime:g} minutes on {nodes} nodes")
        return f"allows at most {limit} minutes, asked for {walltime:g}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "min_nodes": self.min_nodes, "max_nodes": self.max_nodes,
                "max_walltime": self.max_walltime, "description": self.description,
                "walltime_bins": [{"max_nodes": step.max_nodes,
                                   "max_walltime": step.max_walltime}
                                  for step in self.walltime_bins],
                **{key: getattr(self, key) for key in JOB_LIMIT_KEYS},
                "min_walltime": self.min_walltime, "unverified": self.unverified,
                "auto": self.auto}


def pick_queue(queues: Sequence[Queue], default: str, nodes: int | None,
               walltime: float | None) -> str:
    """The queue a request without --queue goes to: the default one if it takes it, else the
    first queue in the preset's order that does and may be chosen (`auto`), else the default
    (whose check then says why)."""
    by_name = {queue.name: queue for queue in queues}
    if default in by_name and by_name[default].problem(nodes, walltime) is None:
        return default
    for queue in queues:
        if queue.auto and queue.problem(nodes, walltime) is None:
            return queue.name
    return default


def describe_minutes(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" if hours and not rest else f"{minutes} min"


def describe_limits(queue: Queue) -> str:
    """A queue's limits in a few words, for the wizard's list (its description gives the
    steps): nodes, the longest walltime, whether smaller jobs get less, whether unverified."""
    nodes = (f"{queue.min_nodes}-{queue.max_nodes}" if queue.min_nodes > 1
             else f"up to {queue.max_nodes}")
    text = f"{nodes} nodes, {describe_minutes(queue.max_walltime)}"
    if queue.walltime_bins:
        text += f" from {queue.walltime_bins[-1].max_nodes + 1} nodes"
    return text + (" (unverified)" if queue.unverified else "")


def queue_limits(name: str, table: dict[str, Any]) -> Queue:
    """One [queues.NAME] table (checked by validate_queues, walltimes in minutes) as a Queue."""
    bins = tuple(WalltimeBin(int(step["max_nodes"]), int(step["max_walltime"]))
                 for step in table.get("walltime_bins", ()))
    limits = {key: int(table.get(key, 0)) for key in JOB_LIMIT_KEYS}
    return Queue(name, int(table["max_nodes"]), int(table["max_walltime"]),
                 int(table.get("min_nodes", 1)), str(table.get("description", "")), bins,
                 unverified=bool(table.get("unverified", False)),
                 min_walltime=int(table.get("min_walltime", 0)),
                 auto=bool(table.get("auto", True)), **limits)


def validate_queues(table: Any, origin: str) -> tuple[list[Queue], dict[str, Any]]:
    """[queues.NAME] tables: max_nodes and max_walltime required, positive; the queues and the
    table with every walltime in minutes, the unit the schedulers and checks read."""
    queues = expect_type(table, dict, origin, "queues")
    found, in_minutes = [], {}
    for name, limits in queues.items():
        where = f"queues.{name}"
        if not _QUEUE_RE.match(name):
            raise ConfigError(f"{origin}: queue name {name!r} must be up to 64 letters, digits, "
                              "'_', '.', '@' or '-'")
        expect_type(limits, dict, origin, where)
        check_keys(limits, _QUEUE_KEYS, origin, where)
        _check_counts(limits, ("max_nodes", "max_walltime"), origin, where)
        for key in JOB_LIMIT_KEYS:
            if expect_type(limits.get(key, 0), int, origin, f"{where}.{key}") < 0:
                raise ConfigError(f"{origin}: key '{where}.{key}' must not be negative")
        expect_type(limits.get("description", ""), str, origin, f"{where}.description")
        for key, default in (("unverified", False), ("auto", True)):
            expect_type(limits.get(key, default), bool, origin, f"{where}.{key}")
        converted = {**limits, "max_walltime": _minutes(limits["max_walltime"], origin,
                                                        f"{where}.max_walltime")}
        if "min_walltime" in limits:
            converted["min_walltime"] = _minutes(limits["min_walltime"], origin,
                                                 f"{where}.min_walltime")
        converted["walltime_bins"] = _bins(limits.get("walltime_bins", []), origin, where)
        if not converted["walltime_bins"]:
            del converted["walltime_bins"]
        queue = queue_limits(name, converted)
        if queue.min_nodes > queue.max_nodes:
            raise ConfigError(f"{origin}: [{where}] min_nodes {queue.min_nodes} is more than "
                              f"max_nodes {queue.max_nodes}")
        _check_bins(queue, origin, where)
        if queue.min_walltime > queue.max_walltime:
            raise ConfigError(f"{origin}: [{where}] min_walltime {queue.min_walltime} is more "
                              f"than max_walltime {queue.max_walltime}")
        found.append(queue)
        in_minutes[name] = converted
    return found, in_minutes


def _check_counts(limits: dict[str, Any], required: tuple[str, ...], origin: str,
                  where: str) -> None:
    for key in required:
        if key not in limits:
            raise ConfigError(f"{origin}: [{where}] needs {key}")
    for key in ("min_nodes", "max_nodes"):
        if expect_type(limits.get(key, 1), int, origin, f"{where}.{key}") < 1:
            raise ConfigError(f"{origin}: key '{where}.{key}' must be at least 1")


def _bins(value: Any, origin: str, where: str) -> list[dict[str, int]]:
    """walltime_bins = [{ max_nodes = 91, max_walltime = "2h" }, ...] with minutes."""
    steps = []
    for index, step in enumerate(expect_type(value, list, origin, f"{where}.walltime_bins")):
        at = f"{where}.walltime_bins[{index}]"
        expect_type(step, dict, origin, at)
        check_keys(step, _BIN_KEYS, origin, at)
        _check_counts(step, ("max_nodes", "max_walltime"), origin, at)
        steps.append({"max_nodes": int(step["max_nodes"]),
                      "max_walltime": _minutes(step["max_walltime"], origin,
                                               f"{at}.max_walltime")})
    return steps


def _check_bins(queue: Queue, origin: str, where: str) -> None:
    """Bins ascend by node count within the queue's range, none longer than the queue."""
    low = queue.min_nodes
    for index, step in enumerate(queue.walltime_bins):
        at = f"{where}.walltime_bins[{index}]"
        if not low <= step.max_nodes < queue.max_nodes:
            raise ConfigError(f"{origin}: key '{at}.max_nodes' must be from {low} to "
                              f"{queue.max_nodes - 1} (bins ascend inside the queue's nodes)")
        if step.max_walltime > queue.max_walltime:
            raise ConfigError(f"{origin}: key '{at}.max_walltime' is longer than the queue's "
                              f"max_walltime ({queue.max_walltime} minutes)")
        low = step.max_nodes + 1


def _minutes(value: Any, origin: str, key: str) -> int:
    """A walltime in whole minutes: a duration (`12h`, `1d`) or bare minutes."""
    seconds = parse_duration(value, f"{origin}: key '{key}'", MINUTE, ConfigError)
    if seconds < MINUTE or seconds % MINUTE:
        raise ConfigError(f"{origin}: key '{key}' must be whole minutes, at least 1, got "
                          f"{value!r}")
    return int(seconds // MINUTE)

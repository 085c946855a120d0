"""The live check: a site's queues (from its preset) against what its scheduler enforces today.

A preset is checked against a centre's documentation once; queues change. `site check` asks
the scheduler for its queues' limits (schedulers/limits.py), reports per queue where the site's
settings disagree (a queue missing, other max/min nodes, another max walltime), and with
`--fix` writes the observed limits into the site's own settings; the shipped preset stays as
it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from megarun.config.presets import validate_preset
from megarun.config.queues import Queue
from megarun.db.models import Site
from megarun.errors import EnvironmentProblem
from megarun.schedulers.base import SchedulerError
from megarun.schedulers.limits import (
    QOS_ARGV,
    ObservedQueue,
    limits_argv,
    parse_limits,
    parse_sacctmgr_qos,
)
from megarun.sites.connect import transport_for
from megarun.sites.registry import AreaAccess, SiteInfo

LIMITS_TIMEOUT = 60.0
_FIELDS = ("max_nodes", "max_walltime", "min_nodes")


@dataclass
class QueueCheck:
    """One queue: the site's limits, the scheduler's, and each disagreement in words."""

    name: str
    configured: Queue | None  # None: the scheduler has it, the site's settings do not
    observed: ObservedQueue | None  # None: the site lists it, the scheduler does not
    problems: list[str] = field(default_factory=list)


@dataclass
class LiveCheck:
    """What the scheduler said of the site's queues; `error` when it could not be asked."""

    site: str
    source: str = ""  # the command the limits came from
    queues: list[QueueCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be read, and why
    error: str = ""
    fixed: list[str] = field(default_factory=list)  # "queue.key" written by --fix

    @property
    def disagreements(self) -> int:
        return sum(len(queue.problems) for queue in self.queues)


def check_limits(site: SiteInfo) -> LiveCheck:
    """Ask the site's scheduler for its queues and compare them with the site's."""
    report = LiveCheck(site.name)
    argv = limits_argv(site.scheduler)
    if argv is None:
        report.notes.append(f"the {site.scheduler} scheduler has no queues to check")
        return report
    transport = transport_for(site)
    qos = site.spec.queues_are_qos
    if qos:
        argv = list(QOS_ARGV)
    report.source = " ".join(argv)
    answer = transport.run(argv, timeout=LIMITS_TIMEOUT)
    if answer.code != 0:
        reason = _last_line(answer.stderr_text or answer.stdout_text, answer.code)
        report.error = f"{argv[0]} failed: {reason}"
        if qos:
            report.error += " (QOS limits need Slurm accounting, slurmdbd)"
        return report
    try:
        observed = (parse_sacctmgr_qos(answer.stdout_text) if qos
                    else parse_limits(site.scheduler, answer.stdout_text))
    except SchedulerError as exc:
        report.error = str(exc)
        return report
    report.queues = compare(site.spec.queues, observed)
    return report


def compare(configured: Mapping[str, Queue],
            observed: list[ObservedQueue]) -> list[QueueCheck]:
    """One QueueCheck per queue of either side: the site's in their order, then the others."""
    seen = {queue.name: queue for queue in observed}
    checks = []
    for name, queue in configured.items():
        found = seen.get(name)
        check = QueueCheck(name, queue, found)
        if found is None:
            check.problems.append("the scheduler has no such queue")
        else:
            check.problems += _differences(queue, found)
        checks.append(check)
    for name, found in seen.items():
        if name not in configured:
            checks.append(QueueCheck(name, None, found))
    return checks


def _differences(queue: Queue, found: ObservedQueue) -> list[str]:
    problems = []
    if not found.enabled:
        problems.append("the scheduler has it disabled or stopped")
    if found.max_nodes is not None and found.max_nodes != queue.max_nodes:
        problems.append(f"max_nodes: the site says {queue.max_nodes}, the scheduler "
                        f"{found.max_nodes}")
    if found.max_walltime is not None and found.max_walltime != queue.max_walltime:
        problems.append(f"max_walltime: the site says {queue.max_walltime} min, the scheduler "
                        f"{found.max_walltime} min")
    observed_min = found.min_nodes or 1
    if observed_min != queue.min_nodes:
        problems.append(f"min_nodes: the site says {queue.min_nodes}, the scheduler "
                        f"{observed_min}")
    return problems


def fix_limits(ctx: AreaAccess, site: SiteInfo, report: LiveCheck) -> list[str]:
    """Write the observed limits into the site's settings (`queues.NAME.*`); a queue the
    scheduler has and the site lacks is added when its node and time limits are known.
    Returns the keys written; the settings are validated like `site add`'s."""
    if report.error:
        raise EnvironmentProblem(f"site {site.name!r}: nothing to fix: {report.error}")
    with ctx.db.atomic():
        row = Site.get(Site.name == site.name)
        settings: dict[str, Any] = json.loads(row.settings)
        queues: dict[str, Any] = dict(settings.get("queues") or {})
        written = []
        for check in report.queues:
            new = _fixed_table(check, dict(queues.get(check.name) or {}))
            if new is None:
                continue
            old = {"min_nodes": 1, **(queues.get(check.name) or {})}
            written += [f"{check.name}.{key}" for key in _FIELDS if new.get(key) != old.get(key)]
            queues[check.name] = new
        if not written:
            return []
        settings["queues"] = queues
        validate_preset(row.preset, dict(settings), f"site {site.name!r} settings")
        Site.update(settings=json.dumps(settings)).where(Site.id == row.id).execute()
    report.fixed = written
    return written


def _fixed_table(check: QueueCheck, table: dict[str, Any]) -> dict[str, Any] | None:
    found = check.observed
    if found is None or (check.configured is None and not found.enabled):
        return None  # a queue gone (or closed) is reported, neither removed nor added
    max_nodes = found.max_nodes or (check.configured.max_nodes if check.configured
                                    else found.total_nodes)
    max_walltime = found.max_walltime or (check.configured.max_walltime if check.configured
                                          else None)
    if max_nodes is None or max_walltime is None:
        return None  # no limit megarun could write
    table.update(max_nodes=max_nodes, max_walltime=max_walltime,
                 min_nodes=min(found.min_nodes or 1, max_nodes))
    return table


def _last_line(text: str, code: int) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {code}"

"""`site check`'s queue limits: the live check's result as JSON fields and as a table."""

from __future__ import annotations

from typing import Any

from megarun.cli.output import note, print_table, say
from megarun.sites.livecheck import LiveCheck, QueueCheck

_COLUMNS = ["queue", "site", "scheduler", "problems"]


def limits_json(report: LiveCheck) -> dict[str, Any]:
    """The live check's fields of `site check --json` (docs/cli.md lists them)."""
    return {"limits_source": report.source, "limits_error": report.error,
            "limits_notes": list(report.notes), "disagreements": report.disagreements,
            "queues": [_queue_json(check) for check in report.queues],
            "fixed": list(report.fixed)}


def _queue_json(check: QueueCheck) -> dict[str, Any]:
    configured, observed = check.configured, check.observed
    return {
        "name": check.name,
        "in_site": configured is not None, "in_scheduler": observed is not None,
        "site_max_nodes": configured.max_nodes if configured else None,
        "site_max_walltime": configured.max_walltime if configured else None,
        "site_min_nodes": configured.min_nodes if configured else None,
        "scheduler_max_nodes": observed.max_nodes if observed else None,
        "scheduler_max_walltime": observed.max_walltime if observed else None,
        "scheduler_min_nodes": (observed.min_nodes or 1) if observed else None,
        "enabled": observed.enabled if observed else None,
        "problems": list(check.problems),
    }


def print_limits(report: LiveCheck) -> None:
    """One row per queue, then what could not be checked and what --fix wrote."""
    if report.error:
        note(f"queue limits not checked: {report.error}", "yellow")
    for line in report.notes:
        note(line)
    if report.queues:
        rows = [{"queue": check.name, "site": _limits(check.configured),
                 "scheduler": _limits(check.observed),
                 "problems": "; ".join(check.problems) or
                 ("" if check.configured else "not in the site's settings")}
                for check in report.queues]
        print_table(rows, _COLUMNS, title=f"queue limits ({report.source})")
    if report.fixed:
        say(f"written into the site's settings: {', '.join(report.fixed)}")


def _limits(queue: Any) -> str:
    """`min-max nodes, walltime` of a configured or observed queue; '-' when absent."""
    if queue is None:
        return "-"
    return (f"{queue.min_nodes or 1}-{_shown(queue.max_nodes)} nodes, "
            f"{_shown(queue.max_walltime)} min")


def _shown(value: int | None) -> str:
    return "unlimited" if value is None else str(value)

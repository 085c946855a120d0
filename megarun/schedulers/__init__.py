"""Batch schedulers: WHAT to submit (argv builders, script rendering, output parsers).

One small module per scheduler (slurm, pbs, lsf, cobalt, local), registered by name here.
Nothing in this package runs a command: an transport runs the argv these build.
"""

from __future__ import annotations

from typing import Any

from megarun.errors import ConfigError
from megarun.schedulers.base import (
    Allocation,
    BatchState,
    QueueEntry,
    Scheduler,
    SchedulerError,
    ScriptRequest,
    check_allocation,
    check_extras_table,
)
from megarun.schedulers.cobalt import CobaltScheduler
from megarun.schedulers.local import LocalScheduler
from megarun.schedulers.lsf import LsfScheduler
from megarun.schedulers.pbs import PbsScheduler
from megarun.schedulers.render import render_with
from megarun.schedulers.slurm import SlurmScheduler

__all__ = [
    "SCHEDULER_NAMES",
    "Allocation",
    "BatchState",
    "QueueEntry",
    "Scheduler",
    "SchedulerError",
    "ScriptRequest",
    "check_extras",
    "check_pilot",
    "get_scheduler",
    "render_script",
]

_REGISTRY: dict[str, type[Scheduler]] = {
    cls.name: cls
    for cls in (LocalScheduler, SlurmScheduler, PbsScheduler, LsfScheduler, CobaltScheduler)
}
SCHEDULER_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get_scheduler(name: str) -> Scheduler:
    """The scheduler called `name`; an unknown name is a ConfigError listing the valid ones."""
    try:
        return _REGISTRY[name]()
    except (KeyError, TypeError):
        raise ConfigError(f"unknown scheduler {name!r}; valid schedulers: "
                          f"{', '.join(SCHEDULER_NAMES)}") from None


def check_extras(scheduler: str, table: dict[str, Any], origin: str) -> None:
    """Check a table of extra directives (a preset's or site's [<scheduler>] table).

    ConfigError, naming `origin` and the key, on a directive megarun sets itself (the
    scheduler's skip list) or on a value that cannot go on a directive line safely.
    """
    check_extras_table(get_scheduler(scheduler), table, origin)


def check_pilot(scheduler: str, allocation: Allocation, extras: dict[str, Any],
                origin: str) -> None:
    """ConfigError, naming `origin`, when the scheduler cannot ask for the allocation (a node
    shape Cobalt cannot give, a shape clashing with a PBS `select`, ...)."""
    check_allocation(get_scheduler(scheduler), allocation, extras, origin)


def render_script(scheduler: str, req: ScriptRequest) -> str:
    """The batch script for `req` from templates/<scheduler>.sh.j2."""
    return render_with(get_scheduler(scheduler), req)

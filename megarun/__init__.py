"""megarun: run test suites and job campaigns on any machine you can SSH to.

The Python API (docs/python-api.md): `megarun.open_area(path)` returns an Area, whose jobs
and runs are typed records; failures raise the CLI's errors. Those names load on first use,
so that `megarun --help` and the agent import none of the database layer. (The agent's tests
import this file under Python 3.6: it keeps to that Python's syntax.)
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported when the name is first used).
_LAZY = {
    "open_area": "megarun.api.area", "Area": "megarun.api.area",
    "ReadingMirror": "megarun.api.area",
    "Job": "megarun.api.records", "Run": "megarun.api.records", "Item": "megarun.api.records",
    "JobState": "megarun.core.states", "JobStatus": "megarun.core.states",
    "MegarunError": "megarun.errors", "UsageError": "megarun.errors",
    "ConfigError": "megarun.errors", "NotFoundError": "megarun.errors",
    "AreaNotFound": "megarun.errors", "EnvironmentProblem": "megarun.errors",
    "DatabaseBusy": "megarun.errors", "AlreadyRunning": "megarun.errors",
    "WorkFailed": "megarun.errors", "IllegalTransition": "megarun.errors",
    "NotHomeHost": "megarun.homehost.home",
}

__all__ = [
    "AlreadyRunning", "Area", "AreaNotFound", "ConfigError", "DatabaseBusy",
    "EnvironmentProblem", "IllegalTransition", "Item", "Job", "JobState", "JobStatus",
    "MegarunError", "NotFoundError", "NotHomeHost", "ReadingMirror", "Run", "UsageError",
    "WorkFailed", "__version__", "open_area",
]

if TYPE_CHECKING:
    from megarun.api.area import Area, ReadingMirror, open_area
    from megarun.api.records import Item, Job, Run
    from megarun.core.states import JobState, JobStatus
    from megarun.errors import (
        AlreadyRunning,
        AreaNotFound,
        ConfigError,
        DatabaseBusy,
        EnvironmentProblem,
        IllegalTransition,
        MegarunError,
        NotFoundError,
        UsageError,
        WorkFailed,
    )
    from megarun.homehost.home import NotHomeHost


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'megarun' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__() -> "list[str]":
    return sorted(__all__)

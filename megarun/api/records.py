"""What the Python API returns: frozen, typed records of jobs, runs and their items.

The wings hand out rows as the CLI prints them (TypedDicts of epoch seconds and state names);
a notebook wants typed values instead: states and statuses as the enums of
megarun.core.states, times as timezone-aware UTC datetimes. These records are made from the
very rows the CLI prints, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from megarun.api.frames import frame
from megarun.campaign.query import JobDetail, JobListing
from megarun.core.states import JobState, JobStatus
from megarun.suites.run_report import ItemStatus, RunSummary


def utc(epoch: float | None) -> datetime | None:
    """Epoch seconds as a timezone-aware UTC datetime (None stays None)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc)


class JobSource(Protocol):
    """Where a Job reads its logs from (the Area it came from)."""

    def job_logs(self, job_id: int, step: str | None = None, tail: int | None = None) -> str:
        ...


class RunSource(Protocol):
    """Where a Run reads its items from (the Area it came from)."""

    def run_items(self, target: str, runname: str) -> list[Item]:
        ...


@dataclass(frozen=True)
class Job:
    """One job, as `megarun job ls --json` lists it (and its parameters)."""

    id: int
    name: str
    app: str  # the app of a campaign job; "" for a test-suite job (see `test`)
    site: str | None  # None: not matched to a site yet
    state: JobState
    status: JobStatus
    attempt: int
    exit_code: int | None
    tags: Mapping[str, str]
    params: Mapping[str, Any]
    created: datetime
    started: datetime | None
    ended: datetime | None
    message: str
    run: str | None  # TARGET/RUNNAME of a test-suite job
    test: str | None
    item: str | None
    _source: JobSource | None = field(default=None, repr=False, compare=False)

    def logs(self, step: str | None = None, tail: int | None = None) -> str:
        """The job's logs as `megarun job logs` prints them: each step's stdout, then its
        stderr, each after a `==> name <==` line; only `step`'s with a step, only the last
        `tail` lines of each with a tail (read over SSH for a job of an SSH site). The text is
        held in memory: give `tail` for big logs."""
        if self._source is None:
            raise ValueError(f"job {self.id} was not read from an area")
        return self._source.job_logs(self.id, step, tail)

    def as_dict(self) -> dict[str, Any]:
        """The fields, for a table row (pandas)."""
        return {name: getattr(self, name) for name in JOB_FIELDS}

    def __hash__(self) -> int:
        # tags and params are dicts: a job is known by its id (sets, dict keys)
        return hash((Job, self.id))


#: The public fields of a Job, in order (the columns of a job frame).
JOB_FIELDS = tuple(name for name in Job.__dataclass_fields__ if not name.startswith("_"))


def job_from_listing(row: JobListing, params: Mapping[str, Any],
                     source: JobSource | None) -> Job:
    """A Job from a `job ls` row and its parameters."""
    return Job(id=row["id"], name=row["name"], app=row["app"], site=row["site"],
               state=JobState(row["state"]), status=JobStatus(row["status"]),
               attempt=row["attempt"], exit_code=row["exit_code"], tags=row["tags"],
               params=params, created=_created(row["created"]), started=utc(row["started"]),
               ended=utc(row["ended"]), message=row["message"], run=row["run"],
               test=row["test"], item=row["item"], _source=source)


def job_from_detail(detail: JobDetail, run: str | None, source: JobSource | None) -> Job:
    """A Job from `job show`'s record of it."""
    return Job(id=detail["id"], name=detail["name"], app=detail["app"], site=detail["site"],
               state=JobState(detail["state"]), status=JobStatus(detail["status"]),
               attempt=detail["attempt"], exit_code=detail["exit_code"], tags=detail["tags"],
               params=detail["params"], created=_created(detail["created"]),
               started=utc(detail["started"]), ended=utc(detail["ended"]),
               message=detail["message"], run=run, test=detail["test"],
               item=detail["item"] if run is not None else None, _source=source)


def _created(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


@dataclass(frozen=True)
class Item:
    """One item of a test-suite run: a job of one test for one item (item "" for a test
    without items), as `megarun status` shows it."""

    id: int
    test: str
    item: str
    state: JobState  # STALE when the area's files changed since the item passed
    status: JobStatus
    exit_code: int | None
    message: str
    runtime: float | None  # seconds, once it ended

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ITEM_FIELDS}


ITEM_FIELDS = tuple(Item.__dataclass_fields__)


def item_from_status(item: ItemStatus) -> Item:
    return Item(id=item.id, test=item.test, item=item.item, state=JobState(item.state),
                status=JobStatus(item.status), exit_code=item.exit_code, message=item.message,
                runtime=item.runtime)


@dataclass(frozen=True)
class Run:
    """One test-suite run: its roll-up status (as `megarun status` and `runs ls` give it:
    a status name, RUNNING while an item has not ended, MOVED once moved to another area),
    the roll-up counts, and when its items started and ended."""

    target: str
    runname: str
    status: str
    counts: Mapping[str, int]
    jobs: int
    done: int
    stale: int
    created: datetime
    started: datetime | None  # the first item's start
    ended: datetime | None  # the last item's end
    _source: RunSource | None = field(default=None, repr=False, compare=False)
    _items: tuple[Item, ...] | None = field(default=None, repr=False, compare=False)

    def items(self) -> list[Item]:
        """The run's items by test and item (read when the Run was made by `area.run`,
        else now)."""
        if self._items is not None:
            return list(self._items)
        if self._source is None:
            raise ValueError(f"run {self.target}/{self.runname} was not read from an area")
        return self._source.run_items(self.target, self.runname)

    def __hash__(self) -> int:
        # counts is a dict: a run is known by its target and runname (sets, dict keys)
        return hash((Run, self.target, self.runname))

    def to_pandas(self) -> Any:
        """The run's items as a pandas DataFrame (pandas must be installed)."""
        return frame([item.as_dict() for item in self.items()], ITEM_FIELDS)


def run_from_summary(summary: RunSummary, times: tuple[float | None, float | None],
                     source: RunSource | None, items: list[Item] | None = None) -> Run:
    """A Run from its `runs ls` row (or one made the same way from its items) and the first
    start and last end of its items."""
    return Run(target=summary["target"], runname=summary["runname"], status=summary["status"],
               counts=summary["counts"], jobs=summary["jobs"], done=summary["done"],
               stale=summary["stale"], created=_created(summary["created"]),
               started=utc(times[0]), ended=utc(times[1]), _source=source,
               _items=None if items is None else tuple(items))

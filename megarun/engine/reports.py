"""What the engine reports: typed records the CLI renders (as tables or JSON, at its edge).

SiteReport is what one pass of the site cycle did (a `sync` row); LaunchProgress is a snapshot
a launch shows while it works; LaunchSummary is what a whole launch did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from megarun.core.states import FAILING_STATUSES, JobStatus
from megarun.engine.elastic import ElasticOutcome

#: Outcomes counted as "done" in a launch's progress (a retried job is not done yet).
FINAL_STATUS_COUNTED = frozenset(JobStatus) - {JobStatus.NA}


@dataclass
class SiteReport:
    """What the cycle did on one site; `error` set when the site could not be synced."""

    site: str
    events: int = 0
    finished: dict[str, int] = field(default_factory=dict)  # ingested job ends by status
    agents_settled: list[str] = field(default_factory=list)
    agents_tidied: int = 0  # ended agents whose spool files were removed (housekeeping)
    dispatched: int = 0  # jobs queued, and direct batch jobs of a next dependency level
    staged_out: int = 0
    started_agent: str = ""
    left_to_launcher: bool = False  # a launch runs for the site: sync left it dispatch and agents
    round_trips: int = 0
    status_commands: int = 0  # scheduler status commands run (batch sites: at most one)
    batch_jobs: dict[int, str] = field(default_factory=dict)  # batch id -> its new state
    error: str = ""
    seconds: float = 0.0
    agent_restarts: int = 0  # a launch's agents started again after one died
    #: A launch's tally: jobs that reached an outcome, by status (stage-out failures moved).
    done: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    elastic: ElasticOutcome | None = None  # a batch site's elastic step (engine/elastic.py)

    @property
    def ok(self) -> bool:
        return not self.error

    def count_done(self, finished: dict[str, int]) -> None:
        for status, count in finished.items():
            if JobStatus(status) in FINAL_STATUS_COUNTED:
                self.by_status[status] = self.by_status.get(status, 0) + count
                self.done += count


@dataclass
class LaunchProgress:
    """A snapshot the CLI renders while the launcher works."""

    done: int
    remaining: int
    by_state: dict[str, int]
    by_status: dict[str, int]
    elapsed: float
    held: str = ""

    @property
    def total(self) -> int:
        return self.done + self.remaining

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class LaunchSummary:
    """What a launch did, for the final table and the exit code."""

    site: str
    done: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    interrupted: bool = False
    stuck: int = 0
    recovered: dict[str, int] = field(default_factory=dict)
    blocked: str = ""  # why READY jobs were left unlaunched (a launch gate that waiting won't lift)
    blocked_hint: str = ""  # what the user does about it
    agent_restarts: int = 0  # agents started again after one died

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.by_status.items() if JobStatus(s) in FAILING_STATUSES)

    @property
    def jobs_per_second(self) -> float:
        return self.done / self.elapsed if self.elapsed else 0.0

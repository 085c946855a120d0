"""The elastic policy: which pilots to submit or cancel for a site's backlog, and why.

Pure: it is handed the backlog (megarun.engine.backlog sums it up in SQL), the site's open
pilots, its [elastic] settings, the queue's limits, the time and the last elastic submission,
and returns a Decision; megarun.engine.elastic_run applies it under the site's submission lock.
Every rule leaves a reason, so `queue elastic --dry-run` and `sync --json` can say why.

Sizing: a multi-node job wants its nodes, single-node jobs want one node per
`backlog_per_node` of them; the pilots already queued or running (with walltime left) count
against that, and what is missing is asked for in pilots of `nodes` (MIN..MAX, and at least the
largest waiting job), within max_batch_jobs (pilots in any state), max_queued, the queue's
per-user limits and submit_every (one submission per interval). A pilot's walltime covers the
longest waiting job plus a start margin, and the backlog's work spread over the wanted nodes,
within the walltime range and the queue's limit for that many nodes. A job too big or too long
for any pilot the limits allow is reported, never submitted for. Queued elastic pilots that
the others already cover are cancelled, newest first, down to min_batch_jobs. While an elastic
pilot is one the scheduler says can never run, no more are submitted (each would be the same).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from megarun.config.elastic import ElasticSpec
from megarun.schedulers.base import BatchState

#: Minutes a pilot needs beyond its longest job: the agent's start and its end grace.
START_MARGIN = 2.0


@dataclass(frozen=True)
class QueueLimits:
    """What the machine allows in the elastic queue: nodes, walltime (minutes), and how many
    batch jobs one user may have waiting and in all (0: no such limit). `walltime_of` gives the
    longest walltime for a node count where the queue's limit depends on the size (node-count
    bins); None: `max_walltime` for any size."""

    name: str = ""
    account: str = ""
    min_nodes: int = 1
    max_nodes: int = 1_000_000
    max_walltime: float = 525_600.0
    max_queued_per_user: int = 0
    max_jobs_per_user: int = 0
    min_walltime: float = 0.0
    walltime_of: Callable[[int], float] | None = field(default=None, compare=False)

    def walltime_for(self, nodes: int) -> float:
        """The longest walltime a batch job of `nodes` nodes may ask for."""
        if self.walltime_of is None:
            return self.max_walltime
        return min(self.max_walltime, float(self.walltime_of(nodes)))


@dataclass(frozen=True)
class Backlog:
    """The jobs that wait for the site's pilots (READY the gates let through, and those
    dispatched but not yet claimed) which some allowed pilot can run, and those none can."""

    jobs: int = 0
    single_node: int = 0  # jobs of one node (they share nodes)
    multi_node_nodes: int = 0  # the nodes of the multi-node jobs, summed
    largest_nodes: int = 0
    longest_walltime: float = 0.0  # minutes; jobs without a walltime count 0
    work_minutes: float = 0.0  # node-minutes of the multi-node jobs + minutes of single-node
    too_many_nodes: int = 0  # jobs wider than the widest allowed pilot
    too_long: int = 0  # jobs longer than the longest allowed pilot
    too_many_nodes_ids: tuple[int, ...] = ()  # a few of them, to name
    too_long_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Pilot:
    """One open pilot batch job of the site, as the policy counts it."""

    batch_id: int
    state: BatchState
    nodes: int
    walltime: float  # minutes asked for
    started: float | None  # when it started running (epoch seconds)
    elastic: bool  # made by the elastic policy (only those are cancelled)
    never_runs: bool = False  # the scheduler holds it pending for ever (queue ls says why)

    def minutes_left(self, now: float) -> float:
        if self.state is not BatchState.RUNNING or self.started is None:
            return self.walltime
        return max(0.0, self.walltime - (now - self.started) / 60.0)


@dataclass(frozen=True)
class PilotRequest:
    """A pilot to submit."""

    nodes: int
    walltime: float  # whole minutes
    queue: str
    account: str
    reason: str


@dataclass(frozen=True)
class Cancellation:
    batch_id: int
    reason: str


@dataclass(frozen=True)
class NeverFits:
    """Jobs no pilot the limits allow can run: reported, not submitted for."""

    count: int
    job_ids: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class Decision:
    """What the policy wants done on one site, each with its reason; `held` says why no (more)
    pilot is submitted although nodes are missing."""

    enabled: bool
    wanted_nodes: int = 0
    capacity_nodes: int = 0
    submit: tuple[PilotRequest, ...] = ()
    cancel: tuple[Cancellation, ...] = ()
    never_fit: tuple[NeverFits, ...] = ()
    held: str = ""
    open_pilots: int = 0
    queued_pilots: int = 0


@dataclass(frozen=True)
class Fit:
    """The widest and longest job some allowed pilot can run (what backlog queries split by)."""

    max_nodes: int
    max_job_walltime: float  # minutes


@dataclass
class _Count:
    """The pilots as the decision goes on: open, waiting in the scheduler, their nodes."""

    open: int
    queued: int
    capacity: int
    last_submit: float | None
    requests: list[PilotRequest] = field(default_factory=list)


def job_fit(settings: ElasticSpec, limits: QueueLimits) -> Fit:
    """The widest and longest job an elastic pilot can take on this site."""
    widest = min(settings.nodes_max, limits.max_nodes)
    floor = min(max(settings.nodes_min, limits.min_nodes), widest)
    # A size's walltime limit grows (or shrinks) with it: the ends of the range hold the longest.
    longest = min(settings.walltime_max, max(limits.walltime_for(n) for n in (floor, widest)))
    return Fit(widest, longest - START_MARGIN)


def per_node(settings: ElasticSpec, node_cpus: int) -> int:
    """How many waiting single-node jobs one requested node is for."""
    return settings.backlog_per_node or node_cpus or 1


def node_demand(backlog: Backlog, jobs_per_node: int) -> int:
    """The nodes the backlog asks for: multi-node jobs their nodes, single-node jobs one node
    per `jobs_per_node` of them."""
    return backlog.multi_node_nodes + math.ceil(backlog.single_node / jobs_per_node)


def wanted_nodes(settings: ElasticSpec, limits: QueueLimits, backlog: Backlog,
                 node_cpus: int) -> int:
    """The nodes the backlog wants, at most what max_batch_jobs pilots can hold."""
    demand = node_demand(backlog, per_node(settings, node_cpus))
    return min(demand, settings.max_batch_jobs * job_fit(settings, limits).max_nodes)


def decide(settings: ElasticSpec, limits: QueueLimits, backlog: Backlog,
           pilots: list[Pilot], now: float, last_submit: float | None,
           node_cpus: int = 0) -> Decision:
    """The pilots to submit and cancel on one site (module docstring)."""
    if not settings.enabled:
        return Decision(False, held="elastic is off (elastic.max_batch_jobs = 0)")
    never = _never_fit(settings, limits, backlog)
    floor = max(settings.nodes_min, limits.min_nodes)
    fit = job_fit(settings, limits)
    if floor > fit.max_nodes:
        return Decision(True, never_fit=never, held=f"elastic.nodes {settings.nodes_min}.."
                        f"{settings.nodes_max} cannot be met by queue {limits.name!r} "
                        f"({limits.min_nodes}..{limits.max_nodes} nodes)")
    want = wanted_nodes(settings, limits, backlog, node_cpus)
    count = _Count(len(pilots), sum(1 for p in pilots if p.state is not BatchState.RUNNING),
                   sum(p.nodes for p in pilots if p.minutes_left(now) > 0 and not p.never_runs),
                   last_submit)
    stuck = [p.batch_id for p in pilots if p.never_runs and p.elastic]
    held = (f"batch job {stuck[0]} can never run as asked (see queue ls): no more pilots of "
            f"these settings until it is cancelled (megarun queue rm {stuck[0]}) and "
            "elastic.nodes or elastic.walltime fixed (megarun site set)" if stuck else
            _submit(settings, limits, backlog, count, want, floor, now))
    cancel = () if count.requests else _cancel(settings, pilots, want, count.capacity)
    return Decision(True, want, count.capacity, tuple(count.requests), cancel, never, held,
                    len(pilots), sum(1 for p in pilots if p.state is not BatchState.RUNNING))


def _submit(settings: ElasticSpec, limits: QueueLimits, backlog: Backlog, count: _Count,
            want: int, floor: int, now: float) -> str:
    """Add pilot requests to `count` while nodes are missing (or fewer than min_batch_jobs
    are open); return why it stopped short, if it did."""
    capacity = count.capacity
    while capacity < want or count.open < settings.min_batch_jobs:
        missing = want - capacity
        why = _limit_reached(settings, limits, count, now)
        if why:
            return why
        if missing > 0:
            nodes = _clamp(max(missing, backlog.largest_nodes), floor,
                           job_fit(settings, limits).max_nodes)
            reason = (f"{backlog.jobs} job(s) waiting want {want} node(s); the open pilots "
                      f"hold {capacity}")
        else:
            nodes, reason = floor, (f"min_batch_jobs = {settings.min_batch_jobs}; "
                                    f"{count.open} open")
        walltime = _walltime(settings, limits, backlog, nodes, max(want, nodes))
        count.requests.append(PilotRequest(nodes, walltime, limits.name, limits.account, reason))
        count.open += 1
        count.queued += 1
        capacity += nodes
        count.last_submit = now
    return ""


def _limit_reached(settings: ElasticSpec, limits: QueueLimits, count: _Count,
                   now: float) -> str:
    """Why no further pilot may be submitted now ("" if one may)."""
    if count.open >= settings.max_batch_jobs:
        return f"max_batch_jobs = {settings.max_batch_jobs} reached ({count.open} open)"
    if count.queued >= settings.queued_limit:
        return f"max_queued = {settings.queued_limit} reached ({count.queued} queued)"
    if limits.max_queued_per_user and count.queued >= limits.max_queued_per_user:
        return (f"queue {limits.name!r} takes at most {limits.max_queued_per_user} queued "
                f"batch job(s) per user")
    if limits.max_jobs_per_user and count.open >= limits.max_jobs_per_user:
        return (f"queue {limits.name!r} takes at most {limits.max_jobs_per_user} batch job(s) "
                f"per user")
    if settings.submit_every and count.last_submit is not None \
            and now - count.last_submit < settings.submit_every:
        wait = settings.submit_every - (now - count.last_submit)
        return f"submit_every = {settings.submit_every:g} s: next submission in {wait:.0f} s"
    return ""


def _walltime(settings: ElasticSpec, limits: QueueLimits, backlog: Backlog, nodes: int,
              spread_over: int) -> float:
    """Whole minutes covering the longest waiting job and the backlog's work spread over the
    wanted nodes, within the walltime range and the queue's limit for `nodes` nodes."""
    work = backlog.work_minutes / max(1, spread_over)
    need = max(backlog.longest_walltime + START_MARGIN if backlog.longest_walltime else 0.0,
               work)
    high = min(settings.walltime_max, limits.walltime_for(nodes))
    low = max(settings.walltime_min, limits.min_walltime)
    return float(math.floor(_clamp_minutes(math.ceil(need), low, high)))


def _cancel(settings: ElasticSpec, pilots: list[Pilot], want: int,
            capacity: int) -> tuple[Cancellation, ...]:
    """Queued elastic pilots the others cover, newest first, keeping min_batch_jobs open."""
    found = []
    open_count = len(pilots)
    for pilot in sorted(pilots, key=lambda p: -p.batch_id):
        if not pilot.elastic or pilot.state is not BatchState.QUEUED:
            continue
        if capacity - pilot.nodes < want or open_count - 1 < settings.min_batch_jobs:
            continue
        capacity -= pilot.nodes
        open_count -= 1
        found.append(Cancellation(pilot.batch_id, f"not needed: {want} node(s) wanted, the "
                                  f"other pilots hold {capacity}"))
    return tuple(found)


def _never_fit(settings: ElasticSpec, limits: QueueLimits,
               backlog: Backlog) -> tuple[NeverFits, ...]:
    fit = job_fit(settings, limits)
    found = []
    if backlog.too_many_nodes:
        found.append(NeverFits(backlog.too_many_nodes, backlog.too_many_nodes_ids,
                               f"more than {fit.max_nodes} node(s), the widest pilot allowed"))
    if backlog.too_long:
        found.append(NeverFits(backlog.too_long, backlog.too_long_ids,
                               f"walltime over {fit.max_job_walltime:g} min: the longest pilot "
                               f"allowed is {fit.max_job_walltime + START_MARGIN:g} min"))
    return tuple(found)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _clamp_minutes(value: float, low: float, high: float) -> float:
    return max(low, min(high, value)) if low <= high else high


@dataclass
class ElasticOutcome:
    """What one elastic step did on a site: its decision, the batch jobs it submitted and
    cancelled, and the ones the scheduler refused (id: message)."""

    decision: Decision
    submitted: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    dry_run: bool = False

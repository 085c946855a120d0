"""The site cycle: the one ordered list of steps that `launch` runs in a loop and `sync` once.

Every pass over a site takes the same steps in the same order:

1. exchange: an SSH site's mirror and the site agree (bundles out, events and heartbeats in);
2. poll: one scheduler status command for the site's batch jobs (batch sites);
3. take in: ingest the agents' events, then copy home what finished jobs owe (stage-out);
4. settle: jobs of agents that are gone are settled, kills of ended jobs cleared, the files
   of ended agents tidied;
5. dispatch: READY jobs go into the spool as the launch gates allow (a batch site first
   submits the next dependency level of direct batch jobs, then feeds its pilots' pools);
6. agent: an agent runs where there is work (a detached local process, one started by the
   next exchange on an SSH site; a batch site's agents are its pilots);
7. publish: one more exchange delivers what was dispatched (SSH sites, `sync`).

The site's kind (SiteKind) is decided once, when the cycle is built (`build_cycle`): each kind
is a Cycle subclass that fills the steps it has. `launch` (megarun.engine.service) paces the
steps, `sync` (megarun.engine.sync) calls `sync_pass` once.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar

from megarun.core.states import ACTIVE_STATES, JobState
from megarun.engine.agents import clear_finished_kills, live_agents, settle_gone_agents
from megarun.engine.dispatch import BUNDLE_SIZE, PoolTarget, dispatch_ready_jobs
from megarun.engine.gates import GateDecision, LaunchGates
from megarun.engine.housekeeping import tidy_site
from megarun.engine.ingest import ingest_site_events
from megarun.engine.locks import launcher_lock
from megarun.engine.reports import SiteReport
from megarun.engine.scope import SiteScope
from megarun.engine.staging import stage_out_due
from megarun.sites.remote_spool import AgentLaunch, ExchangeResult, RemoteSpool

#: Keep at most this many jobs queued ahead of the agents.
QUEUE_AHEAD = 4 * BUNDLE_SIZE
#: Job states an agent has, or will have, the job in.
ACTIVE = tuple(sorted(state.value for state in ACTIVE_STATES))
#: The states of a job of the site not yet ended that a launch waits for.
OPEN_STATES = (JobState.READY.value, *ACTIVE, JobState.AWAITING_PARENTS.value)


class SiteKind(Enum):
    """Where a site's agents run, which decides the steps its cycle has."""

    LOCAL = "local"  # an agent process on this host
    SSH = "ssh"  # an agent on an SSH host, reached through the spool's exchange
    BATCH = "batch"  # pilots inside scheduler allocations (on this host or an SSH host)


def site_kind(scope: SiteScope, pilots_open: bool = False) -> SiteKind:
    """A site with a scheduler is a batch site; so is a local-scheduler site with open pilots
    when `pilots_open` (sync feeds them rather than starting an agent of its own)."""
    if scope.site.scheduler != "local" or pilots_open:
        return SiteKind.BATCH
    return SiteKind.SSH if scope.site.is_remote else SiteKind.LOCAL


class Cycle:
    """One site's steps and what they did (`report`); subclasses fill in their kind's steps."""

    kind: ClassVar[SiteKind]
    #: Whether the site is reached through exchanges (an SSH site's mirror).
    exchanges: ClassVar[bool] = False

    def __init__(self, scope: SiteScope, run_id: int | None = None) -> None:
        self.scope = scope
        self.run_id = run_id  # only this run's jobs (megarun run), else all of the site's
        self.spool = scope.spool()
        self.report = SiteReport(scope.name)
        self.gates = LaunchGates(scope.area.config.limits, scope.area.root,
                                 scope.home.run_root, scope.name)
        self.gate = GateDecision()
        self.site_error = ""  # a recoverable problem, retried at the next pass
        self.next_exchange = 0.0  # when a launch exchanges next (monotonic): 0 is at once

    # -- 1. exchange ------------------------------------------------------------------------
    def exchange(self, start: AgentLaunch | None = None,
                 log_tail: list[str] | None = None) -> ExchangeResult | None:
        """Make an SSH site's mirror and the site agree; None where there is nothing to do."""
        return None

    # -- 2. poll ----------------------------------------------------------------------------
    def poll(self) -> None:
        """Poll the scheduler (batch sites)."""

    # -- 3. take in -------------------------------------------------------------------------
    def take_in(self) -> None:
        """Ingest the agents' new events, then copy home what finished jobs owe."""
        ingested = ingest_site_events(self.scope.db, self.scope.sid, self.spool)
        self.report.events += ingested.events
        for status, count in ingested.finished.items():
            self.report.finished[status] = self.report.finished.get(status, 0) + count
        self.report.count_done(ingested.finished)
        staged = stage_out_due(self.scope.db, self.scope.site, self.scope.area.root)
        self.report.staged_out += staged.copied
        self.report.done += staged.adjust(self.report.by_status)

    # -- 4. settle --------------------------------------------------------------------------
    def settle(self) -> None:
        """Settle the jobs of agents that are gone, clear kills of ended jobs, tidy files."""
        db, sid, dead_after = self.scope.db, self.scope.sid, self.scope.launcher.dead_after
        self.report.agents_settled += settle_gone_agents(db, sid, self.spool, dead_after,
                                                         self.take_in)
        clear_finished_kills(db, self.spool)
        self.report.agents_tidied += tidy_site(db, sid, self.spool, dead_after)

    # -- 5. dispatch ------------------------------------------------------------------------
    def open_counts(self) -> dict[str, int]:
        """Jobs of the site (or of the run) in each open state."""
        return open_counts(self.scope, self.run_id)

    def dispatch(self, by_state: dict[str, int]) -> int:
        """Queue READY jobs into the site's shared queue; return how many."""
        return self.dispatch_to(by_state, None)

    def dispatch_to(self, by_state: dict[str, int], target: PoolTarget | None) -> int:
        ended: dict[str, int] = {}
        self.gate, sent = dispatch_round(self.scope, self.gates, by_state, self.run_id, ended,
                                         target)
        self.report.count_done(ended)  # jobs whose stage-in failed
        self.report.dispatched += sent
        return sent

    def launch_dispatch(self, by_state: dict[str, int]) -> int:
        """What a launch dispatches each time round (a batch site adds next levels)."""
        return self.dispatch(by_state)

    # -- 6. agent ---------------------------------------------------------------------------
    def keep_agents(self, by_state: dict[str, int]) -> tuple[str, str] | None:
        """A launch's agent step: make sure an agent runs while jobs are active. Returns why
        the launch cannot go on (message, hint) when no agent ever will run its jobs."""
        return None

    def agent_request(self) -> tuple[AgentLaunch | None, list[str] | None]:
        """The agent the next exchange should start (and the agents whose log tails it
        should bring back): an SSH site's launch asks for one there."""
        return None, None

    def exchanged(self, result: ExchangeResult, asked: bool) -> None:
        """Take note of what an exchange of a launch did (`asked`: it asked for an agent)."""

    def agents_running(self) -> bool:
        return bool(live_agents(self.spool, self.scope.launcher.dead_after))

    def drain_agents(self) -> None:
        """At the end of a launch: the agents it relied on finish and exit (not pilots, which
        keep their allocation until they are idle)."""

    def force_stop(self) -> None:
        """Kill an agent process this launcher started that did not stop when asked."""

    def reap(self) -> None:
        """Forget an agent process of this launcher that ended."""

    # -- the sync pass ----------------------------------------------------------------------
    def worth_visiting(self) -> bool:
        """Whether this pass has anything to do on the site (an SSH site costs a connection)."""
        return True

    def sync_pass(self, dispatch: bool) -> SiteReport:
        """The cycle's steps once, in order; dispatch and agents only when asked to and when
        no launcher runs for the site (they are its business then)."""
        if not self.worth_visiting():
            return self.report
        try:
            self.exchange()
            self.poll()
            self.spool.ensure()
            self.take_in()
            self.settle()
            if dispatch:
                with launcher_lock(self.scope.area, self.scope.name) as free:
                    if free:
                        self.feed()
                    self.report.left_to_launcher = not free
        finally:
            self.report.round_trips = self.round_trips()
        return self.report

    def feed(self) -> None:
        """Steps 5 to 7 of a sync pass, under the site's launcher lock."""

    def round_trips(self) -> int:
        return 0


def open_counts(scope: SiteScope, run_id: int | None = None) -> dict[str, int]:
    """Jobs of a site (or of one run on it) in each open state."""
    marks = ",".join("?" * len(OPEN_STATES))
    run = "" if run_id is None else "AND run_id = ? "
    sql = (f"SELECT state, count(*) FROM job WHERE site_id = ? {run}AND state IN ({marks}) "  # noqa: S608
           "GROUP BY state")
    params = (scope.sid,) if run_id is None else (scope.sid, run_id)
    return dict(scope.db.execute_sql(sql, (*params, *OPEN_STATES)).fetchall())


def active_count(by_state: dict[str, int]) -> int:
    return sum(by_state.get(state, 0) for state in ACTIVE)


def dispatch_round(scope: SiteScope, gates: LaunchGates, by_state: dict[str, int],
                   run_id: int | None = None, ended: dict[str, int] | None = None,
                   target: PoolTarget | None = None) -> tuple[GateDecision, int]:
    """Queue READY jobs as the launch gates allow, at most QUEUE_AHEAD ahead of the agents.

    `by_state` (open job counts of the site) is updated; returns the gate decision and how
    many jobs were queued. Jobs that ended instead (a failed stage-in) are counted by status
    in `ended`. `target` sends them to one batch job's pool (batch sites).
    """
    ready = by_state.get(JobState.READY.value, 0)
    queued = by_state.get(JobState.QUEUED.value, 0)
    gate = gates.decide(scope.db, ready)
    budget = gate.allowed
    total = 0
    while ready > 0 and queued < QUEUE_AHEAD and (budget is None or budget > 0):
        limit = BUNDLE_SIZE if budget is None else min(BUNDLE_SIZE, budget)
        sent = dispatch_ready_jobs(scope.db, scope.sid, scope.site, limit=limit, run_id=run_id,
                                   group_budget=gate.group_budget, area_root=scope.area.root,
                                   ended=ended, target=target)
        if sent == 0:
            break
        gates.spent(sent)
        total += sent
        ready -= sent
        queued += sent
        by_state[JobState.READY.value] = ready
        by_state[JobState.QUEUED.value] = queued
        if budget is not None:
            budget -= sent
        if gate.group_budget:
            break  # the group budgets are spent by this bundle: decide again next cycle
    return gate, total


def has_jobs_to_run(scope: SiteScope) -> bool:
    """Whether the site has a job READY or held by an agent."""
    wanted = (JobState.READY.value, *ACTIVE)
    found = scope.db.execute_sql(
        f"SELECT 1 FROM job WHERE site_id = ? AND state IN ({','.join('?' * len(wanted))}) "  # noqa: S608
        "LIMIT 1", (scope.sid, *wanted)).fetchone()
    return found is not None


def has_work(scope: SiteScope, spool: RemoteSpool) -> bool:
    """Whether an SSH site has open jobs, or requests waiting in its mirror (bundles, drops,
    kills, and ended agents whose files it should forget)."""
    spool.ensure()
    pending = any(True for folder in (spool.queue, spool.drops, spool.kill_dir, spool.forgets)
                  for _ in folder.glob("[!.]*"))
    if pending or has_jobs_to_run(scope):
        return True
    beats = live_agents(spool, scope.launcher.dead_after)
    return bool(beats)  # an agent still winding down: take in its last events

"""The site cycle of each kind of site: which steps it has, and how it keeps its agents.

A local site runs one agent process on this host, started by a launch or by a sync; detached,
it outlives whoever started it and holds the site's agent lock while it lives, so that no
second one starts beside it (a `kill -9` drops the lock with the process). An SSH site's agent
is started by the site itself when an exchange asks for one. A batch site's agents are pilots
in scheduler allocations (`megarun queue submit`, or its elastic policy): its cycle polls the
scheduler, submits the next dependency level of direct batch jobs, submits and cancels pilots
as the elastic policy decides (megarun.engine.elastic_run), and feeds the pilots' pools; it
starts no agent.
`build_cycle` picks the class once, when the cycle is built.
"""

from __future__ import annotations

import os
import subprocess
import time

from megarun.agent.layout import agent_log_path
from megarun.agent.runner import last_line
from megarun.core.faults import fault_point
from megarun.core.filelocks import take_for_a_child
from megarun.core.states import JobState
from megarun.engine import agent_starts
from megarun.engine.agent_starts import AgentRestarts
from megarun.engine.agents import live_agents, read_heartbeats
from megarun.engine.batch_poll import active_pools, has_open, poll_site
from megarun.engine.cycle import Cycle, SiteKind, active_count, has_jobs_to_run, has_work
from megarun.engine.direct_levels import LevelSubmission, submit_next_levels
from megarun.engine.elastic import ElasticOutcome
from megarun.engine.elastic_run import run_elastic
from megarun.engine.locks import agent_lock_path
from megarun.engine.reports import SiteReport
from megarun.engine.scope import SiteScope
from megarun.engine.spawn import agent_args, new_agent_id, start_local_agent
from megarun.engine.submissions import settle_orphans
from megarun.errors import EnvironmentProblem
from megarun.sites.remote_spool import AgentLaunch, ExchangeResult, RemoteSpool

#: A remote agent just started gets this long to write its first heartbeat.
AGENT_START_GRACE = 30.0
#: How often a launcher on a batch site polls the scheduler (one status command each time),
#: and looks for a next dependency level to submit.
BATCH_POLL_SECONDS = 2.0

#: Why a launch on a site stopped with READY jobs left, and what to do: (message, hint).
Blocked = tuple[str, str]


class LocalCycle(Cycle):
    """A site on this host: a launch or a sync starts its agent as a process of its own."""

    kind = SiteKind.LOCAL

    def __init__(self, scope: SiteScope, run_id: int | None = None) -> None:
        super().__init__(scope, run_id)
        self.process: subprocess.Popen[bytes] | None = None
        self.agent_id = ""  # the last agent this launcher started
        self.restarts = AgentRestarts(scope.name)

    def worth_visiting(self) -> bool:
        # events to take in, or jobs to feed (else no agent ever ran there, nor will)
        return self.spool.events.is_dir() or has_jobs_to_run(self.scope)

    def feed(self) -> None:
        """A sync's steps 5 and 6: dispatch, then make sure an agent serves the active jobs.
        One started here outlives this sync and leaves when idle; restarts are bounded across
        syncs as on an SSH site (megarun.engine.agent_starts)."""
        report = self.report
        by_state = self.open_counts()
        self.dispatch(by_state)
        fault_point("sync:after-dispatch")
        if not active_count(by_state) or live_agents(self.spool, self.scope.launcher.dead_after):
            return
        report.error = agent_starts.refusal(self.scope.db, self.spool, self.scope.name,
                                             self.scope.site.workdir)
        if report.error:
            return
        report.started_agent = self.start_agent(clear_stop=True)
        if report.started_agent:
            fault_point("sync:after-agent-start")
            agent_starts.record_start(self.spool, report.started_agent)

    def start_agent(self, clear_stop: bool = False) -> str:
        """Start an agent unless one holds the site's agent lock (started by another megarun,
        perhaps not beating yet); its id, or "". `clear_stop`: a finished launch's stop
        request must not stop it (under the lock: never one a live agent should read)."""
        lock_fd = take_for_a_child(agent_lock_path(self.scope.area, self.scope.name))
        if lock_fd is None:
            return ""
        try:
            fault_point("sync:after-agent-lock")
            if clear_stop:
                self.spool.clear_stop("all")
            self.agent_id = new_agent_id()
            self.process = start_local_agent(self.scope.site, self.scope.launcher,
                                             self.agent_id, lock_fd)
        finally:
            os.close(lock_fd)  # the agent holds it now (or nobody, when it could not start)
        return self.agent_id

    def keep_agents(self, by_state: dict[str, int]) -> Blocked | None:
        if not active_count(by_state) or (self.process is not None
                                          and self.process.poll() is None):
            return None
        if live_agents(self.spool, self.scope.launcher.dead_after):
            return None
        if self.agent_id and agent_died(self, self.agent_id):
            log_path = agent_log_path(self.scope.site.workdir, self.agent_id)
            count_death(self, self.agent_id, last_line(log_path), log_path)
            self.agent_id = ""
        if self.restarts.may_start():  # else the back-off after a death
            self.start_agent()
        return None

    def drain_agents(self) -> None:
        if self.agents_running():
            self.spool.request_stop("all", "drain")

    def agents_running(self) -> bool:
        if self.process is not None and self.process.poll() is None:
            return True
        return super().agents_running()

    def force_stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def reap(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            self.process = None


class SshCycle(Cycle):
    """A site on an SSH host: its spool is a mirror; the exchange starts its agent."""

    kind = SiteKind.SSH
    exchanges = True

    def __init__(self, scope: SiteScope, run_id: int | None = None) -> None:
        super().__init__(scope, run_id)
        assert isinstance(self.spool, RemoteSpool)
        self.remote: RemoteSpool = self.spool
        self.want_agent = False
        self.agent_id = ""  # the last agent this launcher had started
        self.agent_started_at = -AGENT_START_GRACE
        self.restarts = AgentRestarts(scope.name)

    def exchange(self, start: AgentLaunch | None = None,
                 log_tail: list[str] | None = None) -> ExchangeResult | None:
        return self.remote.exchange(start_agent=start, log_tail=log_tail)

    def worth_visiting(self) -> bool:
        return has_work(self.scope, self.remote)  # else no connection at all

    def round_trips(self) -> int:
        return self.remote.round_trips

    def feed(self) -> None:
        """Dispatch, then one exchange publishes the bundles and starts an agent if none
        lives (bounded: an agent that keeps dying is not started for ever)."""
        report, settings = self.report, self.scope.launcher
        by_state = self.open_counts()
        self.dispatch(by_state)
        active = active_count(by_state)
        want_agent = active > 0 and not live_agents(self.spool, settings.dead_after)
        if want_agent:
            report.error = agent_starts.refusal(self.scope.db, self.remote, self.scope.name,
                                                 self.scope.site.workdir)
        if not (report.dispatched or want_agent):
            return
        may_start = active > 0 and not report.error
        if may_start:
            self.spool.clear_stop("all")  # a finished launcher's stop must not stop this agent
        launch = AgentLaunch(agent_args(self.scope.site, settings), settings.dead_after)
        answer = self.remote.exchange(start_agent=launch if may_start else None)
        report.started_agent = answer.started_agent or ""
        if report.started_agent:
            agent_starts.record_start(self.remote, report.started_agent)

    def agent_request(self) -> tuple[AgentLaunch | None, list[str] | None]:
        if not (self.want_agent and time.monotonic() - self.agent_started_at > AGENT_START_GRACE
                and self.restarts.may_start()):
            return None, None
        settings = self.scope.launcher
        launch = AgentLaunch(agent_args(self.scope.site, settings), settings.dead_after)
        return launch, [self.agent_id] if self.agent_id else None

    def exchanged(self, result: ExchangeResult, asked: bool) -> None:
        self.want_agent = False
        if not result.started_agent:
            return
        previous = self.agent_id if asked else ""
        if previous and agent_died(self, previous):
            where = f"{agent_log_path(self.scope.site.workdir, previous)} on the site"
            count_death(self, previous, result.log_tails.get(previous, ""), where)
        self.agent_id = result.started_agent
        self.agent_started_at = time.monotonic()

    def keep_agents(self, by_state: dict[str, int]) -> Blocked | None:
        if not active_count(by_state) or live_agents(self.spool, self.scope.launcher.dead_after):
            return None
        if time.monotonic() - self.agent_started_at > AGENT_START_GRACE:
            self.want_agent = True  # the next exchange starts one on the site
            self.next_exchange = 0.0
        return None

    def drain_agents(self) -> None:
        if self.agents_running():
            self.spool.request_stop("all", "drain")


class BatchCycle(Cycle):
    """A site whose agents are pilots in batch jobs (module docstring)."""

    kind = SiteKind.BATCH

    def __init__(self, scope: SiteScope, run_id: int | None = None) -> None:
        super().__init__(scope, run_id)
        self.open = True  # a batch job may run the READY jobs (known after the first poll)
        self.poll_error = ""
        self.level_refused = ""  # the last direct batch job of a next level that was refused
        self.next_level_check = 0.0
        self.next_elastic = 0.0  # when a launch runs the elastic step next (monotonic)
        self.elastic: ElasticOutcome | None = None  # what the last elastic step did

    def poll(self) -> None:
        try:
            # A submission a kill cut short is adopted (or settled) first, so that this
            # poll already sees its allocation.
            self.report.batch_jobs.update(settle_orphans(self.scope))
            poll = poll_site(self.scope)
        except EnvironmentProblem as exc:
            self.report.status_commands += 1
            self.poll_error = self.site_error = str(exc)  # ingest and dispatch still run
            return
        self.report.status_commands += poll.status_commands
        self.report.batch_jobs.update(poll.changed)
        self.open = has_open(self.scope)

    def dispatch(self, by_state: dict[str, int]) -> int:
        """Feed the pools of the open pilots."""
        return sum(self.dispatch_to(by_state, target) for target in active_pools(self.scope))

    def submit_levels(self) -> LevelSubmission:
        """Direct mode: the READY jobs whose parents ran in direct batch jobs get theirs."""
        outcome = submit_next_levels(self.scope, self.run_id)
        self.report.dispatched += outcome.jobs
        if outcome.submitted:
            self.open = True  # the next poll sees them; until then do not give up
        return outcome

    def elastic_step(self, by_state: dict[str, int]) -> None:
        """Submit and cancel pilots as the site's elastic policy decides (when it is on)."""
        if not self.scope.site.spec.elastic.enabled:
            return
        gate = self.gates.decide(self.scope.db, by_state.get(JobState.READY.value, 0))
        try:
            outcome = run_elastic(self.scope, 0 if gate.blocking else gate.allowed)
        except EnvironmentProblem as exc:
            self.site_error = str(exc)  # tried again next cycle
            return
        self.elastic = self.report.elastic = outcome
        if outcome.submitted:
            self.open = True  # the next poll sees them; until then do not give up
        if outcome.failed:
            self.site_error = "; ".join(f"batch job {key}: {message}" if key else message
                                        for key, message in outcome.failed.items())

    def feed(self) -> None:
        levels = self.submit_levels()
        if levels.refused:
            first = levels.refused[0]
            self.report.error = f"batch job {first['id']} not submitted: {first['message']}"
        by_state = self.open_counts()
        self.elastic_step(by_state)
        if self.elastic is not None and self.elastic.failed and not self.report.error:
            self.report.error = self.site_error
        self.dispatch(by_state)
        self.publish()

    def publish(self) -> None:
        """Deliver what was dispatched (an SSH site's mirror)."""

    def sync_pass(self, dispatch: bool) -> SiteReport:
        report = super().sync_pass(dispatch)
        report.error = self.poll_error or report.error  # a refused direct submission otherwise
        return report

    def launch_dispatch(self, by_state: dict[str, int]) -> int:
        levels = self.launch_levels(by_state)
        now = time.monotonic()
        if now >= self.next_elastic:  # at the batch poll's pace: it reads the open pilots
            self.next_elastic = now + BATCH_POLL_SECONDS
            self.elastic_step(by_state)
        return levels + self.dispatch(by_state)

    def launch_levels(self, by_state: dict[str, int], force: bool = False) -> int:
        """A launch looks for a next level at the batch poll's pace (its query reads the
        site's direct batch jobs), or at once with `force`."""
        now = time.monotonic()
        if not by_state.get(JobState.READY.value) or (not force and now < self.next_level_check):
            return 0
        self.next_level_check = now + BATCH_POLL_SECONDS
        try:
            outcome = self.submit_levels()
        except EnvironmentProblem as exc:
            self.site_error = str(exc)  # shown in the progress line; tried again next cycle
            return 0
        if outcome.refused:
            first = outcome.refused[0]
            self.level_refused = f"batch job {first['id']} was refused: {first['message']}"
            self.site_error = self.level_refused
        return outcome.jobs

    def keep_agents(self, by_state: dict[str, int]) -> Blocked | None:
        """The pilots are the agents; with none open and nothing active, the launch ends."""
        if active_count(by_state) == 0 and not self.open:
            self.launch_levels(by_state, force=True)  # before giving up
            if self.scope.site.spec.elastic.enabled:
                return self.elastic_blocked(by_state)
            if not self.open:
                return no_batch_job_message(self.scope.name, by_state.get(JobState.READY.value, 0),
                                            self.level_refused)
        return None


    def elastic_blocked(self, by_state: dict[str, int]) -> Blocked | None:
        """An elastic site's launch goes on while the policy may still submit a pilot; it
        stops when every READY job is one no pilot can ever run."""
        ready = by_state.get(JobState.READY.value, 0)
        if self.elastic is not None and self.elastic.failed:  # refused: would be, again and again
            first = next(iter(self.elastic.failed.values()))
            return (f"no batch job is open on site {self.scope.name!r} to run its {ready} READY "
                    f"job(s): the elastic policy's pilot was refused: {first}",
                    "the jobs stay READY: fix the site's settings (megarun site set), then "
                    "launch again")
        decision = self.elastic.decision if self.elastic is not None else None
        if decision is None or not decision.never_fit or \
                sum(n.count for n in decision.never_fit) < ready:
            return None
        reasons = "; ".join(f"{n.count} job(s) {n.reason} (e.g. {', '.join(map(str, n.job_ids))})"
                            for n in decision.never_fit)
        return (f"no pilot the elastic settings of site {self.scope.name!r} allow can run its "
                f"{ready} READY job(s): {reasons}",
                "raise elastic.nodes or elastic.walltime (megarun site set), or change the jobs")


class RemoteBatchCycle(BatchCycle):
    """A batch site on an SSH host: the batch site's steps, with the exchanges of SSH."""

    exchanges = True

    def __init__(self, scope: SiteScope, run_id: int | None = None) -> None:
        super().__init__(scope, run_id)
        assert isinstance(self.spool, RemoteSpool)
        self.remote: RemoteSpool = self.spool

    def exchange(self, start: AgentLaunch | None = None,
                 log_tail: list[str] | None = None) -> ExchangeResult | None:
        return self.remote.exchange(start_agent=start, log_tail=log_tail)

    def worth_visiting(self) -> bool:
        return (has_open(self.scope) or self.scope.site.spec.elastic.min_batch_jobs > 0
                or has_work(self.scope, self.remote))

    def round_trips(self) -> int:
        return self.remote.round_trips

    def publish(self) -> None:
        if self.report.dispatched:
            self.remote.exchange()  # the pilots start no agent but their own


def build_cycle(scope: SiteScope, kind: SiteKind, run_id: int | None = None) -> Cycle:
    """The cycle of a site of that kind (decided once, here)."""
    if kind is SiteKind.BATCH:
        return RemoteBatchCycle(scope, run_id) if scope.site.is_remote else BatchCycle(
            scope, run_id)
    return SshCycle(scope, run_id) if kind is SiteKind.SSH else LocalCycle(scope, run_id)


def agent_died(cycle: LocalCycle | SshCycle, agent_id: str) -> bool:
    """Whether an agent the launcher started ended otherwise than on purpose."""
    status = read_heartbeats(cycle.spool).get(agent_id)
    return status is None or status.state != "exited"


def count_death(cycle: LocalCycle | SshCycle, agent_id: str, last: str, where: str) -> None:
    cycle.report.agent_restarts += 1
    cycle.restarts.died(agent_id, last, where)


def no_batch_job_message(site: str, ready: int, refused: str = "") -> Blocked:
    """Why a batch site's READY jobs cannot run, and what to do: a batch job runs them.
    `refused`: why the scheduler refused the last direct batch job this launch submitted."""
    why = f" ({refused})" if refused else ""
    return (f"no batch job is open on site {site!r} to run its {ready} READY job(s){why}",
            f"the jobs stay READY: submit a pilot with megarun queue submit --site {site} "
            "--nodes N --walltime MINUTES, or one batch job per job with megarun queue submit "
            f"--site {site} --mode direct; then launch again")

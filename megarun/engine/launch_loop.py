"""The launcher: runs a site's READY jobs through its agent until nothing is left to do.

One launcher per site at a time (a file lock). Each cycle: ingest the agents' events, settle
agents that died, dispatch READY jobs into the spool, make sure an agent is running, report
progress. Ctrl-C (or SIGTERM) asks the agents to kill their running jobs (recorded KILLED),
takes unclaimed bundles back (READY again) and leaves nothing half-written. The launcher of a
run (`megarun run`/`rerun`) asks them to hand their running jobs back instead (READY again,
the run not counted): an interrupted run is continued by running it again, and what waits on
those jobs keeps waiting rather than being settled on an outcome that never happened.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megarun.agent.layout import SpoolLayout, agent_log_path
from megarun.agent.private import make_private_dirs
from megarun.agent.runner import last_line
from megarun.config.area import LauncherSettings
from megarun.core.filelocks import hold_lock, hold_or_refuse
from megarun.core.states import (
    ACTIVE_STATES,
    FAILING_STATUSES,
    SITE_LOAD_STATES,
    JobState,
    JobStatus,
    names,
    sql_list,
)
from megarun.db.connection import DiskFull
from megarun.db.jobstore import load_rows_where
from megarun.engine import agents as agent_service
from megarun.engine.dispatch import BUNDLE_SIZE, PoolTarget, dispatch_ready_jobs
from megarun.engine.gates import GateDecision, LaunchGates
from megarun.engine.housekeeping import tidy_site
from megarun.engine.ingest import ingest_site_events
from megarun.engine.matching import match_jobs
from megarun.engine.staging import stage_out_finished
from megarun.errors import AlreadyRunning, EnvironmentProblem, MegarunError
from megarun.homehost.context import Context
from megarun.sites.registry import SiteInfo, get_site, site_id
from megarun.sites.remote_spool import AgentLaunch, RemoteSpool
from megarun.suites.run_prepare import run_root

#: Keep at most this many jobs queued ahead of the agents.
QUEUE_AHEAD = 4 * BUNDLE_SIZE
POLL_SECONDS = 0.1
AGENT_CHECK_SECONDS = 1.0
#: How often a launcher on a batch site polls the scheduler (one status command each time).
BATCH_POLL_SECONDS = 2.0
#: An SSH site is asked every EXCHANGE_MIN s while things happen there, backing off to
#: EXCHANGE_MAX s while nothing does (a quiet login node is not polled ten times a second).
EXCHANGE_MIN = 0.1
EXCHANGE_MAX = 5.0
#: A remote agent just started gets this long to write its first heartbeat.
AGENT_START_GRACE = 30.0
#: Give up on an SSH site that stays unreachable this long (jobs on it keep their state).
UNREACHABLE_LIMIT = 600.0
#: An agent that dies (not one that exits when idle or stopped) is restarted at most
#: MAX_RESTARTS times in RESTART_WINDOW s, waiting RESTART_BACKOFF s, doubled at each restart
#: up to RESTART_BACKOFF_MAX, before each; one more death ends the launch (exit code 3).
MAX_RESTARTS = 5
RESTART_WINDOW = 600.0
RESTART_BACKOFF = 0.25
RESTART_BACKOFF_MAX = 30.0

#: Keys of the open job counts (`by_state`).
_READY, _QUEUED = JobState.READY.value, JobState.QUEUED.value
_OPEN_STATES = names(SITE_LOAD_STATES | {JobState.AWAITING_PARENTS})


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

    def as_dict(self) -> dict[str, Any]:
        return {"site": self.site, "done": self.done, "by_status": self.by_status,
                "elapsed": round(self.elapsed, 3), "interrupted": self.interrupted,
                "stuck": self.stuck, "failed": self.failed, "recovered": self.recovered,
                "blocked": self.blocked, "blocked_hint": self.blocked_hint,
                "agent_restarts": self.agent_restarts,
                "jobs_per_second": round(self.done / self.elapsed, 1) if self.elapsed else 0.0}


@dataclass
class AgentRestarts:
    """A site's agent deaths: restarts are bounded, with a growing wait before each."""

    site: str
    deaths: list[float] = field(default_factory=list)  # monotonic times, within the window
    not_before: float = 0.0

    def died(self, agent_id: str, last_line: str, where: str) -> None:
        """Count one agent death; raise EnvironmentProblem when the site keeps killing them."""
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < RESTART_WINDOW] + [now]
        if len(self.deaths) > MAX_RESTARTS:
            said = f"its log's last line: {last_line}" if last_line else "its log is empty"
            raise EnvironmentProblem(
                f"site {self.site!r}: the agent died {len(self.deaths)} times in "
                f"{RESTART_WINDOW / 60:.0f} min, last {agent_id}; {said} ({where})",
                "fix what the agent log says, then launch again; the jobs keep their state")
        self.not_before = now + min(RESTART_BACKOFF_MAX,
                                    RESTART_BACKOFF * 2 ** (len(self.deaths) - 1))

    def may_start(self) -> bool:
        return time.monotonic() >= self.not_before


def lock_path(ctx: Context, site: str) -> Path:
    folder = ctx.area.state_dir / "locks"
    make_private_dirs(str(folder))
    return folder / f"launch-{site}.lock"


def no_batch_job_message(site: str, ready: int, refused: str = "") -> tuple[str, str]:
    """Why a batch site's READY jobs cannot run, and what to do: a batch job runs them.
    `refused`: why the scheduler refused the last direct batch job this launch submitted."""
    why = f" ({refused})" if refused else ""
    return (f"no batch job is open on site {site!r} to run its {ready} READY job(s){why}",
            f"the jobs stay READY: submit a pilot with megarun queue submit --site {site} "
            "--nodes N --walltime MINUTES, or one batch job per job with megarun queue submit "
            f"--site {site} --mode direct; then launch again")


class Launcher:
    """Runs one site's jobs to completion (see module docstring)."""

    def __init__(self, ctx: Context, site_name: str,
                 on_progress: Callable[[LaunchProgress], None] | None = None,
                 run_id: int | None = None) -> None:
        self.ctx = ctx
        self.run_id = run_id  # only this run's jobs (megarun run), else all of the site's
        self.site: SiteInfo = get_site(ctx, site_name)
        self.site_id = site_id(ctx, site_name)
        self.spool = self.site.spool()
        self.settings = ctx.area.config.launcher
        self.on_progress = on_progress
        self.summary = LaunchSummary(site_name)
        self.agent_process: subprocess.Popen[bytes] | None = None
        self._lock_path = lock_path(ctx, site_name)
        self._started = 0.0
        self._last_agent_check = 0.0
        self.gates = LaunchGates(ctx.area.config.limits, ctx.area.root, run_root(ctx.area), site_name)
        self._gate = GateDecision()
        self.remote = self.spool if isinstance(self.spool, RemoteSpool) else None
        # On a batch site the agents are pilots in scheduler allocations (megarun queue submit):
        # the launcher feeds their pools and polls the scheduler, and starts no agent itself.
        self.batch = self.site.scheduler != "local"
        self._next_batch_poll = 0.0
        self._next_level_check = 0.0
        self._level_refused = ""  # the last direct batch job of a next level the scheduler refused
        self._batch_open = True
        self._want_agent = False
        self._agent_started_at = -AGENT_START_GRACE
        self._next_exchange = 0.0
        self._exchange_wait = EXCHANGE_MIN
        self._unreachable_since: float | None = None
        self.site_error = ""
        self.restarts = AgentRestarts(site_name)
        self._agent_id = ""  # the last agent this launcher started

    # -- public -----------------------------------------------------------------------------
    def run(self) -> LaunchSummary:
        busy = AlreadyRunning(f"a launcher is already running for site {self.site.name!r}",
                              "wait for it, or stop it with Ctrl-C / kill")
        with hold_or_refuse(self._lock_path, busy):
            return self._run_locked()

    def _run_locked(self) -> LaunchSummary:
        try:
            self._started = time.monotonic()
            match_jobs(self.ctx)  # jobs that wait for a site satisfying their requirements
            self._recover()
            try:
                with _sigterm_as_interrupt():
                    self._loop()
            except KeyboardInterrupt:
                self.summary.interrupted = True
                self._shutdown_after_interrupt()
            except (DiskFull, OSError) as exc:
                if not isinstance(exc, DiskFull) and exc.errno != errno.ENOSPC:
                    raise
                self._stop_after_disk_full()
                raise _as_disk_full(exc) from exc
        finally:
            self.summary.elapsed = time.monotonic() - self._started
            self._reap_agent()
        return self.summary

    # -- steps ------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Make the site consistent after whatever the last launcher left behind."""
        db = self.ctx.db
        self.spool.ensure()
        self.spool.clear_stop("all")
        self.spool.remove_stale_temporaries()
        if self.remote is not None:
            self.remote.exchange()  # an unreachable site fails the launch here, changing nothing
        self._ingest()
        gone = agent_service.settle_gone_agents(db, self.site_id, self.spool,
                                                self.settings.dead_after, self._ingest)
        orphans = agent_service.requeue_orphans(db, self.site_id, self.spool)
        self.summary.recovered = {"agents_settled": len(gone), "requeued": orphans}

    def _loop(self) -> None:
        while True:
            if self.remote is not None and not self._exchange_due():
                continue
            self._ingest()
            now = time.monotonic()
            if now - self._last_agent_check >= AGENT_CHECK_SECONDS:
                self._last_agent_check = now
                self._check_agents()
                self.ctx.check_still_home()  # `homehost migrate --force` moved the db away
            by_state = self._open_counts()
            self._dispatch(by_state)
            active = sum(by_state.get(s, 0) for s in names(ACTIVE_STATES))
            self._report(by_state)
            if active == 0 and by_state.get(_READY, 0) == 0:
                self.summary.stuck = by_state.get(JobState.AWAITING_PARENTS.value, 0)
                break
            if active == 0 and self._gate.blocking:
                self.summary.blocked = self._gate.held
                self.summary.blocked_hint = "the jobs stay READY; free some space, then launch again"
                break
            if self.batch:
                if active == 0 and not self._batch_open:
                    self._submit_next_levels(by_state, force=True)  # before giving up
                if active == 0 and not self._batch_open:
                    self.summary.blocked, self.summary.blocked_hint = no_batch_job_message(
                        self.site.name, by_state.get(_READY, 0), self._level_refused)
                    break
            elif active:
                self._ensure_agent()
            time.sleep(POLL_SECONDS)
        if not self.batch:
            self._stop_agent("drain")  # pilots keep their allocation until they are idle
        if self.remote is not None:
            self._exchange_quietly()  # deliver the stop request

    # -- SSH sites --------------------------------------------------------------------------
    def _exchange_due(self) -> bool:
        """Run the site's exchange when it is due; False when not yet, or when it failed."""
        wait = self._next_exchange - time.monotonic()
        if wait > 0:
            time.sleep(min(POLL_SECONDS, wait))
            return False
        return self._exchange_now()

    def _exchange_soon(self) -> None:
        self._next_exchange = 0.0

    def _exchange_now(self) -> bool:
        assert self.remote is not None
        launch = None
        if (self._want_agent and time.monotonic() - self._agent_started_at > AGENT_START_GRACE
                and self.restarts.may_start()):
            launch = AgentLaunch(agent_args(self.site, self.settings), self.settings.dead_after)
        previous = self._agent_id if launch is not None else ""
        try:
            result = self.remote.exchange(start_agent=launch,
                                          log_tail=[previous] if previous else None)
        except MegarunError as exc:
            self._site_unreachable(exc)
            return False
        self._unreachable_since = None
        self.site_error = ""
        self._want_agent = False
        if result.started_agent:
            if previous and self._agent_died(previous):
                self._count_death(previous, result.log_tails.get(previous, ""),
                                  f"{agent_log_path(self.site.workdir, previous)} on the site")
            self._agent_id = result.started_agent
            self._agent_started_at = time.monotonic()
        busy = result.event_bytes or result.sent_bundles or result.started_agent
        self._exchange_wait = (EXCHANGE_MIN if busy
                               else min(EXCHANGE_MAX, self._exchange_wait * 1.5))
        self._next_exchange = time.monotonic() + self._exchange_wait
        return True

    def _site_unreachable(self, exc: MegarunError) -> None:
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        if now - self._unreachable_since > UNREACHABLE_LIMIT:
            raise EnvironmentProblem(f"site {self.site.name!r} unreachable for "
                                     f"{UNREACHABLE_LIMIT:.0f} s: {exc}",
                                     "its jobs keep their state; launch again later") from exc
        self.site_error = str(exc)
        self._exchange_wait = EXCHANGE_MAX
        self._next_exchange = now + EXCHANGE_MAX
        if self.on_progress is not None:
            self._report(self._open_counts())

    def _exchange_quietly(self) -> None:
        """One more exchange at shutdown; a failure leaves the request for the next one."""
        assert self.remote is not None
        try:
            self.remote.exchange()
        except MegarunError as exc:
            self.site_error = str(exc)

    def _ingest(self) -> None:
        """Take in the agents' events, then copy home what finished jobs owe (stage-out)."""
        result = ingest_site_events(self.ctx.db, self.site_id, self.spool)
        self._count_finished(result.finished)
        staged = stage_out_finished(self.ctx, self.site)
        self.summary.done += staged.adjust(self.summary.by_status)

    def _count_finished(self, finished: dict[str, int]) -> None:
        for status, count in finished.items():
            if JobStatus(status) in FINAL_STATUS_COUNTED:
                self.summary.by_status[status] = self.summary.by_status.get(status, 0) + count
                self.summary.done += count

    def _check_agents(self) -> None:
        db = self.ctx.db
        self._reap_agent()
        if self.batch:
            self._poll_batch()
        agent_service.settle_gone_agents(db, self.site_id, self.spool, self.settings.dead_after,
                                         self._ingest)
        self._clear_finished_kills()
        tidy_site(db, self.site_id, self.spool, self.settings.dead_after)

    def _poll_batch(self) -> None:
        """Poll the site's batch jobs (one status command) every BATCH_POLL_SECONDS."""
        from megarun.engine import batch as batch_service

        now = time.monotonic()
        if now < self._next_batch_poll:
            return
        self._next_batch_poll = now + BATCH_POLL_SECONDS
        try:
            batch_service.poll_site(self.ctx, self.site)
        except EnvironmentProblem as exc:
            self.site_error = str(exc)  # shown in the progress line; polled again later
            return
        self._batch_open = batch_service.has_open(self.ctx, self.site)

    def _clear_finished_kills(self) -> None:
        agent_service.clear_finished_kills(self.ctx.db, self.spool)

    def _open_counts(self) -> dict[str, int]:
        return open_counts(self.ctx, self.site_id, self.run_id)

    def _dispatch(self, by_state: dict[str, int]) -> None:
        ended: dict[str, int] = {}
        if self.batch:
            from megarun.engine.batch import active_pools

            sent = self._submit_next_levels(by_state)
            for target in active_pools(self.ctx, self.site):
                self._gate, count = dispatch_round(self.ctx, self.site_id, self.site, self.gates,
                                                   by_state, self.run_id, ended, target)
                sent += count
        else:
            self._gate, sent = dispatch_round(self.ctx, self.site_id, self.site, self.gates,
                                              by_state, self.run_id, ended)
        self._count_finished(ended)  # jobs whose stage-in failed
        if sent and self.remote is not None:
            self._exchange_soon()

    def _submit_next_levels(self, by_state: dict[str, int], force: bool = False) -> int:
        """Direct mode: the READY jobs whose parents ran in direct batch jobs get theirs.
        Looked for at the batch poll's pace (its query reads the site's direct batch jobs),
        or at once with `force`."""
        from megarun.engine.direct_levels import submit_next_levels

        now = time.monotonic()
        if not by_state.get(_READY) or (not force and now < self._next_level_check):
            return 0
        self._next_level_check = now + BATCH_POLL_SECONDS
        try:
            outcome = submit_next_levels(self.ctx, self.site, self.run_id)
        except EnvironmentProblem as exc:
            self.site_error = str(exc)  # shown in the progress line; tried again next cycle
            return 0
        if outcome.refused:
            first = outcome.refused[0]
            self._level_refused = f"batch job {first['id']} was refused: {first['message']}"
            self.site_error = self._level_refused
        if outcome.submitted:
            self._batch_open = True  # the next poll sees them; until then do not give up
        return outcome.jobs

    def _ensure_agent(self) -> None:
        if self.agent_process is not None and self.agent_process.poll() is None:
            return
        if agent_service.live_agents(self.spool, self.settings.dead_after):
            return
        if self.remote is not None:
            if time.monotonic() - self._agent_started_at > AGENT_START_GRACE:
                self._want_agent = True  # the next exchange starts one on the site
                self._exchange_soon()
            return
        if self._agent_id and self._agent_died(self._agent_id):
            log_path = agent_log_path(self.site.workdir, self._agent_id)
            self._count_death(self._agent_id, last_line(log_path), log_path)
            self._agent_id = ""
        if not self.restarts.may_start():
            return  # back-off after a death
        self._agent_id = new_agent_id()
        self.agent_process = start_local_agent(self.site, self.settings, self._agent_id)

    def _agent_died(self, agent_id: str) -> bool:
        """Whether an agent this launcher started ended otherwise than on purpose."""
        status = agent_service.read_heartbeats(self.spool).get(agent_id)
        return status is None or status.state != "exited"

    def _count_death(self, agent_id: str, last: str, where: str) -> None:
        self.summary.agent_restarts += 1
        self.restarts.died(agent_id, last, where)

    def _report(self, by_state: dict[str, int]) -> None:
        if self.on_progress is None:
            return
        remaining = sum(by_state.values())
        self.on_progress(LaunchProgress(self.summary.done, remaining, dict(by_state),
                                        dict(self.summary.by_status),
                                        time.monotonic() - self._started,
                                        self._held_reason(by_state)))

    def _held_reason(self, by_state: dict[str, int]) -> str:
        if self.site_error:
            return f"site unreachable, retrying: {self.site_error}"
        return self._gate.held if by_state.get(_READY) else ""

    def _stop_agent(self, mode: str) -> None:
        if agent_service.live_agents(self.spool, self.settings.dead_after) or (
            self.agent_process is not None and self.agent_process.poll() is None
        ):
            self.spool.request_stop("all", mode)

    def _shutdown_after_interrupt(self) -> None:
        """Kill running jobs through the agents, take unclaimed work back, settle everything."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            self.spool.request_stop("all", "return" if self.run_id is not None else "kill")
            deadline = time.monotonic() + self.settings.kill_grace + 10
            while time.monotonic() < deadline and self._agents_running():
                if self.remote is not None:
                    self._exchange_quietly()
                self._ingest()
                time.sleep(0.1 if self.remote is None else 0.5)
            self._force_stop_agent()
            self._take_back_queue()
            self._ingest()
            agent_service.settle_gone_agents(self.ctx.db, self.site_id, self.spool, 0.0,
                                             self._ingest)
            agent_service.requeue_orphans(self.ctx.db, self.site_id, self.spool)
            self.spool.remove_stale_temporaries()
            # The stop request stays until the next launcher starts: an agent that was being
            # started when Ctrl-C came reads it before it claims anything, and exits.
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)

    def _stop_after_disk_full(self) -> None:
        """No space left: nothing more could be recorded, so nothing more may run. What was
        ingested is committed; stop the agents (their running jobs are killed), then take in
        whatever of their events the disk still lets us write."""
        try:
            self.spool.request_stop("all", "kill")
        except OSError as exc:  # the stop file needs space too: then the agent is killed below
            self.site_error = str(exc)
        deadline = time.monotonic() + self.settings.kill_grace + 5
        while time.monotonic() < deadline and self._agents_running():
            time.sleep(0.1)
        self._force_stop_agent()
        try:
            self._ingest()
        except (DiskFull, OSError) as exc:  # still full: the events wait in the spool
            self.site_error = str(exc)

    def _agents_running(self) -> bool:
        if self.agent_process is not None and self.agent_process.poll() is None:
            return True
        return bool(agent_service.live_agents(self.spool, self.settings.dead_after))

    def _force_stop_agent(self) -> None:
        if self.agent_process is not None and self.agent_process.poll() is None:
            self.agent_process.kill()
            self.agent_process.wait()

    def _take_back_queue(self) -> None:
        from megarun.engine.batch import return_to_ready

        return_to_ready(self.ctx, self.site, None, "launcher interrupted")

    def _reap_agent(self) -> None:
        if self.agent_process is not None and self.agent_process.poll() is not None:
            self.agent_process = None


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill PID`, a CI job cancelled) stops the launcher as Ctrl-C does, rather than
    leaving its agent running jobs that nobody watches."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _as_disk_full(exc: BaseException) -> DiskFull:
    if isinstance(exc, DiskFull):
        return exc
    where = getattr(exc, "filename", None) or "a file of the launch"
    return DiskFull(f"no space left on device: cannot write {where}",
                    "free space on its file system, then launch again: what was recorded stays")


def dispatch_round(ctx: Context, sid: int, site: SiteInfo, gates: LaunchGates,
                   by_state: dict[str, int], run_id: int | None = None,
                   ended: dict[str, int] | None = None,
                   target: PoolTarget | None = None) -> tuple[GateDecision, int]:
    """Queue READY jobs as the launch gates allow, at most QUEUE_AHEAD ahead of the agents.

    `by_state` (open job counts of the site) is updated; returns the gate decision and how
    many jobs were queued. Jobs that ended instead (a failed stage-in) are counted by status
    in `ended`. `target` sends them to one batch job's pool (batch sites).
    """
    ready = by_state.get(_READY, 0)
    queued = by_state.get(_QUEUED, 0)
    gate = gates.decide(ctx.db, ready)
    budget = gate.allowed
    total = 0
    while ready > 0 and queued < QUEUE_AHEAD and (budget is None or budget > 0):
        limit = BUNDLE_SIZE if budget is None else min(BUNDLE_SIZE, budget)
        sent = dispatch_ready_jobs(ctx.db, sid, site, limit=limit, run_id=run_id,
                                   group_budget=gate.group_budget, area_root=ctx.area.root,
                                   ended=ended, target=target)
        if sent == 0:
            break
        gates.spent(sent)
        total += sent
        ready -= sent
        queued += sent
        by_state[_READY] = ready
        by_state[_QUEUED] = queued
        if budget is not None:
            budget -= sent
        if gate.group_budget:
            break  # the group budgets are spent by this bundle: decide again next cycle
    return gate, total


def open_counts(ctx: Context, sid: int, run_id: int | None = None) -> dict[str, int]:
    """Jobs of a site (or of one run on it) in each open state."""
    marks = ",".join("?" * len(_OPEN_STATES))
    run = "" if run_id is None else "AND run_id = ? "
    sql = (f"SELECT state, count(*) FROM job WHERE site_id = ? {run}AND state IN ({marks}) "  # noqa: S608
           "GROUP BY state")
    params = (sid,) if run_id is None else (sid, run_id)
    return dict(ctx.db.execute_sql(sql, (*params, *_OPEN_STATES)).fetchall())


#: Outcomes counted as "done" in the progress (a retried job is not done yet).
FINAL_STATUS_COUNTED = frozenset(JobStatus) - {JobStatus.NA}


def agent_args(site: SiteInfo, settings: LauncherSettings) -> list[str]:
    """The agent's `run` options from the site's node shape and the launcher settings.

    Without node.cpus the agent counts the cores it may run on where it runs (its affinity
    mask): this host's count means nothing on an SSH site.
    """
    args = ["--heartbeat", str(settings.heartbeat),
            "--kill-grace", str(settings.kill_grace), "--idle-exit", str(settings.idle_exit)]
    node = site.spec.node
    if node.cpus:
        args += ["--cpus", str(node.cpus)]
    if node.gpus:
        args += ["--gpus", ",".join(str(i) for i in range(node.gpus))]
    if node.max_jobs:
        args += ["--max-jobs", str(node.max_jobs)]
    return args


def new_agent_id() -> str:
    return f"{agent_service.HOSTNAME.split('.')[0]}-{os.getpid()}-{time.time_ns() // 1000}"


def start_local_agent(site: SiteInfo, settings: LauncherSettings,
                      agent_id: str) -> subprocess.Popen[bytes]:
    """Start the agent for a local site, detached from this terminal and its Ctrl-C."""
    argv = [sys.executable, "-m", "megarun.agent", "run", "--workdir", site.workdir,
            "--agent-id", agent_id, *agent_args(site, settings)]
    make_private_dirs(SpoolLayout(site.workdir).logs)
    fd = os.open(agent_log_path(site.workdir, agent_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                start_new_session=True, env=_agent_env())
    finally:
        os.close(fd)


def _agent_env() -> dict[str, str]:
    """The agent imports megarun.agent from this very installation."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


def jobs_waiting(ctx: Context, site_name: str) -> int:
    """READY or active jobs of a site (used by `launch --detach` to say what it starts)."""
    rows = load_rows_where(ctx.db, f"site_id = ? AND state IN ({sql_list(SITE_LOAD_STATES)})",
                           (site_id(ctx, site_name),))
    return len(rows)


def launcher_busy(ctx: Context, site_name: str) -> bool:
    with launcher_lock(ctx, site_name) as free:
        return not free


@contextmanager
def launcher_lock(ctx: Context, site_name: str) -> Iterator[bool]:
    """Hold the site's launcher lock if it is free; yields whether it was."""
    with hold_lock(lock_path(ctx, site_name)) as held:
        yield held


def detach_launcher(ctx: Context, site_name: str) -> tuple[int, Path]:
    """Start `megarun launch` for the site in the background; return its pid and log file."""
    get_site(ctx, site_name)
    if launcher_busy(ctx, site_name):
        raise AlreadyRunning(f"a launcher is already running for site {site_name!r}")
    return start_in_background(ctx, ["launch", "--site", site_name, "--quiet"],
                               f"launcher-{site_name}.log")


def start_in_background(ctx: Context, args: list[str], log_name: str) -> tuple[int, Path]:
    """Run `megarun --area AREA ARGS...` detached from this terminal; return pid and log file."""
    make_private_dirs(str(ctx.area.logs_dir))
    log_path = ctx.area.logs_dir / log_name
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    argv = [sys.executable, "-m", "megarun", "--area", str(ctx.area.root), *args]
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                   start_new_session=True, env=_agent_env())
    finally:
        os.close(fd)
    return process.pid, log_path

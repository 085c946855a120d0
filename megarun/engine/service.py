"""The site service behind `megarun launch`: the site cycle in a loop until nothing is left.

One service per site at a time (a file lock). It runs the steps of the site's cycle
(megarun.engine.cycle) at their own pace: events are taken in and jobs dispatched every
POLL_SECONDS, agents settled every AGENT_CHECK_SECONDS, the scheduler polled every
BATCH_POLL_SECONDS, and an SSH site exchanged every EXCHANGE_MIN s while things happen there,
backing off to EXCHANGE_MAX s while nothing does (a quiet login node is not polled ten times a
second). It reports progress, and stops once no job of the site is open, or a launch gate
or a missing batch job holds the rest.

Ctrl-C (or SIGTERM) asks the agents to kill their running jobs (recorded KILLED), takes
unclaimed bundles back (READY again) and leaves nothing half-written. The service of a run
(`megarun run`/`rerun`) asks them to hand their running jobs back instead (READY again, the run
not counted): an interrupted run is continued by running it again, and what waits on those
jobs keeps waiting rather than being settled on an outcome that never happened.
"""

from __future__ import annotations

import errno
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from megarun.core.filelocks import hold_or_refuse
from megarun.core.states import JobState
from megarun.db.connection import DiskFull
from megarun.engine.agents import requeue_orphans, settle_gone_agents
from megarun.engine.batch_poll import return_to_ready
from megarun.engine.cycle import Cycle, active_count, site_kind
from megarun.engine.locks import lock_path
from megarun.engine.matching import match_jobs
from megarun.engine.reports import LaunchProgress, LaunchSummary
from megarun.engine.scope import SiteScope
from megarun.engine.site_kinds import BATCH_POLL_SECONDS, build_cycle
from megarun.errors import AlreadyRunning, EnvironmentProblem, MegarunError

POLL_SECONDS = 0.1
AGENT_CHECK_SECONDS = 1.0
EXCHANGE_MIN = 0.1
EXCHANGE_MAX = 5.0
#: Give up on an SSH site that stays unreachable this long (jobs on it keep their state).
UNREACHABLE_LIMIT = 600.0


class LaunchService:
    """Runs one site's jobs to completion (see module docstring)."""

    def __init__(self, scope: SiteScope,
                 on_progress: Callable[[LaunchProgress], None] | None = None,
                 run_id: int | None = None) -> None:
        self.scope = scope
        self.run_id = run_id
        # A launch starts its own agent on a local-scheduler site even when pilots are open.
        self.cycle: Cycle = build_cycle(scope, site_kind(scope), run_id)
        self.spool = self.cycle.spool
        self.on_progress = on_progress
        self.summary = LaunchSummary(scope.name)
        self._lock_path = lock_path(scope.area, scope.name)
        self._started = 0.0
        self._last_agent_check = 0.0
        self._next_batch_poll = 0.0
        self._exchange_wait = EXCHANGE_MIN
        self._unreachable_since: float | None = None

    def run(self) -> LaunchSummary:
        busy = AlreadyRunning(f"a launcher is already running for site {self.scope.name!r}",
                              "wait for it, or stop it with Ctrl-C / kill")
        with hold_or_refuse(self._lock_path, busy):
            return self._run_locked()

    def _run_locked(self) -> LaunchSummary:
        try:
            self._started = time.monotonic()
            match_jobs(self.scope.db, self.scope.area)  # jobs waiting for a site that suits
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
            self._close_summary()
            self.cycle.reap()
        return self.summary

    def _close_summary(self) -> None:
        report = self.cycle.report
        self.summary.elapsed = time.monotonic() - self._started
        self.summary.done, self.summary.by_status = report.done, report.by_status
        self.summary.agent_restarts = report.agent_restarts

    def _recover(self) -> None:
        """Make the site consistent after whatever the last launcher left behind."""
        db, sid = self.scope.db, self.scope.sid
        self.spool.ensure()
        self.spool.clear_stop("all")
        self.spool.remove_stale_temporaries()
        self.cycle.exchange()  # an unreachable SSH site fails the launch here, changing nothing
        self.cycle.take_in()
        gone = settle_gone_agents(db, sid, self.spool, self.scope.launcher.dead_after,
                                  self.cycle.take_in)
        orphans = requeue_orphans(db, sid, self.spool)
        self.summary.recovered = {"agents_settled": len(gone), "requeued": orphans}

    def _loop(self) -> None:
        cycle = self.cycle
        while True:
            if cycle.exchanges and not self._exchange_due():
                continue
            cycle.take_in()
            self._check_agents()
            by_state = cycle.open_counts()
            if cycle.launch_dispatch(by_state):
                cycle.next_exchange = 0.0  # publish the bundles at once
            active = active_count(by_state)
            self._report(by_state)
            if active == 0 and by_state.get(JobState.READY.value, 0) == 0:
                self.summary.stuck = by_state.get(JobState.AWAITING_PARENTS.value, 0)
                break
            if active == 0 and cycle.gate.blocking:
                self.summary.blocked = cycle.gate.held
                self.summary.blocked_hint = "the jobs stay READY; free some space, then launch again"
                break
            blocked = cycle.keep_agents(by_state)
            if blocked is not None:
                self.summary.blocked, self.summary.blocked_hint = blocked
                break
            time.sleep(POLL_SECONDS)
        cycle.drain_agents()
        self._exchange_quietly()  # deliver the stop request

    def _check_agents(self) -> None:
        """Every AGENT_CHECK_SECONDS: poll the scheduler (at its own pace), settle agents."""
        now = time.monotonic()
        if now - self._last_agent_check < AGENT_CHECK_SECONDS:
            return
        self._last_agent_check = now
        self.cycle.reap()
        if now >= self._next_batch_poll:
            self._next_batch_poll = now + BATCH_POLL_SECONDS
            self.cycle.poll()
        self.cycle.settle()
        self.scope.home.check_home()  # `homehost migrate --force` moved the db away

    # -- exchanges (SSH sites) --------------------------------------------------------------
    def _exchange_due(self) -> bool:
        """Run the site's exchange when it is due; False when not yet, or when it failed."""
        wait = self.cycle.next_exchange - time.monotonic()
        if wait > 0:
            time.sleep(min(POLL_SECONDS, wait))
            return False
        return self._exchange_now()

    def _exchange_now(self) -> bool:
        launch, tails = self.cycle.agent_request()
        try:
            result = self.cycle.exchange(launch, tails)
        except MegarunError as exc:
            self._site_unreachable(exc)
            return False
        self._unreachable_since = None
        self.cycle.site_error = ""
        if result is None:
            return True
        self.cycle.exchanged(result, launch is not None)
        busy = result.event_bytes or result.sent_bundles or result.started_agent
        self._exchange_wait = (EXCHANGE_MIN if busy
                               else min(EXCHANGE_MAX, self._exchange_wait * 1.5))
        self.cycle.next_exchange = time.monotonic() + self._exchange_wait
        return True

    def _site_unreachable(self, exc: MegarunError) -> None:
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        if now - self._unreachable_since > UNREACHABLE_LIMIT:
            raise EnvironmentProblem(f"site {self.scope.name!r} unreachable for "
                                     f"{UNREACHABLE_LIMIT:.0f} s: {exc}",
                                     "its jobs keep their state; launch again later") from exc
        self.cycle.site_error = str(exc)
        self._exchange_wait = EXCHANGE_MAX
        self.cycle.next_exchange = now + EXCHANGE_MAX
        if self.on_progress is not None:
            self._report(self.cycle.open_counts())

    def _exchange_quietly(self) -> None:
        """One more exchange at shutdown; a failure leaves the request for the next one."""
        try:
            self.cycle.exchange()
        except MegarunError as exc:
            self.cycle.site_error = str(exc)

    # -- progress ---------------------------------------------------------------------------
    def _report(self, by_state: dict[str, int]) -> None:
        if self.on_progress is None:
            return
        report = self.cycle.report
        self.on_progress(LaunchProgress(report.done, sum(by_state.values()), dict(by_state),
                                        dict(report.by_status), time.monotonic() - self._started,
                                        self._held_reason(by_state)))

    def _held_reason(self, by_state: dict[str, int]) -> str:
        if self.cycle.site_error:
            return f"site unreachable, retrying: {self.cycle.site_error}"
        return self.cycle.gate.held if by_state.get(JobState.READY.value) else ""

    # -- stopping ---------------------------------------------------------------------------
    def _shutdown_after_interrupt(self) -> None:
        """Kill running jobs through the agents, take unclaimed work back, settle everything."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cycle, db, sid = self.cycle, self.scope.db, self.scope.sid
        try:
            self.spool.request_stop("all", "return" if self.run_id is not None else "kill")
            deadline = time.monotonic() + self.scope.launcher.kill_grace + 10
            pause = 0.5 if cycle.exchanges else 0.1  # a round trip costs more than a look
            while time.monotonic() < deadline and cycle.agents_running():
                self._exchange_quietly()
                cycle.take_in()
                time.sleep(pause)
            cycle.force_stop()
            return_to_ready(self.scope, None, "launcher interrupted")
            cycle.take_in()
            settle_gone_agents(db, sid, self.spool, 0.0, cycle.take_in)
            requeue_orphans(db, sid, self.spool)
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
            self.cycle.site_error = str(exc)
        deadline = time.monotonic() + self.scope.launcher.kill_grace + 5
        while time.monotonic() < deadline and self.cycle.agents_running():
            time.sleep(0.1)
        self.cycle.force_stop()
        try:
            self.cycle.take_in()
        except (DiskFull, OSError) as exc:  # still full: the events wait in the spool
            self.cycle.site_error = str(exc)


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

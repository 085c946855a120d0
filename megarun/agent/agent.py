"""The agent loop: claim bundles, pack jobs onto the nodes' slots, watch them, report events.

A pilot inside a batch allocation runs jobs on every node of it: a job with one rank on the
agent's own node is spawned directly; a job on other nodes, or with more ranks, starts through
the MPI launcher (megarun/agent/mpi.py). Nodes are tracked one by one (megarun/agent/nodes.py).
With a walltime end, no job starts that cannot end in time, and at the end the running jobs
are stopped and handed back.

Single-threaded. SIGCHLD (and SIGTERM/SIGINT) wake a select() through a wakeup pipe, so a
finished job is noticed at once without busy polling; control files are looked at a few times
a second; the heartbeat is rewritten every `heartbeat` seconds.
"""

import logging
import os
import platform
import select
import signal
import time
from typing import Any, Dict

from megarun.agent import AGENT_VERSION, runner
from megarun.agent.job import Options, fault_point
from megarun.agent.processes import Processes
from megarun.agent.spool import EventLog

#: __main__ starts an Agent from Options with one import.
__all__ = ["Agent", "Options"]

log = logging.getLogger("megarun.agent")

#: Seconds between looks at the stop and kill control files.
CONTROL_INTERVAL = 0.2
#: Seconds between looks at the queue while the agent has nothing to do.
IDLE_POLL = 0.05


class Agent(Processes):
    """One agent process (see the module docstring); its parts are in the classes it builds on
    (megarun/agent/base.py says which)."""

    # -- life cycle ---------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped or idle; return the process exit code."""
        fault_point("agent:start")
        self.spool.ensure()
        self.events = EventLog(self.spool.events_path)
        self._install_signals()
        self.events.emit("agent_started", host=self.host, pid=os.getpid(), version=AGENT_VERSION,
                         cpus=self.options.cpus, gpus=len(self.options.gpus),
                         slots_from=self.options.slots_from, **self._pilot_fields())
        self._resume_leftovers()
        self._beat("running")
        log.info("agent %s started: %d node(s) of %d cpus, gpus %s%s", self.options.agent_id,
                 len(self.nodes), self.options.cpus, ",".join(self.options.gpus) or "none",
                 "; counted: " + self.options.slots_from if self.options.slots_from else "")
        while not self._finished():
            self._cycle()
        self._shutdown()
        return 0

    def _pilot_fields(self) -> Dict[str, Any]:
        """What a pilot adds to `agent_started`: nothing when started without pilot options."""
        options = self.options
        fields: Dict[str, Any] = {}
        if options.nodes:
            fields["nodes"] = [node.name for node in self.nodes]
        if options.batch_job:
            fields["batch_job"] = options.batch_job
        if options.pool:
            fields["pool"] = options.pool
        if options.mpi_launcher != "none":
            fields["mpi_launcher"] = options.mpi_launcher
        if options.walltime_end:
            fields["walltime_end"] = options.walltime_end
        return fields

    def _install_signals(self) -> None:
        read_end, write_end = os.pipe()
        for fd in (read_end, write_end):
            os.set_blocking(fd, False)
        self._wakeup_r = read_end
        signal.set_wakeup_fd(write_end)
        signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        log.info("agent got %s: stopping and killing running jobs", runner.describe_signal(signum))
        self._begin_stop("kill", "stopped by " + runner.describe_signal(signum))

    def _finished(self) -> bool:
        if self._ended:
            return False
        if self.stop_mode is not None:
            return not self.running
        if self.options.idle_exit <= 0 or self.running or self.queued or not self._queue_empty:
            return False
        if time.monotonic() - self._idle_since >= self.options.idle_exit:
            self.exit_message = "idle for {:g} s".format(self.options.idle_exit)
            return True
        return False

    def _shutdown(self) -> None:
        assert self.events is not None
        self._return_queued("agent stopped before the job started")
        self._return_held("agent stopped before the job started")
        self.events.emit("agent_exited", message=self.exit_message or "stopped")
        self._flush()
        self._flush_until_written()
        self.spool.forget_claimed()
        self._beat("exited")
        self.events.close()
        log.info("agent %s exited: %s", self.options.agent_id, self.exit_message)

    def _flush_until_written(self) -> None:
        """At exit, events must reach the disk: retry a refused write for a while."""
        assert self.events is not None
        deadline = time.monotonic() + 30
        while self.events.pending() and time.monotonic() < deadline:
            time.sleep(0.5)
            self.events.flush()

    # -- one cycle ----------------------------------------------------------------------------
    def _cycle(self) -> None:
        self._reap()
        now = time.monotonic()
        if now >= self._next_control:
            self._next_control = now + CONTROL_INTERVAL
            self._read_control()
        if self._end_at is not None and now >= self._end_at and not self._ending:
            self._walltime_reached(now)
        self._enforce_deadlines(now)
        if self.stop_mode is None:
            self._claim_if_needed()
            self._start_jobs()
            if self.held and not self.running and not self.queued and (
                    self._queue_empty or self._claims_full()):
                self._return_held("does not fit before the allocation's walltime end")
                self._begin_stop("drain", "no claimed job fits before the allocation's "
                                 "walltime end")
        self._complete_ended()  # after refilling the slots: a free slot never waits on files
        self._flush()
        if now >= self._next_beat:
            self._beat("running")
        if self.running or self.queued:
            self._idle_since = now
        self._wait(self._timeout(now))

    def _timeout(self, now: float) -> float:
        timeout = CONTROL_INTERVAL if self.running else IDLE_POLL
        timeout = min(timeout, max(0.0, self._next_beat - now))
        if self._end_at is not None and not self._ending:
            timeout = min(timeout, max(0.0, self._end_at - now))
        for job in self.running.values():
            for limit in (job.deadline, job.kill_at):
                if limit is not None:
                    timeout = min(timeout, max(0.0, limit - now))
        return timeout

    def _wait(self, timeout: float) -> None:
        try:
            select.select([self._wakeup_r], [], [], timeout)
        except InterruptedError:
            return
        while True:
            try:
                if not os.read(self._wakeup_r, 4096):
                    return
            except BlockingIOError:
                return

    def _beat(self, state: str) -> None:
        self._next_beat = time.monotonic() + self.options.heartbeat
        beat = {"agent": self.options.agent_id, "host": self.host, "pid": os.getpid(),
                "version": AGENT_VERSION, "python": platform.python_version(),
                "started": self.started_at, "time": time.time(),
                "state": state, "running": sorted(self.running)[:1000],
                "queued": len(self.queued) + len(self.held), "cpus": self.options.cpus,
                "gpus": len(self.options.gpus), "max_jobs": self.options.max_jobs,
                "nodes": len(self.nodes), "batch_job": self.options.batch_job or None,
                "pool": self.options.pool or None,
                "walltime_end": self.options.walltime_end or None}
        try:
            self.spool.write_heartbeat(beat)
        except OSError as exc:
            log.error("cannot write the heartbeat: %s", exc.strerror)

    # -- control ------------------------------------------------------------------------------
    def _read_control(self) -> None:
        mode = self.spool.stop_request()
        if mode is not None and (self.stop_mode is None or
                                 (mode != "drain" and self.stop_mode == "drain")):
            self._begin_stop(mode, "stop requested ({})".format(mode))
        for job_id in self.spool.kill_requests():
            if self._kill_request(job_id):
                self.spool.clear_kill(job_id)

    def _begin_stop(self, mode: str, message: str) -> None:
        self.stop_mode = mode
        self.exit_message = message
        self._return_queued("agent stopping before the job started")
        self._return_held("agent stopping before the job started")
        if mode in ("kill", "return"):
            # "return": the launcher of a run was interrupted; its running jobs are stopped and
            # handed back (not ended), so that running the run again continues them.
            reason = "killed" if mode == "kill" else "returned"
            now = time.monotonic()
            for job in list(self.running.values()):
                self._kill(job, reason, now)

    def _walltime_reached(self, now: float) -> None:
        """The allocation ends in `end_grace` s: stop, hand every job back, exit."""
        log.info("allocation walltime reached: stopping %d running job(s)", len(self.running))
        message = "allocation walltime reached"
        self._ending = True
        self.stop_mode = "kill"
        self.exit_message = message
        self._return_queued(message)
        self._return_held(message)
        for job in list(self.running.values()):
            self._kill(job, "walltime", now)  # one already being killed ends as it was going to

    def _kill_request(self, job_id: int) -> bool:
        """Handle a kill file; True when the job was ours."""
        job = self.running.get(job_id)
        if job is not None:
            self._kill(job, "killed", time.monotonic())
            return True
        for waiting in (self.queued, self.held):
            for queued in waiting:
                if queued.id == job_id:
                    waiting.remove(queued)
                    self._report_end(queued, "killed", None, "killed before it started")
                    return True
        return False


def _ignore_signal(signum: int, frame: Any) -> None:
    """SIGCHLD needs a Python handler for the wakeup fd to see it; reaping happens in the loop."""

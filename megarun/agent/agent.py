"""The agent loop: claim bundles, pack jobs onto the node's slots, watch them, report events.

Single-threaded. SIGCHLD (and SIGTERM/SIGINT) wake a select() through a wakeup pipe, so a
finished job is noticed at once without busy polling; control files are looked at a few times
a second; the heartbeat is rewritten every `heartbeat` seconds.
"""

import collections
import errno
import logging
import os
import platform
import re
import select
import signal
import socket
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

from megarun.agent import AGENT_VERSION, rules, runner
from megarun.agent.spool import AgentSpool, EventLog, read_bundle, scan_outcomes

log = logging.getLogger("megarun.agent")

#: Seconds between looks at the stop and kill control files.
CONTROL_INTERVAL = 0.2
#: Seconds between looks at the queue while the agent has nothing to do.
IDLE_POLL = 0.05
#: Seconds a "disk is (not) full" answer is reused for job dirs under the same parent.
DISK_CHECK_SECONDS = 0.5
#: How many queued jobs to scan for one that fits the free slots.
BACKFILL_SCAN = 64


class Options:
    """What the agent was started with."""

    def __init__(self, workdir: str, agent_id: str, cpus: int, gpus: Optional[List[str]] = None,
                 max_jobs: int = 0, heartbeat: float = 5.0, kill_grace: float = 3.0,
                 idle_exit: float = 0.0) -> None:
        self.workdir = workdir
        self.agent_id = agent_id
        self.cpus = max(1, cpus)
        self.gpus = list(gpus or [])
        self.max_jobs = max_jobs
        self.heartbeat = heartbeat
        self.kill_grace = kill_grace
        self.idle_exit = idle_exit


class Job:
    """A claimed job, queued in the agent or running."""

    __slots__ = (
        "attempt",
        "bundle",
        "cpus",
        "deadline",
        "gpu_ids",
        "id",
        "kill_at",
        "kill_reason",
        "pid",
        "spec",
        "started",
        "step",
        "steps",
        "workdir",
    )

    def __init__(self, spec: Dict[str, Any], bundle: Optional[str]) -> None:
        self.spec = spec
        self.id = int(spec["id"])
        self.attempt = int(spec.get("attempt", 0))
        self.workdir = os.path.abspath(str(spec["workdir"]))
        self.steps: List[Dict[str, Any]] = list(spec.get("steps") or [])
        self.step = 0
        self.pid = 0
        self.bundle = bundle
        self.started = 0.0
        self.deadline: Optional[float] = None
        self.cpus = max(1, int(spec.get("cpus") or 1))
        self.gpu_ids: Optional[List[str]] = None
        self.kill_reason: Optional[str] = None
        self.kill_at: Optional[float] = None

    @property
    def gpus(self) -> int:
        return int(self.spec.get("gpus") or 0)

    @property
    def nodes(self) -> int:
        return int(self.spec.get("nodes") or 1)


class Agent:
    """One agent process (see the module docstring)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.spool = AgentSpool(options.workdir, options.agent_id)
        self.host = socket.gethostname()
        self.queued: Deque[Job] = collections.deque()
        self.running: Dict[int, Job] = {}
        self.free_cpus = self.options.cpus
        self.free_gpus = list(self.options.gpus)
        self.bundle_left: Dict[str, int] = {}
        self.finished_bundles: List[str] = []
        self._ended: List[Tuple[Job, str, int]] = []
        self._disk_checks: Dict[str, Tuple[float, bool]] = {}
        self.stop_mode: Optional[str] = None
        self.exit_message = ""
        self.env = dict(os.environ)
        self.env.pop("PYTHONPATH", None)
        self.started_at = time.time()
        self.events: Optional[EventLog] = None
        self._wakeup_r = -1
        self._next_control = 0.0
        self._next_beat = 0.0
        self._idle_since = time.monotonic()
        self._queue_empty = False

    # -- life cycle -------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped or idle; return the process exit code."""
        self.spool.ensure()
        self.events = EventLog(self.spool.events_path)
        self._install_signals()
        self.events.emit("agent_started", host=self.host, pid=os.getpid(), version=AGENT_VERSION,
                         cpus=self.options.cpus, gpus=len(self.options.gpus))
        self._resume_leftovers()
        self._beat("running")
        log.info("agent %s started: %d cpus, gpus %s", self.options.agent_id,
                 self.options.cpus, self.options.gpus or "none")
        while not self._finished():
            self._cycle()
        self._shutdown()
        return 0

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

    # -- one cycle --------------------------------------------------------------------------
    def _cycle(self) -> None:
        self._reap()
        now = time.monotonic()
        if now >= self._next_control:
            self._next_control = now + CONTROL_INTERVAL
            self._read_control()
        self._enforce_deadlines(now)
        if self.stop_mode is None:
            self._claim_if_needed()
            self._start_jobs()
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

    def _flush(self) -> None:
        assert self.events is not None
        if self.events.flush():
            for path in self.finished_bundles:
                self.spool.release_bundle(path)
            self.finished_bundles = []

    def _beat(self, state: str) -> None:
        self._next_beat = time.monotonic() + self.options.heartbeat
        beat = {"agent": self.options.agent_id, "host": self.host, "pid": os.getpid(),
                "version": AGENT_VERSION, "python": platform.python_version(),
                "started": self.started_at, "time": time.time(),
                "state": state, "running": sorted(self.running)[:1000],
                "queued": len(self.queued), "cpus": self.options.cpus,
                "gpus": len(self.options.gpus), "max_jobs": self.options.max_jobs}
        try:
            self.spool.write_heartbeat(beat)
        except OSError as exc:
            log.error("cannot write the heartbeat: %s", exc.strerror)

    # -- control ----------------------------------------------------------------------------
    def _read_control(self) -> None:
        mode = self.spool.stop_request()
        if mode is not None and (self.stop_mode is None or
                                 (mode == "kill" and self.stop_mode != "kill")):
            self._begin_stop(mode, "stop requested ({})".format(mode))
        for job_id in self.spool.kill_requests():
            if self._kill_request(job_id):
                self.spool.clear_kill(job_id)

    def _begin_stop(self, mode: str, message: str) -> None:
        self.stop_mode = mode
        self.exit_message = message
        self._return_queued("agent stopping before the job started")
        if mode == "kill":
            now = time.monotonic()
            for job in list(self.running.values()):
                self._kill(job, "killed", now)

    def _kill_request(self, job_id: int) -> bool:
        """Handle a kill file; True when the job was ours."""
        job = self.running.get(job_id)
        if job is not None:
            self._kill(job, "killed", time.monotonic())
            return True
        for queued in self.queued:
            if queued.id == job_id:
                self.queued.remove(queued)
                self._report_end(queued, "killed", None, "killed before it started")
                return True
        return False

    def _return_queued(self, message: str) -> None:
        assert self.events is not None
        while self.queued:
            job = self.queued.popleft()
            self.events.emit("returned", job=job.id, attempt=job.attempt, message=message)
            self._job_done_with_bundle(job)

    # -- claiming and starting --------------------------------------------------------------
    def _claim_if_needed(self) -> None:
        if len(self.queued) >= self._slots_total():
            return
        path = self.spool.claim_bundle()
        self._queue_empty = path is None
        if path is None:
            return
        specs = read_bundle(path)
        self._accept(specs, path)
        if not specs:
            self.spool.release_bundle(path)

    def _accept(self, specs: List[Dict[str, Any]], bundle: Optional[str]) -> None:
        assert self.events is not None
        if bundle is not None and specs:
            self.bundle_left[bundle] = len(specs)
        for spec in specs:
            job = Job(spec, bundle)
            self.events.emit("claimed", job=job.id, attempt=job.attempt)
            self.queued.append(job)

    def _slots_total(self) -> int:
        return self.options.max_jobs or self.options.cpus

    def _start_jobs(self) -> None:
        scanned = 0
        index = 0
        while self.queued and index < len(self.queued) and scanned < BACKFILL_SCAN:
            if self._at_job_limit() or self.free_cpus == 0:
                return
            job = self.queued[index]
            problem = self._cannot_ever_run(job)
            if problem:
                del self.queued[index]
                self._report_end(job, "error", None, problem)
                continue
            if job.cpus <= self.free_cpus and job.gpus <= len(self.free_gpus):
                del self.queued[index]
                self._start(job)
                continue
            index += 1
            scanned += 1

    def _at_job_limit(self) -> bool:
        return bool(self.options.max_jobs) and len(self.running) >= self.options.max_jobs

    def _cannot_ever_run(self, job: Job) -> str:
        if job.nodes > 1:
            return "needs {} nodes; this agent runs single-node jobs".format(job.nodes)
        if job.cpus > self.options.cpus:
            return "needs {} cpus; the node has {}".format(job.cpus, self.options.cpus)
        if job.gpus > len(self.options.gpus):
            return "needs {} gpus; the node has {}".format(job.gpus, len(self.options.gpus))
        if not job.steps:
            return "the job has no steps"
        return ""

    def _start(self, job: Job) -> None:
        assert self.events is not None
        if self._disk_full(job.workdir):
            self._report_end(job, "error", None,
                             "no space left on device in {}".format(job.workdir))
            return
        self.free_cpus -= job.cpus
        if job.gpus or self.options.gpus:
            job.gpu_ids = self.free_gpus[:job.gpus]
            del self.free_gpus[:job.gpus]
        job.started = time.monotonic()
        timeout = job.spec.get("timeout")
        job.deadline = job.started + float(timeout) if timeout else None
        self.running[job.id] = job
        if self._start_step(job):
            self.events.emit("started", job=job.id, attempt=job.attempt, pid=job.pid,
                             host=self.host)

    def _start_step(self, job: Job) -> bool:
        """Start the job's current step; on failure the job is finished and False returned."""
        name = _step_name(job.steps[job.step], job.step)
        try:
            out, err = runner.open_logs(job.workdir, name)
        except OSError as exc:
            self._finish(job, "error", None, "cannot create the log files in {}: {}".format(
                job.workdir, _describe_os_error(exc)))
            return False
        try:
            env = runner.job_environment(self.env, job.spec, job.gpu_ids)
            job.pid = runner.spawn(runner.command_argv(str(job.steps[job.step].get("cmd", ""))), job.workdir,
                                   env, out, err, self.spool.workdir)
        except runner.StepFailedToStart as exc:
            _write_quietly(err, "megarun: {}\n".format(exc.message))
            self._finish(job, "exit", exc.rc, exc.message)
            return False
        except OSError as exc:
            self._finish(job, "error", None, "cannot start the job: {}".format(
                _describe_os_error(exc)))
            return False
        finally:
            os.close(out)
            os.close(err)
        return True

    def _disk_full(self, workdir: str) -> bool:
        """Whether the disk of a job's work dir is full (looked at twice a second per dir)."""
        parent = os.path.dirname(workdir)
        now = time.monotonic()
        cached = self._disk_checks.get(parent)
        if cached is not None and now - cached[0] < DISK_CHECK_SECONDS:
            return cached[1]
        full = runner.disk_full(_existing_parent(parent))
        if len(self._disk_checks) > 1000:
            self._disk_checks.clear()
        self._disk_checks[parent] = (now, full)
        return full

    # -- watching ---------------------------------------------------------------------------
    def _reap(self) -> None:
        by_pid: Optional[Dict[int, Job]] = None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rc = runner.exit_code(status)
            runner.reaped(pid, rc)
            if by_pid is None:
                by_pid = {job.pid: job for job in self.running.values()}
            job = by_pid.pop(pid, None)
            if job is not None:
                self._step_ended(job, rc)
                if job.id in self.running:  # its next step started: reap that one too
                    by_pid[job.pid] = job

    def _step_ended(self, job: Job, rc: int) -> None:
        if job.kill_reason is not None:
            runner.signal_group(job.pid, signal.SIGKILL)
            self._release(job)
            self._ended.append((job, job.kill_reason, rc))
            return
        if rc == 0 and job.step + 1 < len(job.steps):
            job.step += 1
            self._start_step(job)
            return
        self._release(job)
        self._ended.append((job, "exit", rc))

    def _complete_ended(self) -> None:
        ended, self._ended = self._ended, []
        for job, reason, rc in ended:
            message = self._failure_message(job, rc) if reason == "exit" and rc else ""
            self._complete(job, reason, rc, message)

    def _failure_message(self, job: Job, rc: int) -> str:
        name = _step_name(job.steps[job.step], job.step)
        parts = []
        if rc < 0:
            parts.append("killed by {}".format(runner.describe_signal(-rc)))
        elif rc == 127:
            parts.append("command not found (exit code 127)")
        else:
            parts.append("exit code {}".format(rc))
        if len(job.steps) > 1:
            parts[0] += " in step {!r}".format(name)
        tail = runner.last_line(os.path.join(job.workdir, name + ".err"))
        if tail:
            parts.append(tail)
        if runner.disk_full(job.workdir):
            parts.append("no space left on device in {}".format(job.workdir))
        return ": ".join(parts)

    def _enforce_deadlines(self, now: float) -> None:
        for job in list(self.running.values()):
            if job.kill_at is not None and now >= job.kill_at:
                runner.signal_group(job.pid, signal.SIGKILL)
                job.kill_at = None
            elif job.kill_reason is None and job.deadline is not None and now >= job.deadline:
                self._kill(job, "timeout", now)

    def _kill(self, job: Job, reason: str, now: float) -> None:
        if job.kill_reason is not None:
            return
        job.kill_reason = reason
        job.kill_at = now + self.options.kill_grace
        runner.signal_group(job.pid, signal.SIGTERM)

    # -- ending -----------------------------------------------------------------------------
    def _finish(self, job: Job, reason: str, rc: Optional[int], message: str) -> None:
        self._release(job)
        self._complete(job, reason, rc, message)

    def _release(self, job: Job) -> None:
        """Give the job's cpus and gpus back."""
        if self.running.pop(job.id, None) is None:
            return
        self.free_cpus += job.cpus
        if job.gpu_ids:
            self.free_gpus.extend(job.gpu_ids)

    def _complete(self, job: Job, reason: str, rc: Optional[int], message: str) -> None:
        """Write the job's exit file and report its end."""
        if reason == "timeout" and not message:
            message = "runtime limit of {:g} s reached".format(float(job.spec.get("timeout") or 0))
        try:
            runner.write_exit_file(job.workdir, rc)
        except OSError as exc:
            log.error("job %d: cannot write megarun.exit: %s", job.id, _describe_os_error(exc))
            if not message and rc != 0:
                message = "cannot write megarun.exit: " + _describe_os_error(exc)
        self._report_end(job, reason, rc, message)

    def _report_end(self, job: Job, reason: str, rc: Optional[int], message: str) -> None:
        assert self.events is not None
        runtime = round(time.monotonic() - job.started, 6) if job.started else 0.0
        signum = -rc if rc is not None and rc < 0 else None
        extra = {}
        if reason == "exit" and rc is not None and job.spec.get("rules"):
            steps_run = [_step_name(step, n) for n, step in enumerate(job.steps[:job.step + 1])]
            try:
                extra["status"] = rules.judge(job.spec["rules"], rc, job.workdir, steps_run)
            except (re.error, KeyError, TypeError, ValueError) as exc:
                extra["status"] = "FAIL"
                message = "bad rules in the job spec: {}".format(exc)
        self.events.emit("finished", job=job.id, attempt=job.attempt, reason=reason, rc=rc,
                         signal=signum, message=message, runtime=runtime, **extra)
        self._job_done_with_bundle(job)

    def _job_done_with_bundle(self, job: Job) -> None:
        if job.bundle is None:
            return
        left = self.bundle_left.get(job.bundle, 0) - 1
        if left > 0:
            self.bundle_left[job.bundle] = left
            return
        self.bundle_left.pop(job.bundle, None)
        self.finished_bundles.append(job.bundle)

    # -- restart ----------------------------------------------------------------------------
    def _resume_leftovers(self) -> None:
        """Account for bundles this agent id claimed before a restart."""
        assert self.events is not None
        leftovers = self.spool.leftover_bundles()
        if not leftovers:
            return
        started, ended = scan_outcomes(self.spool.events_path)
        for path in leftovers:
            specs = [s for s in read_bundle(path)
                     if (int(s["id"]), int(s.get("attempt", 0))) not in ended]
            lost = [s for s in specs if (int(s["id"]), int(s.get("attempt", 0))) in started]
            fresh = [s for s in specs if s not in lost]
            for spec in lost:
                self.events.emit("finished", job=int(spec["id"]),
                                 attempt=int(spec.get("attempt", 0)), reason="error", rc=None,
                                 signal=None, message="the agent restarted while the job ran",
                                 runtime=0.0)
            if fresh:
                self.bundle_left[path] = len(fresh)
                for spec in fresh:
                    self.queued.append(Job(spec, path))
            else:
                self.finished_bundles.append(path)
        self._flush()


def _step_name(step: Dict[str, Any], index: int) -> str:
    return str(step.get("name") or "step{}".format(index + 1))


def _ignore_signal(signum: int, frame: Any) -> None:
    """SIGCHLD needs a Python handler for the wakeup fd to see it; reaping happens in the loop."""


def _existing_parent(path: str) -> str:
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc)


def _write_quietly(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    except OSError as exc:
        log.warning("cannot write to a job's log: %s", exc.strerror)

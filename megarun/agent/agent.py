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

import collections
import errno
import json
import logging
import os
import platform
import re
import select
import signal
import socket
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

from megarun.agent import AGENT_VERSION, mpi, nodes, orphans, rules, runner
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
#: Why a running job was stopped -> the message it is handed back with (`returned`, not ended).
HANDED_BACK = {
    "walltime": "allocation walltime reached",
    "returned": "the run was interrupted: running it again continues this job",
}


class Options:
    """What the agent was started with.

    `cpus`, `gpus` and `max_jobs` are per node. `nodes` names the allocation's nodes (default:
    this host only); `own_node` is the name of the agent's own node among them (default: the
    one that names this host). `walltime_end` is the allocation's end in seconds since the
    epoch (0: none); running jobs are stopped `end_grace` seconds before it.
    """

    def __init__(self, workdir: str, agent_id: str, cpus: int, gpus: Optional[List[str]] = None,
                 max_jobs: int = 0, heartbeat: float = 5.0, kill_grace: float = 3.0,
                 idle_exit: float = 0.0, nodes: Optional[List[str]] = None,
                 own_node: str = "", batch_job: str = "", pool: str = "",
                 mpi_launcher: str = "none", mpi_args: Optional[List[str]] = None,
                 walltime_end: float = 0.0, end_grace: float = 30.0,
                 slots_from: str = "") -> None:
        self.workdir = workdir
        self.agent_id = agent_id
        self.cpus = max(1, cpus)
        self.gpus = list(gpus or [])
        self.max_jobs = max_jobs
        self.heartbeat = heartbeat
        self.kill_grace = kill_grace
        self.idle_exit = idle_exit
        self.nodes = list(nodes or [])
        self.own_node = own_node
        self.batch_job = batch_job
        self.pool = pool
        self.mpi_launcher = mpi_launcher
        self.mpi_args = list(mpi_args or [])
        self.walltime_end = walltime_end
        self.end_grace = end_grace
        #: Where `cpus` and `gpus` came from (megarun/agent/allocation.py), for the start log.
        self.slots_from = slots_from


class Job:
    """A claimed job, queued in the agent or running."""

    __slots__ = (
        "attempt",
        "bundle",
        "cpus",
        "deadline",
        "gpu_ids",
        "gpus",
        "id",
        "kill_at",
        "kill_reason",
        "launch",
        "nodes",
        "pid",
        "placed",
        "ranks_per_node",
        "share",
        "spec",
        "started",
        "step",
        "steps",
        "timeout",
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
        self.gpus = int(spec.get("gpus") or 0)
        self.nodes = int(spec.get("nodes") or 1)
        timeout = spec.get("timeout")
        self.timeout: Optional[float] = float(timeout) if timeout else None
        self.gpu_ids: Optional[List[str]] = None
        self.kill_reason: Optional[str] = None
        self.kill_at: Optional[float] = None
        self.ranks_per_node = max(1, int(spec.get("ranks_per_node") or 1))
        packing = int(spec.get("packing") or 0)
        self.share = 1.0 / packing if packing > 0 else 0.0
        self.placed: List[nodes.Node] = []
        self.launch: Optional[mpi.Placement] = None

    @property
    def gpus_per_rank(self) -> int:
        given = self.spec.get("gpus_per_rank")
        return int(given) if given is not None else self.gpus // self.ranks_per_node


class Agent:
    """One agent process (see the module docstring)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.spool = AgentSpool(options.workdir, options.agent_id, options.pool)
        self.host = socket.gethostname()
        self.queued: Deque[Job] = collections.deque()
        #: Claimed jobs whose timeout no longer fits before the walltime end.
        self.held: List[Job] = []
        self.running: Dict[int, Job] = {}
        self.nodes = nodes.make_nodes(options.nodes or [self.host], options.cpus, options.gpus,
                                      options.own_node or self.host)
        own = self.nodes[0] if self.nodes[0].own else None
        #: The nodes jobs may run on: without a launcher, only the agent's own node.
        self.usable = self.nodes if options.mpi_launcher != "none" else [own] if own else []
        self.free_cpus = options.cpus * len(self.usable)
        #: How many claimed jobs the agent holds at most: enough to fill every slot.
        self._claim_limit = (options.max_jobs or options.cpus) * max(1, len(self.usable))
        self._job_cap = options.max_jobs * len(self.usable)
        self._end_at: Optional[float] = None
        self._ending = False
        if options.walltime_end:
            self._end_at = time.monotonic() + (options.walltime_end - options.end_grace
                                               - time.time())
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
        _fault_point("agent:start")
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

    # -- one cycle --------------------------------------------------------------------------
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
                "queued": len(self.queued) + len(self.held), "cpus": self.options.cpus,
                "gpus": len(self.options.gpus), "max_jobs": self.options.max_jobs,
                "nodes": len(self.nodes), "batch_job": self.options.batch_job or None,
                "pool": self.options.pool or None,
                "walltime_end": self.options.walltime_end or None}
        try:
            self.spool.write_heartbeat(beat)
        except OSError as exc:
            log.error("cannot write the heartbeat: %s", exc.strerror)

    # -- control ----------------------------------------------------------------------------
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

    def _return_queued(self, message: str) -> None:
        assert self.events is not None
        while self.queued:
            job = self.queued.popleft()
            self.events.emit("returned", job=job.id, attempt=job.attempt, message=message)
            self._job_done_with_bundle(job)

    def _return_held(self, message: str) -> None:
        assert self.events is not None
        held, self.held = self.held, []
        for job in held:
            self.events.emit("returned", job=job.id, attempt=job.attempt, message=message)
            self._job_done_with_bundle(job)

    # -- claiming and starting --------------------------------------------------------------
    def _claim_if_needed(self) -> None:
        if self._claims_full():
            return
        path = self.spool.claim_bundle()
        self._queue_empty = path is None
        if path is None:
            return
        specs = self._read_claimed(path)
        self._accept(specs, path)
        if not specs:
            self.spool.release_bundle(path)

    def _read_claimed(self, path: str) -> List[Dict[str, Any]]:
        """The runnable specs of a claimed bundle; every other job in it is ended at once.

        A line that is not JSON at all is ended by the id its head still shows (the home host
        writes "id" and "attempt" first); one without a readable id can only be logged.
        """
        assert self.events is not None
        try:
            with open(path, "rb") as handle:
                lines = handle.read().splitlines()
        except OSError as exc:
            log.error("cannot read the bundle %s: %s", path, _describe_os_error(exc))
            return []
        specs = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            spec, problem = _parse_spec(line)
            if spec is not None and not problem:
                specs.append(spec)
                continue
            head = _SPEC_HEAD.match(line)
            if spec is not None:
                job_id, attempt = int(spec["id"]), _int_or_zero(spec.get("attempt"))
            elif head is not None:
                job_id, attempt = int(head.group(1)), int(head.group(2))
            else:
                log.error("%s line %d: not a job spec, skipped", path, number)
                continue
            log.error("job %d: cannot be run: %s", job_id, problem)
            self.events.emit("finished", job=job_id, attempt=attempt, reason="error", rc=None,
                             signal=None, message="bad job spec: " + problem, runtime=0.0)
        return specs

    def _refused(self, spec: Dict[str, Any]) -> bool:
        """End a job whose spec cannot be run (see runner.spec_problem); True if it was."""
        assert self.events is not None
        problem = runner.spec_problem(spec)
        if problem:
            self.events.emit("finished", job=int(spec["id"]),
                             attempt=_int_or_zero(spec.get("attempt")), reason="error", rc=None,
                             signal=None, message="bad job spec: " + problem, runtime=0.0)
        return bool(problem)

    def _accept(self, specs: List[Dict[str, Any]], bundle: Optional[str]) -> None:
        assert self.events is not None
        if bundle is not None and specs:
            self.bundle_left[bundle] = len(specs)
        for spec in specs:
            job = Job(spec, bundle)
            self.events.emit("claimed", job=job.id, attempt=job.attempt)
            self.queued.append(job)

    def _claims_full(self) -> bool:
        """Whether the agent holds enough claimed jobs to fill its slots."""
        return len(self.queued) + len(self.held) >= self._claim_limit

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
            if self._end_at is not None and not self._fits_in_time(job):
                del self.queued[index]
                self.held.append(job)
                continue
            placed = self._place(job)
            if placed is not None:
                del self.queued[index]
                self._start(job, placed)
                continue
            index += 1
            scanned += 1

    def _at_job_limit(self) -> bool:
        return bool(self._job_cap) and len(self.running) >= self._job_cap

    def _cannot_ever_run(self, job: Job) -> str:
        if job.nodes > 1 or job.ranks_per_node > 1:
            problem = self._cannot_launch(job)
            if problem:
                return problem
        if job.cpus > self.options.cpus:
            return "needs {} cpus; the node has {}".format(job.cpus, self.options.cpus)
        if job.gpus > len(self.options.gpus):
            return "needs {} gpus; the node has {}".format(job.gpus, len(self.options.gpus))
        if not job.steps:
            return "the job has no steps"
        return ""

    def _cannot_launch(self, job: Job) -> str:
        """Why a job of several nodes or ranks cannot ever run here ('' if it can)."""
        if self.options.mpi_launcher == "none":
            if job.nodes > 1:
                return "needs {} nodes; this agent runs single-node jobs (no MPI launcher)".format(
                    job.nodes)
            return "needs {} ranks; this agent has no MPI launcher (--mpi-launcher)".format(
                job.ranks_per_node)
        if job.nodes > len(self.usable):
            return "needs {} nodes; the allocation has {}".format(job.nodes, len(self.usable))
        return ""

    def _fits_in_time(self, job: Job) -> bool:
        """Whether the job's timeout ends before the walltime end (minus the grace)."""
        timeout = job.timeout
        return (timeout is None or self._end_at is None
                or time.monotonic() + timeout <= self._end_at)

    def _place(self, job: Job) -> Optional[List[nodes.Node]]:
        """The nodes a job can start on now, or None.

        A single-node job takes the first node with room (the agent's own first); a job of
        several nodes takes whole idle nodes, from the end of the list.
        """
        if job.nodes == 1:
            for node in self.usable:
                if node.fits(job.cpus, job.gpus, job.share, self.options.max_jobs):
                    return [node]
            return None
        idle = [node for node in self.usable if node.idle()]
        if len(idle) < job.nodes:
            return None
        return idle[len(idle) - job.nodes:]

    def _start(self, job: Job, placed: List[nodes.Node]) -> None:
        assert self.events is not None
        if self._disk_full(job.workdir):
            self._report_end(job, "error", None,
                             "no space left on device in {}".format(job.workdir))
            return
        if len(placed) == 1 and placed[0].own and job.ranks_per_node == 1:
            gpu_ids = placed[0].take(job.cpus, job.gpus, job.share)  # the fast path
            if job.gpus or self.options.gpus:
                job.gpu_ids = gpu_ids
            self.free_cpus -= job.cpus
            job.placed = placed
        else:
            self._take(job, placed)
        job.started = time.monotonic()
        timeout = job.timeout
        job.deadline = job.started + timeout if timeout else None
        self.running[job.id] = job
        runner.remove_exit_file(job.workdir)
        if self._start_step(job):
            # pid and start time let whoever settles this agent, should it die, find the
            # step's process group and session (megarun/agent/orphans.py)
            where = self._process_fields(job)
            where["name"] = _step_name(job.steps[0], 0)  # after a rerun --step: not the test's first
            if job.launch is None:
                self.events.emit("started", job=job.id, attempt=job.attempt, host=self.host,
                                 **where)
            else:
                self.events.emit("started", job=job.id, attempt=job.attempt,
                                 host=placed[0].name, nodes=job.launch.nodes,
                                 ranks=job.launch.ranks, launcher=self.options.mpi_launcher,
                                 **where)

    @staticmethod
    def _process_fields(job: Job) -> Dict[str, Any]:
        fields: Dict[str, Any] = {"pid": job.pid}
        start = runner.process_start(job.pid)
        if start is not None:
            fields["start"] = start
        return fields

    def _take(self, job: Job, placed: List[nodes.Node]) -> None:
        """Reserve a launched job's share of its nodes (whole nodes for a job of several)."""
        cpus = job.cpus if len(placed) == 1 else self.options.cpus
        for node in placed:
            gpu_ids = node.take(cpus, job.gpus, job.share)
            if node is placed[0] and (job.gpus or self.options.gpus):
                job.gpu_ids = gpu_ids
        self.free_cpus -= cpus * len(placed)
        job.placed = placed
        job.launch = mpi.Placement([node.name for node in placed], job.ranks_per_node,
                                   int(job.spec.get("threads") or 1), job.gpus_per_rank)

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
            argv = runner.command_argv(str(job.steps[job.step].get("cmd", "")))
            if job.launch is not None:
                argv = mpi.launch_argv(self.options.mpi_launcher, job.launch, self.options.mpi_args,
                                       argv, runner.job_variables(job.spec, job.gpu_ids))
            job.pid = runner.spawn(argv, job.workdir, env, out, err, self.spool.workdir)
        except runner.StepFailedToStart as exc:
            _write_quietly(err, "megarun: {}\n".format(exc.message))
            self._finish(job, "exit", exc.rc, exc.message)
            return False
        except OSError as exc:
            self._finish(job, "error", None, "cannot start the job: {}".format(
                _describe_os_error(exc)))
            return False
        except Exception as exc:  # whatever one job's spec makes spawn raise, the agent goes on
            log.exception("job %d: cannot start step %r", job.id, name)
            message = "cannot start the job: {}: {}".format(type(exc).__name__, exc)
            _write_quietly(err, "megarun: {}\n".format(message))
            self._finish(job, "error", None, message)
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
            if self._start_step(job):
                assert self.events is not None
                self.events.emit("step", job=job.id, attempt=job.attempt,
                                 name=_step_name(job.steps[job.step], job.step),
                                 **self._process_fields(job))
            return
        self._release(job)
        self._ended.append((job, "exit", rc))

    def _complete_ended(self) -> None:
        ended, self._ended = self._ended, []
        for job, reason, rc in ended:
            if reason in HANDED_BACK:
                self._hand_back(job, rc, HANDED_BACK[reason])
                continue
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
        if len(job.steps) + len(rules.kept_steps(job.spec)) > 1:
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
        cpus = job.cpus if len(job.placed) == 1 else self.options.cpus
        for node in job.placed:
            node.give(cpus, job.gpu_ids, job.share)
        self.free_cpus += cpus * len(job.placed)

    def _complete(self, job: Job, reason: str, rc: Optional[int], message: str) -> None:
        """Write the job's exit file and report its end."""
        if reason == "timeout" and not message:
            message = "runtime limit of {:g} s reached".format(float(job.spec.get("timeout") or 0))
        try:
            runner.write_exit_file(job.workdir, rc)
            _fault_point("agent:after-exit-file")
        except OSError as exc:
            log.error("job %d: cannot write megarun.exit: %s", job.id, _describe_os_error(exc))
            if not message and rc != 0:
                message = "cannot write megarun.exit: " + _describe_os_error(exc)
        self._report_end(job, reason, rc, message)

    def _report_end(self, job: Job, reason: str, rc: Optional[int], message: str) -> None:
        assert self.events is not None
        runtime = round(time.monotonic() - job.started, 6) if job.started else 0.0
        signum = -rc if rc is not None and rc < 0 else None
        extra = {}  # type: Dict[str, Any]
        if job.steps:
            # which step the job ended in (status and JUnit show it), counted in the test's
            # steps: those a rerun --step kept come first
            extra["step"] = job.step + len(rules.kept_steps(job.spec))
        if reason == "exit" and rc is not None and job.spec.get("rules"):
            steps_run = rules.kept_steps(job.spec) + [
                _step_name(step, n) for n, step in enumerate(job.steps[:job.step + 1])]
            try:
                extra["status"] = rules.judge(job.spec["rules"], rc, job.workdir, steps_run)
            except (re.error, KeyError, TypeError, ValueError) as exc:
                extra["status"] = "FAIL"
                message = "bad rules in the job spec: {}".format(exc)
        self.events.emit("finished", job=job.id, attempt=job.attempt, reason=reason, rc=rc,
                         signal=signum, message=message, runtime=runtime, **extra)
        self._job_done_with_bundle(job)

    def _hand_back(self, job: Job, rc: int, message: str) -> None:
        """Report a job stopped at the walltime end, or by a run's interrupt, as `returned`:
        it may run again elsewhere.

        No megarun.exit is written: the job did not end, it was interrupted.
        """
        assert self.events is not None
        self.events.emit("returned", job=job.id, attempt=job.attempt,
                         message=message, started=True, rc=rc,
                         signal=-rc if rc < 0 else None,
                         runtime=round(time.monotonic() - job.started, 6))
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
    def _end_earlier_life(self) -> Dict[Tuple[int, int], Dict[str, Any]]:
        """Kill what runs on of the jobs this agent id started before a restart (the same job
        must not run twice); return the `finished` events of those whose megarun.exit shows
        they ended."""
        attempts = [a for a in orphans.unfinished_attempts(self.spool.claimed,
                                                           self.spool.events_path) if a.started]
        alive = orphans.kill_attempts(attempts, orphans.KILL_WAIT)
        if alive:
            log.error("processes of job(s) %s survive SIGKILL",
                      ", ".join(str(a.job) for a in alive))
        outcomes = {}
        for attempt in attempts:
            fields = orphans.ended_fields(attempt)
            if fields is not None:
                outcomes[(attempt.job, attempt.attempt)] = fields
        return outcomes

    def _resume_leftovers(self) -> None:
        """Account for bundles this agent id claimed before a restart."""
        assert self.events is not None
        leftovers = self.spool.leftover_bundles()
        if not leftovers:
            return
        started, ended = scan_outcomes(self.spool.events_path)
        outcomes = self._end_earlier_life()
        for path in leftovers:
            specs = [s for s in read_bundle(path) if _key(s) not in ended]
            lost = [s for s in specs if _key(s) in started]
            fresh = [s for s in specs if s not in lost and not self._refused(s)]
            for spec in lost:
                key = _key(spec)
                fields = outcomes.get(key) or {
                    "job": key[0], "attempt": key[1], "reason": "error", "rc": None,
                    "signal": None, "message": "the agent restarted while the job ran",
                    "runtime": 0.0}
                self.events.emit("finished", **fields)
            if fresh:
                self.bundle_left[path] = len(fresh)
                for spec in fresh:
                    self.queued.append(Job(spec, path))
            else:
                self.finished_bundles.append(path)
        self._flush()


#: The head of a job spec line as the home host writes it: the id of a job whose line is broken.
_SPEC_HEAD = re.compile(rb'\s*\{\s*"id"\s*:\s*(\d+)\s*,\s*"attempt"\s*:\s*(\d+)')


def _parse_spec(line: bytes) -> Tuple[Optional[Dict[str, Any]], str]:
    """(spec, why it cannot run): (None, why) when the line is no JSON object with an id."""
    try:
        spec = json.loads(line.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError included
        return None, "not valid JSON: {}".format(exc)
    if not isinstance(spec, dict):
        return None, "not a JSON object"
    try:
        int(spec["id"])
    except (KeyError, TypeError, ValueError):
        return None, "no job id"
    return spec, runner.spec_problem(spec, b"\\u0000" in line)


def _key(spec: Dict[str, Any]) -> Tuple[int, int]:
    """(job, attempt) of a spec whose id is known to be an integer."""
    return int(spec["id"]), _int_or_zero(spec.get("attempt"))


def _int_or_zero(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _fault_point(name: str) -> None:
    """Die on the spot, like `kill -9`, when $MEGARUN_FAULT names this step (tests only).

    The agent's own copy of megarun/core/faults.py: the agent imports nothing outside itself.
    """
    if _FAULT == name:
        os.kill(os.getpid(), signal.SIGKILL)


_FAULT = os.environ.get("MEGARUN_FAULT")  # read once: the check runs at every job's end


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

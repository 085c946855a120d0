"""Starting the jobs' processes step by step, watching them end, and stopping them.

Stdlib only, Python 3.6.
"""

import logging
import os
import signal
import time
from typing import Any, Dict, List, Optional

from megarun.agent import mpi, nodes, rules, runner
from megarun.agent.job import Job, describe_os_error, existing_parent, step_name, write_quietly
from megarun.agent.placement import Placement

log = logging.getLogger("megarun.agent")

#: Seconds a "disk is (not) full" answer is reused for job dirs under the same parent.
DISK_CHECK_SECONDS = 0.5
#: How many queued jobs to scan for one that fits the free slots.
BACKFILL_SCAN = 64
#: Why a running job was stopped -> the message it is handed back with (`returned`, not ended).
HANDED_BACK = {
    "walltime": "allocation walltime reached",
    "returned": "the run was interrupted: running it again continues this job",
}


class Processes(Placement):
    """Starts, reaps and kills the processes of running jobs."""

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
            where["name"] = step_name(job.steps[0], 0)  # after a rerun --step: not the test's first
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

    def _start_step(self, job: Job) -> bool:
        """Start the job's current step; on failure the job is finished and False returned."""
        name = step_name(job.steps[job.step], job.step)
        try:
            out, err = runner.open_logs(job.workdir, name)
        except OSError as exc:
            self._finish(job, "error", None, "cannot create the log files in {}: {}".format(
                job.workdir, describe_os_error(exc)))
            return False
        try:
            env = runner.job_environment(self.env, job.spec, job.gpu_ids)
            argv = runner.command_argv(str(job.steps[job.step].get("cmd", "")))
            if job.launch is not None:
                argv = mpi.launch_argv(self.options.mpi_launcher, job.launch, self.options.mpi_args,
                                       argv, runner.job_variables(job.spec, job.gpu_ids))
            job.pid = runner.spawn(argv, job.workdir, env, out, err, self.spool.workdir)
        except runner.StepFailedToStart as exc:
            write_quietly(err, "megarun: {}\n".format(exc.message))
            self._finish(job, "exit", exc.rc, exc.message)
            return False
        except OSError as exc:
            self._finish(job, "error", None, "cannot start the job: {}".format(
                describe_os_error(exc)))
            return False
        except Exception as exc:  # whatever one job's spec makes spawn raise, the agent goes on
            log.exception("job %d: cannot start step %r", job.id, name)
            message = "cannot start the job: {}: {}".format(type(exc).__name__, exc)
            write_quietly(err, "megarun: {}\n".format(message))
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
        full = runner.disk_full(existing_parent(parent))
        if len(self._disk_checks) > 1000:
            self._disk_checks.clear()
        self._disk_checks[parent] = (now, full)
        return full

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
                                 name=step_name(job.steps[job.step], job.step),
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
        name = step_name(job.steps[job.step], job.step)
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

    def _finish(self, job: Job, reason: str, rc: Optional[int], message: str) -> None:
        self._release(job)
        self._complete(job, reason, rc, message)

"""How the agent tells the home side what became of its jobs: events and released bundles.

A bundle is released (the home side may forget it) once every job of it is reported and the
events are on disk. Stdlib only, Python 3.6.
"""

import logging
import re
import time
from typing import Any, Dict, Optional

from megarun.agent import rules, runner
from megarun.agent.base import AgentState
from megarun.agent.job import Job, describe_os_error, fault_point, step_name
from megarun.agent.states import FAIL

log = logging.getLogger("megarun.agent")


class Reporting(AgentState):
    """Reports the end or the return of jobs, and releases finished bundles."""

    def _flush(self) -> None:
        assert self.events is not None
        if self.events.flush():
            for path in self.finished_bundles:
                self.spool.release_bundle(path)
            self.finished_bundles = []

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

    def _complete(self, job: Job, reason: str, rc: Optional[int], message: str) -> None:
        """Write the job's exit file and report its end."""
        if reason == "timeout" and not message:
            message = "runtime limit of {:g} s reached".format(float(job.spec.get("timeout") or 0))
        try:
            runner.write_exit_file(job.workdir, rc)
            fault_point("agent:after-exit-file")
        except OSError as exc:
            log.error("job %d: cannot write megarun.exit: %s", job.id, describe_os_error(exc))
            if not message and rc != 0:
                message = "cannot write megarun.exit: " + describe_os_error(exc)
        self._report_end(job, reason, rc, message)

    def _report_end(self, job: Job, reason: str, rc: Optional[int], message: str) -> None:
        assert self.events is not None
        runtime = round(time.monotonic() - job.started, 6) if job.started else 0.0
        signum = -rc if rc is not None and rc < 0 else None
        extra: Dict[str, Any] = {}
        if job.steps:
            # which step the job ended in (status and JUnit show it), counted in the test's
            # steps: those a rerun --step kept come first
            extra["step"] = job.step + len(rules.kept_steps(job.spec))
        if reason == "exit" and rc is not None and job.spec.get("rules"):
            steps_run = rules.kept_steps(job.spec) + [
                step_name(step, n) for n, step in enumerate(job.steps[:job.step + 1])]
            try:
                extra["status"] = rules.judge(job.spec["rules"], rc, job.workdir, steps_run)
            except (re.error, KeyError, TypeError, ValueError) as exc:
                extra["status"] = FAIL
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

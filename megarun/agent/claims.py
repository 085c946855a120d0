"""How the agent takes work: claiming bundles from the queue, and taking back its own after a
restart (a job that may still run must not run twice). Stdlib only, Python 3.6.
"""

import logging
from typing import Any, Dict, List, Optional, Tuple

from megarun.agent import orphans, runner
from megarun.agent.job import SPEC_HEAD, Job, describe_os_error, int_or_zero, parse_spec, spec_key
from megarun.agent.reports import Reporting
from megarun.agent.spool import read_bundle, scan_outcomes

log = logging.getLogger("megarun.agent")


class Claiming(Reporting):
    """Claims bundles while the agent has room, and resumes the bundles of an earlier life."""

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
            log.error("cannot read the bundle %s: %s", path, describe_os_error(exc))
            return []
        specs = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            spec, problem = parse_spec(line)
            if spec is not None and not problem:
                specs.append(spec)
                continue
            head = SPEC_HEAD.match(line)
            if spec is not None:
                job_id, attempt = int(spec["id"]), int_or_zero(spec.get("attempt"))
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
                             attempt=int_or_zero(spec.get("attempt")), reason="error", rc=None,
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
            specs = [s for s in read_bundle(path) if spec_key(s) not in ended]
            lost = [s for s in specs if spec_key(s) in started]
            fresh = [s for s in specs if s not in lost and not self._refused(s)]
            for spec in lost:
                key = spec_key(spec)
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

"""Where a job fits: the agent's nodes and their cpu and gpu slots, taken and given back.

Stdlib only, Python 3.6.
"""

import time
from typing import List, Optional

from megarun.agent import mpi, nodes
from megarun.agent.claims import Claiming
from megarun.agent.job import Job


class Placement(Claiming):
    """Decides whether and where a claimed job can run, and reserves its slots."""

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

    def _release(self, job: Job) -> None:
        """Give the job's cpus and gpus back."""
        if self.running.pop(job.id, None) is None:
            return
        cpus = job.cpus if len(job.placed) == 1 else self.options.cpus
        for node in job.placed:
            node.give(cpus, job.gpu_ids, job.share)
        self.free_cpus += cpus * len(job.placed)

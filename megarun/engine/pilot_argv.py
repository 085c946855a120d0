"""The agent command line a batch script runs: the pilot's (or direct job's) agent, its pool,
its pace and the slots it may use inside the allocation (at most what the batch job asked for).
"""

from __future__ import annotations

from megarun.engine.scope import SiteScope
from megarun.schedulers.base import Allocation
from megarun.sites.connect import agent_command

#: Seconds before the allocation's end at which a pilot stops its jobs and hands them back.
END_GRACE = 30.0


def pilot_argv(scope: SiteScope, batch_id: int, pool: str | None,
               idle_exit: float) -> list[str]:
    """The agent command a batch script runs (the script adds --walltime-end)."""
    site, settings = scope.site, scope.launcher
    node = site.spec.node
    argv = [*agent_command(site), "run", "--workdir", site.workdir,
            "--agent-id", f"batch-{batch_id}", "--batch-job", str(batch_id),
            "--nodes-from", site.scheduler if site.scheduler != "local" else "none",
            "--mpi-launcher", site.spec.mpi_launcher,
            "--heartbeat", str(settings.heartbeat), "--kill-grace", str(settings.kill_grace),
            "--idle-exit", f"{idle_exit:g}", "--end-grace", f"{END_GRACE:g}"]
    argv += slot_options(site.spec.pilot, node.cpus, node.gpus)
    if node.max_jobs:
        argv += ["--max-jobs", str(node.max_jobs)]
    for extra in site.spec.mpi_args:
        argv += ["--mpi-arg", str(extra)]
    if pool:
        argv += ["--pool", pool]
    return argv


def slot_options(allocation: Allocation, node_cpus: int, node_gpus: int) -> list[str]:
    """The agent's slot options inside an allocation: at most what the batch job asked for.

    Whole nodes: the agent counts the node's CPUs itself (`--whole-nodes`: not the one slot
    per node that PBS and LSF list for an exclusive job); the site's node shape (node.cpus,
    node.gpus), when given, caps it. A node shape: its CPUs and GPUs, capped by the site's.
    """
    if allocation.exclusive:
        cpus, gpus, argv = node_cpus, node_gpus, ["--whole-nodes"]
    else:
        cpus = min(node_cpus, allocation.cpus_per_node) if node_cpus else \
            allocation.cpus_per_node
        gpus = min(node_gpus, allocation.gpus_per_node) if node_gpus else \
            allocation.gpus_per_node
        argv = []
    if cpus:
        argv += ["--cpus", str(cpus)]
    if gpus:
        argv += ["--gpus", ",".join(str(i) for i in range(gpus))]
    return argv

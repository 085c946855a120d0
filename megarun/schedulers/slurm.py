"""Slurm: sbatch --parsable, one squeue for every job, scancel.

Accounting (sacct) is often off, so status comes from squeue alone: `-t all` keeps finished jobs
visible for MinJobAge (about five minutes); after that a job is simply gone and the services judge
it by its exit-code file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from megarun.schedulers.base import (
    Allocation,
    BatchState,
    ExtraValue,
    NamedJob,
    QueueEntry,
    Scheduler,
    SchedulerError,
    ScriptRequest,
    check_ids,
    directive_value,
    flag_or_value,
    normalize_key,
    queue_and_account,
    split_minutes,
)

#: %i job id, %T long state name, %r reason (may hold spaces: last field).
STATUS_FORMAT = "%i %T %r"
#: %i job id, %j job name (may hold spaces: last field).
NAMES_FORMAT = "%i %j"

_STATES: dict[str, BatchState] = {
    "PENDING": BatchState.QUEUED,
    "REQUEUED": BatchState.QUEUED,
    "REQUEUE_HOLD": BatchState.QUEUED,
    "REQUEUE_FED": BatchState.QUEUED,
    "CONFIGURING": BatchState.QUEUED,
    "RESV_DEL_HOLD": BatchState.QUEUED,
    "RUNNING": BatchState.RUNNING,
    "COMPLETING": BatchState.RUNNING,
    "SUSPENDED": BatchState.RUNNING,
    "STOPPED": BatchState.RUNNING,
    "SIGNALING": BatchState.RUNNING,
    "STAGE_OUT": BatchState.RUNNING,
    "RESIZING": BatchState.RUNNING,
    "COMPLETED": BatchState.FINISHED,
    "FAILED": BatchState.FINISHED,
    "TIMEOUT": BatchState.FINISHED,
    "NODE_FAIL": BatchState.FINISHED,
    "BOOT_FAIL": BatchState.FINISHED,
    "DEADLINE": BatchState.FINISHED,
    "OUT_OF_MEMORY": BatchState.FINISHED,
    "PREEMPTED": BatchState.FINISHED,
    "SPECIAL_EXIT": BatchState.FINISHED,
    "REVOKED": BatchState.FINISHED,
    "CANCELLED": BatchState.CANCELLED,
}

#: Pending reasons that no amount of waiting fixes: the request exceeds what the partition,
#: account or QOS allows, or a dependency can never be met. (ReqNodeNotAvail is left out: it
#: also shows during maintenance reservations and clears by itself.)
NEVER_RUNS_REASONS = frozenset({
    "PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
    "InvalidAccount", "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed",
    "DependencyNeverSatisfied", "QOSMaxNodePerJobLimit", "QOSMaxWallDurationPerJobLimit",
    "QOSMaxCpuPerJobLimit", "AssocMaxNodesPerJobLimit", "AssocMaxWallDurationPerJobLimit",
    "AssocMaxCpuPerJobLimit", "QOSMinGRES", "QOSMaxGRESPerJob",
})


class SlurmScheduler(Scheduler):
    name: ClassVar[str] = "slurm"
    commands: ClassVar[tuple[str, ...]] = ("sbatch", "squeue", "scancel")
    nodelist_env: ClassVar[str] = "SLURM_NODELIST"
    jobid_env: ClassVar[str] = "SLURM_JOB_ID"
    skip: ClassVar[frozenset[str]] = frozenset({
        "job-name", "J", "nodes", "N", "time", "t", "output", "o", "error", "e", "chdir", "D",
        "partition", "p", "account", "A", "parsable", "wrap",
    })
    allocation_keys: ClassVar[frozenset[str]] = frozenset({
        "exclusive", "ntasks-per-node", "cpus-per-task", "c", "gpus-per-node",
    })

    def directives(self, req: ScriptRequest) -> list[str]:
        hours, minutes = split_minutes(req.walltime_minutes)
        lines = [
            f"#SBATCH --job-name={directive_value(req.job_name, 'job name')}",
            *self.allocation_lines(req.nodes, req.allocation, req.extras),
            f"#SBATCH --time={hours}:{minutes:02d}:00",
            f"#SBATCH --chdir={req.batch_dir}",
            f"#SBATCH --output={req.output}",
        ]
        lines += queue_and_account(req, "#SBATCH --partition=", "#SBATCH --account=")
        return lines + self.extra_lines(req.extras)

    def allocation_lines(self, nodes: int, allocation: Allocation,
                         extras: dict[str, ExtraValue]) -> list[str]:
        # Without --exclusive or a shape, Slurm (CR_Core) allocates one core per node.
        lines = [f"#SBATCH --nodes={nodes}"]
        if allocation.exclusive:
            lines.append("#SBATCH --exclusive")
        else:
            # One task per node holding the shape's CPUs: SLURM_CPUS_ON_NODE tells the agent.
            lines += ["#SBATCH --ntasks-per-node=1",
                      f"#SBATCH --cpus-per-task={allocation.cpus_per_node}"]
        if allocation.gpus_per_node:  # GRES come only on request, even with --exclusive
            lines.append(f"#SBATCH --gpus-per-node={allocation.gpus_per_node}")
        return lines

    def extra_directive(self, key: str, value: ExtraValue) -> str | None:
        option = normalize_key(key)
        if len(option) == 1:
            return flag_or_value(f"#SBATCH -{option}", value, " ", f"slurm.{key}")
        return flag_or_value(f"#SBATCH --{option}", value, "=", f"slurm.{key}")

    def submit_argv(self, script_path: str) -> list[str]:
        return ["sbatch", "--parsable", script_path]

    def parse_submit(self, stdout: str) -> str:
        # --parsable prints "<id>" or "<id>;<cluster>"; warnings go to stderr.
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        if lines:
            scheduler_id = lines[-1].split(";", 1)[0]
            if scheduler_id.isdigit():
                return scheduler_id
        raise SchedulerError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")

    def status_argv(self, user: str | None, ids: Sequence[str]) -> list[str]:
        # No -j: squeue fails on the whole call when one id was purged. One call per site,
        # filtered to the user (--me: whoever the login is, Slurm 20.11+).
        check_ids(ids)
        argv = ["squeue", "-h", "-t", "all", "-o", STATUS_FORMAT]
        return [*argv, "-u", user] if user else [*argv, "--me"]

    def parse_status(self, stdout: str) -> dict[str, QueueEntry]:
        entries = {}
        for line in stdout.splitlines():
            fields = line.split(None, 2)
            if not fields:
                continue
            if len(fields) < 2:
                raise SchedulerError(f"squeue printed a line megarun cannot read: {line!r}")
            entry = _entry(fields[0], fields[1], fields[2].strip() if len(fields) > 2 else "")
            entries[entry.scheduler_id] = entry
        return entries

    def names_argv(self, user: str | None) -> list[str] | None:
        argv = ["squeue", "-h", "-t", "all", "-o", NAMES_FORMAT]
        return [*argv, "-u", user] if user else [*argv, "--me"]

    def parse_names(self, stdout: str, user: str | None) -> list[NamedJob]:
        found = []
        for line in stdout.splitlines():
            fields = line.split(None, 1)
            if not fields:
                continue
            if not fields[0][:1].isdigit():
                raise SchedulerError(f"squeue printed a line megarun cannot read: {line!r}")
            found.append(NamedJob(fields[0], fields[1].strip() if len(fields) > 1 else ""))
        return found

    def cancel_argv(self, ids: Sequence[str]) -> list[str]:
        return ["scancel", *check_ids(ids)]

    def version_argv(self) -> list[str]:
        return ["sbatch", "--version"]


def _entry(scheduler_id: str, native: str, reason: str) -> QueueEntry:
    # A state may carry a suffix ("CANCELLED by 1000" in some views): the first word counts.
    word = native.split("+", 1)[0]
    state = _STATES.get(word, BatchState.QUEUED)
    reason = "" if reason in ("None", "(null)") else reason
    never = state is BatchState.QUEUED and reason.split(",", 1)[0] in NEVER_RUNS_REASONS
    return QueueEntry(scheduler_id, native, state, reason, never_runs=never)

"""Cobalt (ALCF): `qsub --mode script`, one `qstat --header JobID:State` for every job, qdel.

Cobalt runs a script job only when the script is executable: the service writes it with mode
0o755. Finished jobs leave Cobalt's queue at once; the exit-code file tells how they ended.

Cobalt allocates whole nodes only (`-n` counts nodes, never cores), so a pilot owns each node
it gets without any further directive, and a node shape is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from megarun.errors import ConfigError
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

STATUS_HEADER = "JobID:State"
#: The name last: the only field that may hold spaces.
NAMES_HEADER = "JobID:JobName"

_STATES: dict[str, BatchState] = {
    "queued": BatchState.QUEUED, "starting": BatchState.QUEUED, "hold": BatchState.QUEUED,
    "user_hold": BatchState.QUEUED, "admin_hold": BatchState.QUEUED,
    "dep_hold": BatchState.QUEUED, "maxrun_hold": BatchState.QUEUED,
    "dep_fail": BatchState.QUEUED,
    "running": BatchState.RUNNING, "exiting": BatchState.RUNNING,
    "killing": BatchState.RUNNING, "cleanup": BatchState.RUNNING,
    "done": BatchState.FINISHED,
}


class CobaltScheduler(Scheduler):
    name: ClassVar[str] = "cobalt"
    commands: ClassVar[tuple[str, ...]] = ("qsub", "qstat", "qdel")
    nodelist_env: ClassVar[str] = "COBALT_PARTNAME"
    jobid_env: ClassVar[str] = "COBALT_JOBID"
    skip: ClassVar[frozenset[str]] = frozenset({
        "n", "t", "o", "e", "O", "q", "A", "jobname", "cwd", "mode", "nodecount", "time",
        "proccount",
    })

    def directives(self, req: ScriptRequest) -> list[str]:
        split_minutes(req.walltime_minutes)
        lines = [
            f"#COBALT --jobname {directive_value(req.job_name, 'job name')}",
            *self.allocation_lines(req.nodes, req.allocation, req.extras),
            f"#COBALT -t {req.walltime_minutes}",
            f"#COBALT --cwd {req.batch_dir}",
            f"#COBALT -o {req.output}",
        ]
        lines += queue_and_account(req, "#COBALT -q ", "#COBALT -A ")
        return lines + self.extra_lines(req.extras)

    def allocation_lines(self, nodes: int, allocation: Allocation,
                         extras: dict[str, ExtraValue]) -> list[str]:
        if not allocation.exclusive:
            raise ConfigError("Cobalt allocates whole nodes only: a node shape "
                              "(pilot.exclusive = false) cannot apply")
        return [f"#COBALT -n {nodes}"]  # whole nodes: nothing more to ask for

    def extra_directive(self, key: str, value: ExtraValue) -> str | None:
        option = normalize_key(key)
        prefix = f"#COBALT -{option}" if len(option) == 1 else f"#COBALT --{option}"
        return flag_or_value(prefix, value, " ", f"cobalt.{key}")

    def submit_argv(self, script_path: str) -> list[str]:
        return ["qsub", "--mode", "script", script_path]

    def parse_submit(self, stdout: str) -> str:
        # Cobalt may print notes first ("Job routed to queue ..."); the id is the last line.
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        if lines and lines[-1].isdigit():
            return lines[-1]
        raise SchedulerError(f"qsub printed no job id: {stdout.strip()[:200]!r}")

    def status_argv(self, user: str | None, ids: Sequence[str]) -> list[str]:
        checked = check_ids(ids)
        if not checked:
            raise SchedulerError("Cobalt's qstat needs the ids of the batch jobs to show")
        return ["qstat", "--header", STATUS_HEADER, *checked]

    def status_failed(self, code: int, stderr: str) -> bool:
        # qstat exits 1 without a word when none of the ids is known any more.
        return code != 0 and bool(stderr.strip())

    def parse_status(self, stdout: str) -> dict[str, QueueEntry]:
        entries = {}
        for line in stdout.splitlines():
            fields = line.split()
            if not fields or fields[0] == "JobID" or set(line.strip()) == {"="}:
                continue
            if len(fields) < 2 or not fields[0].isdigit():
                raise SchedulerError(f"qstat printed a line megarun cannot read: {line[:100]!r}")
            entries[fields[0]] = _entry(fields[0], fields[1])
        return entries

    def names_argv(self, user: str | None) -> list[str] | None:
        argv = ["qstat", "--header", NAMES_HEADER]
        return [*argv, "-u", user] if user else argv

    def parse_names(self, stdout: str, user: str | None) -> list[NamedJob]:
        found = []
        for line in stdout.splitlines():
            fields = line.split(None, 1)
            if not fields or fields[0] == "JobID" or set(line.strip()) == {"="}:
                continue
            if not fields[0].isdigit():
                raise SchedulerError(f"qstat printed a line megarun cannot read: {line[:100]!r}")
            found.append(NamedJob(fields[0], fields[1].strip() if len(fields) > 1 else ""))
        return found

    def cancel_argv(self, ids: Sequence[str]) -> list[str]:
        return ["qdel", *check_ids(ids)]

    def version_argv(self) -> list[str]:
        return ["qstat", "--version"]


def _entry(job_id: str, native: str) -> QueueEntry:
    if native not in _STATES:
        raise SchedulerError(f"qstat shows job {job_id} in state {native!r}, unknown to megarun")
    never = native == "dep_fail"
    reason = "a job it depends on failed" if never else ""
    return QueueEntry(job_id, native, _STATES[native], reason, never_runs=never)

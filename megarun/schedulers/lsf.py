"""IBM Spectrum LSF: `bsub` reading the script on stdin, one `bjobs -o` for every job, bkill.

bsub reads #BSUB lines only from a script given on stdin, so submit_stdin is True: the service
passes the rendered script's bytes as the command's stdin.

Nodes: by default `-n N -R "span[ptile=1]" -x` (N whole hosts, exclusive). A node shape of C
CPUs (and G GPUs) is `-n N*C -R "span[ptile=C]"` (and `-gpu "num=G"`): C slots on each host.
A site whose LSF allocates whole nodes with `-nnodes` (CSM, e.g. Summit) sets the extra
`nnodes = true`; those nodes are always whole.
"""

from __future__ import annotations

import re
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
    queue_and_account,
    split_minutes,
)

#: Fields of `bjobs -o`; pend_reason (may hold spaces and colons) comes last.
STATUS_FORMAT = "jobid stat exit_code pend_reason delimiter='|'"
#: The job name last: it may hold the delimiter.
NAMES_FORMAT = "jobid job_name delimiter='|'"

_STATES: dict[str, BatchState] = {
    "PEND": BatchState.QUEUED, "PSUSP": BatchState.QUEUED, "WAIT": BatchState.QUEUED,
    "PROV": BatchState.QUEUED,
    "RUN": BatchState.RUNNING, "USUSP": BatchState.RUNNING, "SSUSP": BatchState.RUNNING,
    "UNKWN": BatchState.RUNNING,
    "DONE": BatchState.FINISHED, "EXIT": BatchState.FINISHED, "ZOMBI": BatchState.FINISHED,
}
_SUBMITTED = re.compile(r"Job <(\d+)> is submitted")
_NOT_FOUND = re.compile(r"Job <[^>]*> is not found|No (unfinished )?job found", re.IGNORECASE)
_ROW = re.compile(r"^\d+(\[\d+\])?\|")


class LsfScheduler(Scheduler):
    name: ClassVar[str] = "lsf"
    commands: ClassVar[tuple[str, ...]] = ("bsub", "bjobs", "bkill")
    nodelist_env: ClassVar[str] = "LSB_HOSTS"
    jobid_env: ClassVar[str] = "LSB_JOBID"
    skip: ClassVar[frozenset[str]] = frozenset({
        "J", "n", "W", "o", "e", "oo", "eo", "cwd", "q", "P", "x", "i", "is",
    })
    allocation_keys: ClassVar[frozenset[str]] = frozenset({"gpu"})
    submit_stdin: ClassVar[bool] = True

    def directives(self, req: ScriptRequest) -> list[str]:
        hours, minutes = split_minutes(req.walltime_minutes)
        lines = [f"#BSUB -J {directive_value(req.job_name, 'job name')}",
                 *self.allocation_lines(req.nodes, req.allocation, req.extras)]
        lines += [
            f"#BSUB -W {hours}:{minutes:02d}",
            f"#BSUB -cwd {req.batch_dir}",
            f"#BSUB -o {req.output}",
        ]
        lines += queue_and_account(req, "#BSUB -q ", "#BSUB -P ")
        return lines + self.extra_lines(req.extras)

    def allocation_lines(self, nodes: int, allocation: Allocation,
                         extras: dict[str, ExtraValue]) -> list[str]:
        if extras.get("nnodes") is True:
            if not allocation.exclusive:
                raise ConfigError("lsf.nnodes allocates whole nodes: a node shape "
                                  "(pilot.exclusive = false) cannot apply; remove one of them")
            return [f"#BSUB -nnodes {nodes}"]
        if allocation.exclusive:
            return [f"#BSUB -n {nodes}", '#BSUB -R "span[ptile=1]"', "#BSUB -x"]
        per_host = allocation.cpus_per_node
        lines = [f"#BSUB -n {nodes * per_host}", f'#BSUB -R "span[ptile={per_host}]"']
        if allocation.gpus_per_node:
            lines.append(f'#BSUB -gpu "num={allocation.gpus_per_node}"')
        return lines

    def extra_directive(self, key: str, value: ExtraValue) -> str | None:
        if key == "nnodes":
            return None  # part of the node request
        return flag_or_value(f"#BSUB -{key}", value, " ", f"lsf.{key}")

    def submit_argv(self, script_path: str) -> list[str]:
        return ["bsub"]  # the script goes on stdin (submit_stdin)

    def parse_submit(self, stdout: str) -> str:
        match = _SUBMITTED.search(stdout)
        if match is None:
            raise SchedulerError(f"bsub printed no job id: {stdout.strip()[:200]!r}")
        return match.group(1)

    def status_argv(self, user: str | None, ids: Sequence[str]) -> list[str]:
        # -a keeps jobs finished within CLEAN_PERIOD visible (state DONE or EXIT).
        checked = check_ids(ids)
        argv = ["bjobs", "-a", "-noheader", "-o", STATUS_FORMAT]
        # bjobs shows the login user's jobs by default; the ids narrow it when no user is given.
        return [*argv, "-u", user] if user else argv + checked

    def status_failed(self, code: int, stderr: str) -> bool:
        # bjobs exits 255 for an unknown id or for "no job found" (LSB_BJOBS_CONSISTENT_EXIT_CODE).
        if code == 0:
            return False
        lines = [line for line in stderr.splitlines() if line.strip()]
        return not lines or not all(_NOT_FOUND.search(line) for line in lines)

    def parse_status(self, stdout: str) -> dict[str, QueueEntry]:
        entries = {}
        for line in _rows(stdout):
            fields = [*line.split("|", 3), "", "", ""]
            entry = _entry(fields[0], fields[1], fields[2], fields[3])
            entries[entry.scheduler_id] = entry
        return entries

    def names_argv(self, user: str | None) -> list[str] | None:
        argv = ["bjobs", "-a", "-noheader", "-o", NAMES_FORMAT]
        return [*argv, "-u", user] if user else argv

    def parse_names(self, stdout: str, user: str | None) -> list[NamedJob]:
        return [NamedJob(*line.split("|", 1)) for line in _rows(stdout)]

    def cancel_argv(self, ids: Sequence[str]) -> list[str]:
        return ["bkill", *check_ids(ids)]

    def version_argv(self) -> list[str]:
        return ["bjobs", "-V"]


def _rows(stdout: str) -> list[str]:
    """The job rows of a `bjobs -o ... delimiter='|'` output ("No job found" lines left out)."""
    rows = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line or _NOT_FOUND.search(line):
            continue
        if not _ROW.match(line):
            raise SchedulerError(f"bjobs printed a line megarun cannot read: {line[:100]!r}")
        rows.append(line)
    return rows


def _entry(job_id: str, native: str, exit_text: str, reason: str) -> QueueEntry:
    if native not in _STATES:
        raise SchedulerError(f"bjobs shows job {job_id} in state {native!r}, unknown to megarun")
    state = _STATES[native]
    exit_code: int | None = None
    if exit_text.strip().isdigit():
        exit_code = int(exit_text)
    elif native == "DONE":
        exit_code = 0
    reason = "" if reason.strip() == "-" else reason.strip()
    return QueueEntry(job_id, native, state, reason, exit_code=exit_code)

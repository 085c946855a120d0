"""PBS Pro (OpenPBS) and Torque: qsub, one `qstat -f -x` for every job, qdel.

One status command serves both: PBS Pro reads `-x` as "include finished jobs" and prints its
text format; Torque reads `-x` as "XML" (it keeps completed jobs, state C, for keep_completed
seconds anyway). The parser tells the two apart by the first character.

Nodes: PBS Pro is asked for `-l select=N` (chunk resources from the `select` extra, e.g.
`select = "system=polaris"` → `-l select=2:system=polaris`). A Torque site sets the `nodes`
extra instead (`nodes = "ppn=16"`, or `nodes = true`) → `-l nodes=2:ppn=16`.

Whole nodes (the default allocation) are `-l place=excl` on PBS Pro, merged with the `place`
extra (`scatter` → `place=scatter:excl`), and `-n` (node-exclusive) on Torque. A node shape
puts `ncpus`/`ngpus` in each chunk (`select=2:ncpus=8:ngpus=1`) with one chunk per node
(`place=scatter`), or `ppn`/`gpus` in Torque's node spec.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Sequence
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

_STATES: dict[str, BatchState] = {
    "Q": BatchState.QUEUED, "H": BatchState.QUEUED, "W": BatchState.QUEUED,
    "T": BatchState.QUEUED, "M": BatchState.QUEUED, "U": BatchState.QUEUED,
    "R": BatchState.RUNNING, "E": BatchState.RUNNING, "B": BatchState.RUNNING,
    "S": BatchState.RUNNING,
    "F": BatchState.FINISHED, "X": BatchState.FINISHED, "C": BatchState.FINISHED,
}
#: PBS Pro substate of a finished job that was deleted (qdel) rather than run to its end.
_SUBSTATE_TERMINATED = "91"
_UNKNOWN_ID = re.compile(r"Unknown Job Id", re.IGNORECASE)
_JOB_ID = re.compile(r"^\d+(\[\d*\])?(\.[A-Za-z0-9_.-]+)?$")


class PbsScheduler(Scheduler):
    name: ClassVar[str] = "pbs"
    commands: ClassVar[tuple[str, ...]] = ("qsub", "qstat", "qdel")
    nodelist_env: ClassVar[str] = "PBS_NODEFILE"
    jobid_env: ClassVar[str] = "PBS_JOBID"
    skip: ClassVar[frozenset[str]] = frozenset({
        "N", "l", "o", "e", "j", "q", "A", "walltime", "nodect",
    })

    def directives(self, req: ScriptRequest) -> list[str]:
        hours, minutes = split_minutes(req.walltime_minutes)
        lines = [
            f"#PBS -N {directive_value(req.job_name, 'job name')}",
            *self.allocation_lines(req.nodes, req.allocation, req.extras),
            f"#PBS -l walltime={hours}:{minutes:02d}:00",
            "#PBS -j oe",
            f"#PBS -o {req.output}",
        ]
        lines += queue_and_account(req, "#PBS -q ", "#PBS -A ")
        return lines + self.extra_lines(req.extras)

    def allocation_lines(self, nodes: int, allocation: Allocation,
                         extras: dict[str, ExtraValue]) -> list[str]:
        torque = extras.get("nodes")
        lines = [f"#PBS -l {_node_request(nodes, allocation, extras)}"]
        place = extras.get("place")
        if torque is not None and torque is not False:
            if place not in (None, False):
                lines.append(f"#PBS -l place={directive_value(place, 'pbs.place')}")
            return [*lines, "#PBS -n"] if allocation.exclusive else lines
        return [*lines, f"#PBS -l place={_place(allocation, place)}"]

    def extra_directive(self, key: str, value: ExtraValue) -> str | None:
        if key in ("select", "nodes", "place"):
            return None  # part of the node request lines
        if len(key) == 1:
            return flag_or_value(f"#PBS -{key}", value, " ", f"pbs.{key}")
        # Any longer name is a resource: `filesystems = "home:eagle"` → -l filesystems=home:eagle
        return f"#PBS -l {key}={directive_value(value, f'pbs.{key}')}"

    def submit_argv(self, script_path: str) -> list[str]:
        return ["qsub", script_path]

    def parse_submit(self, stdout: str) -> str:
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        if lines and _JOB_ID.match(lines[-1]):
            return lines[-1]
        raise SchedulerError(f"qsub printed no job id: {stdout.strip()[:200]!r}")

    def status_argv(self, user: str | None, ids: Sequence[str]) -> list[str]:
        # PBS Pro's -u does not combine with -f: the ids name the jobs (unknown ones are
        # reported on stderr, see status_failed).
        checked = check_ids(ids)
        if not checked:
            raise SchedulerError("qstat -f needs the ids of the batch jobs to show")
        return ["qstat", "-f", "-x", *checked]

    def status_failed(self, code: int, stderr: str) -> bool:
        if code == 0:
            return False
        lines = [line for line in stderr.splitlines() if line.strip()]
        return not lines or not all(_UNKNOWN_ID.search(line) for line in lines)

    def parse_status(self, stdout: str) -> dict[str, QueueEntry]:
        text = stdout.lstrip()
        if text.startswith("<"):
            return _parse_xml(text)
        return _parse_text(stdout)

    def names_argv(self, user: str | None) -> list[str] | None:
        # Every current job in full (PBS Pro's -u does not combine with -f): the owner is
        # filtered here. Run only after an interrupted submission, so its size is tolerable.
        return ["qstat", "-f"]

    def parse_names(self, stdout: str, user: str | None) -> list[NamedJob]:
        return [NamedJob(job_id, attrs.get("Job_Name", ""))
                for job_id, attrs in _blocks(stdout)
                if user is None or attrs.get("Job_Owner", "").split("@", 1)[0] == user]

    def cancel_argv(self, ids: Sequence[str]) -> list[str]:
        return ["qdel", *check_ids(ids)]

    def version_argv(self) -> list[str]:
        return ["qstat", "--version"]


def _node_request(nodes: int, allocation: Allocation, extras: dict[str, ExtraValue]) -> str:
    select, torque = extras.get("select"), extras.get("nodes")
    if select is not None and torque is not None:
        raise ConfigError("pbs: set either `select` (PBS Pro) or `nodes` (Torque), not both")
    if torque is not None and torque is not False:
        spec = "" if torque is True else f":{directive_value(torque, 'pbs.nodes')}"
        shape = _shape(allocation, "ppn", "gpus", spec, "pbs.nodes")
        return f"nodes={nodes}{shape}{spec}"
    spec = "" if select in (None, True, False) else f":{directive_value(select, 'pbs.select')}"
    return f"select={nodes}{_shape(allocation, 'ncpus', 'ngpus', spec, 'pbs.select')}{spec}"


def _shape(allocation: Allocation, cpus_key: str, gpus_key: str, spec: str, what: str) -> str:
    """The node shape's part of one chunk (":ncpus=8:ngpus=1"); "" for whole nodes."""
    if allocation.exclusive:
        return ""
    for key in (cpus_key, gpus_key):
        if re.search(rf"(^|:){key}=", spec):
            raise ConfigError(f"{what} sets {key} while the site's [pilot] table gives a node "
                              f"shape ({allocation.describe()}): set it in one place only")
    gpus = f":{gpus_key}={allocation.gpus_per_node}" if allocation.gpus_per_node else ""
    return f":{cpus_key}={allocation.cpus_per_node}{gpus}"


#: PBS Pro's `place` words: how chunks are arranged, and whether nodes are shared.
_ARRANGEMENTS = frozenset({"free", "pack", "scatter", "vscatter"})
_SHARING = frozenset({"excl", "shared", "exclhost"})


def _place(allocation: Allocation, given: ExtraValue | None) -> str:
    """The `place` value: the site's `place` extra with whole nodes (excl) or one chunk per
    node (scatter) added to it as the allocation needs."""
    words = [] if given in (None, True, False) else \
        directive_value(given, "pbs.place").split(":")
    sharing = [word for word in words if word in _SHARING]
    arrangement = [word for word in words if word in _ARRANGEMENTS]
    if allocation.exclusive:
        if "shared" in sharing:
            raise ConfigError("pbs.place 'shared' contradicts the whole nodes a pilot asks for "
                              "by default: remove it, or give the site a node shape "
                              "(pilot.exclusive = false, pilot.cpus_per_node)")
        return ":".join(words if sharing else [*words, "excl"])
    if arrangement and not set(arrangement) <= {"scatter", "vscatter"}:
        raise ConfigError(f"pbs.place {':'.join(words)!r}: a node shape needs one chunk per "
                          "node (scatter)")
    return ":".join(words if arrangement else ["scatter", *words])


def _parse_text(stdout: str) -> dict[str, QueueEntry]:
    """`qstat -f` text: "Job Id: X" blocks of "    key = value" lines; tab-led continuations."""
    return {job_id: _entry(job_id, attrs) for job_id, attrs in _blocks(stdout)}


def _blocks(stdout: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The (id, attributes) of each "Job Id:" block of `qstat -f` text."""
    return attribute_blocks(stdout, "Job Id:", "qstat -f")


def attribute_blocks(stdout: str, header: str,
                     command: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The (name, attributes) of each block of `qstat -f` or `qstat -Qf` text: a `header`
    line ("Job Id: X", "Queue: X"), "    key = value" lines, tab-led continuations."""
    job_id: str | None = None
    attrs: dict[str, str] = {}
    last = ""
    for line in stdout.splitlines():
        if line.startswith(header):
            if job_id is not None:
                yield job_id, attrs
            job_id, attrs, last = line.split(":", 1)[1].strip(), {}, ""
        elif line.startswith("\t") and last:
            attrs[last] += line[1:]
        elif " = " in line and job_id is not None:
            key, value = line.strip().split(" = ", 1)
            attrs[key], last = value, key
        elif line.strip() and job_id is None:
            raise SchedulerError(f"{command} printed a line megarun cannot read: {line[:100]!r}")
    if job_id is not None:
        yield job_id, attrs


def _parse_xml(text: str) -> dict[str, QueueEntry]:
    """Torque's `qstat -f -x`: <Data><Job><Job_Id>..</Job_Id><job_state>..</job_state>..."""
    start, end = text.find("<Data"), text.rfind("</Data>")
    if start < 0 or end < 0:
        return {}  # an empty <Data/> or nothing at all: no jobs
    try:
        # The site's own qstat output, parsed without entity expansion beyond the XML default.
        root = ElementTree.fromstring(text[start:end + len("</Data>")])  # noqa: S314
    except ElementTree.ParseError as exc:
        raise SchedulerError(f"qstat -x printed XML megarun cannot read: {exc}") from exc
    entries = {}
    for job in root.iter("Job"):
        attrs = {child.tag: (child.text or "").strip() for child in job}
        job_id = attrs.get("Job_Id", "")
        if job_id:
            entries[job_id] = _entry(job_id, attrs)
    return entries


def _entry(job_id: str, attrs: dict[str, str]) -> QueueEntry:
    native = attrs.get("job_state", "")
    if native not in _STATES:
        raise SchedulerError(f"qstat shows job {job_id} in state {native!r}, unknown to megarun")
    state = _STATES[native]
    if state is BatchState.FINISHED and attrs.get("substate") == _SUBSTATE_TERMINATED:
        state = BatchState.CANCELLED
    comment = attrs.get("comment", "")
    exit_text = attrs.get("Exit_status", attrs.get("exit_status", ""))
    exit_code = int(exit_text) if re.fullmatch(r"-?\d+", exit_text) else None
    never = state is BatchState.QUEUED and comment.startswith("Can Never Run")
    return QueueEntry(job_id, native, state, comment, never_runs=never, exit_code=exit_code)

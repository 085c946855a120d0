"""The queue limits a scheduler enforces, as its own commands print them.

`site check` compares a site's queues (from its preset) with what the scheduler says today:
Slurm's `scontrol show partition -o` (and `sacctmgr show qos` for sites whose queues are QOSes),
PBS's `qstat -Qf`, LSF's `bqueues -l`, Cobalt's `qstat -Q`. Pure: argv builders and parsers;
running them is the transport's job, comparing them the sites wing's (sites/livecheck.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from megarun.schedulers.base import SchedulerError
from megarun.schedulers.pbs import attribute_blocks


@dataclass(frozen=True)
class ObservedQueue:
    """One queue (partition, QOS) as the scheduler reports it; None: no limit, or not shown."""

    name: str
    max_nodes: int | None = None
    max_walltime: int | None = None  # minutes
    min_nodes: int | None = None
    total_nodes: int | None = None  # nodes the queue holds, when the scheduler says
    enabled: bool = True


#: Each scheduler's commands: the queues, and (Slurm) the QOSes, whose failure is tolerated.
LIMITS_ARGV: dict[str, list[str]] = {
    "slurm": ["scontrol", "show", "partition", "-o"],
    "pbs": ["qstat", "-Qf"],
    "lsf": ["bqueues", "-l"],
    "cobalt": ["qstat", "-Q"],
}
QOS_ARGV = ["sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxWall,MaxTRES,MinTRES"]

_UNLIMITED = {"", "UNLIMITED", "INFINITE", "None", "-", "n/a", "N/A", "0"}


def limits_argv(scheduler: str) -> list[str] | None:
    """The command printing the queues of `scheduler`; None when it has none (local)."""
    argv = LIMITS_ARGV.get(scheduler)
    return list(argv) if argv else None


def parse_limits(scheduler: str, text: str) -> list[ObservedQueue]:
    """The queues in the output of `limits_argv(scheduler)`."""
    parser = {"slurm": parse_scontrol_partitions, "pbs": parse_qstat_qf,
              "lsf": parse_bqueues_l, "cobalt": parse_cobalt_qstat_q}.get(scheduler)
    if parser is None:
        raise SchedulerError(f"the {scheduler} scheduler has no queues to read")
    return parser(text)


def minutes(text: str) -> int | None:
    """A time limit as minutes: `[days-]hours:minutes:seconds`, `minutes:seconds` (Slurm),
    `days:hours:minutes:seconds` (Torque), bare minutes; None for no limit. Seconds round
    up: a limit is never made longer."""
    text = text.strip()
    if text in _UNLIMITED:
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = _number(day_text, "days")
    parts = [_number(part, "time") for part in text.split(":")]
    if len(parts) == 1:
        total_seconds = parts[0] * 60
    elif len(parts) == 2:  # Slurm's MM:SS
        total_seconds = parts[0] * 60 + parts[1]
    elif len(parts) == 3:
        total_seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    elif len(parts) == 4:  # Torque's DD:HH:MM:SS
        total_seconds = parts[0] * 86400 + parts[1] * 3600 + parts[2] * 60 + parts[3]
    else:
        raise SchedulerError(f"cannot read the time limit {text!r}")
    return days * 1440 + -(-total_seconds // 60)


def _number(text: str, what: str) -> int:
    if not text.strip().isdigit():
        raise SchedulerError(f"cannot read the {what} {text!r}")
    return int(text)


def _count(text: str | None) -> int | None:
    if text is None or text.strip() in _UNLIMITED:
        return None
    value = text.strip()
    if not value.isdigit():
        raise SchedulerError(f"cannot read the node count {value!r}")
    return int(value)


# -- Slurm -------------------------------------------------------------------------------------

def parse_scontrol_partitions(text: str) -> list[ObservedQueue]:
    """`scontrol show partition -o`: one `Key=Value ...` line per partition."""
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        if "PartitionName" not in fields:
            raise SchedulerError(f"scontrol printed a line megarun cannot read: {line[:100]!r}")
        min_nodes = _count(fields.get("MinNodes"))
        found.append(ObservedQueue(
            fields["PartitionName"], _count(fields.get("MaxNodes")),
            minutes(fields.get("MaxTime", "")), min_nodes if min_nodes and min_nodes > 1 else None,
            _count(fields.get("TotalNodes")), fields.get("State", "UP") == "UP"))
    return found


def parse_sacctmgr_qos(text: str) -> list[ObservedQueue]:
    """`sacctmgr -n -P show qos format=Name,MaxWall,MaxTRES,MinTRES`: `|`-separated rows."""
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [*line.split("|"), "", "", ""]
        found.append(ObservedQueue(fields[0].strip(), _tres_nodes(fields[2]),
                                   minutes(fields[1]), _tres_nodes(fields[3])))
    return found


def _tres_nodes(text: str) -> int | None:
    match = re.search(r"(?:^|,)node=(\d+)", text)
    return int(match.group(1)) if match else None


# -- PBS ---------------------------------------------------------------------------------------

def parse_qstat_qf(text: str) -> list[ObservedQueue]:
    """`qstat -Qf`: "Queue: NAME" blocks of "    key = value" lines (PBS Pro and Torque)."""
    found = []
    for name, attrs in attribute_blocks(text, "Queue:", "qstat -Qf"):
        max_nodes = attrs.get("resources_max.nodect", attrs.get("resources_max.nodes"))
        min_nodes = _count(attrs.get("resources_min.nodect", attrs.get("resources_min.nodes")))
        found.append(ObservedQueue(
            name, _count(_leading_count(max_nodes)),
            minutes(attrs.get("resources_max.walltime", "")),
            min_nodes if min_nodes and min_nodes > 1 else None,
            _count(attrs.get("resources_available.nodect")),
            attrs.get("enabled", "True") == "True" and attrs.get("started", "True") == "True"))
    return found


def _leading_count(value: str | None) -> str | None:
    """Torque's `resources_max.nodes = 16:ppn=8`: the node count is what comes first."""
    return value.split(":", 1)[0] if value else value


# -- LSF ---------------------------------------------------------------------------------------

def parse_bqueues_l(text: str) -> list[ObservedQueue]:
    """`bqueues -l`: "QUEUE: NAME" blocks; a limit is a heading line (RUNLIMIT, TASKLIMIT or
    PROCLIMIT) with its values on the next line. A pilot asks for one task per node
    (`span[ptile=1]`), so the task limit is its node limit."""
    found = []
    for name, lines in _lsf_blocks(text):
        runlimit = _after_heading(lines, "RUNLIMIT")
        tasks = _after_heading(lines, "TASKLIMIT") or _after_heading(lines, "PROCLIMIT")
        max_walltime = None
        if runlimit:
            match = re.match(r"([\d.]+)\s*min", runlimit)
            if match is None:
                raise SchedulerError(f"bqueues: cannot read RUNLIMIT {runlimit!r} of {name}")
            max_walltime = int(float(match.group(1)))
        max_nodes = min_nodes = None
        if tasks:
            numbers = [int(word) for word in tasks.split() if word.isdigit()]
            if numbers:
                max_nodes = numbers[-1]
                min_nodes = numbers[0] if len(numbers) > 1 and numbers[0] > 1 else None
        status = next((line for line in lines if re.match(r"^\s*\d+\s+\d+\s+\S+:\S+", line)), "")
        enabled = "Open:Active" in status or not status
        found.append(ObservedQueue(name, max_nodes, max_walltime, min_nodes, enabled=enabled))
    return found


def _lsf_blocks(text: str) -> Iterator[tuple[str, list[str]]]:
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("QUEUE:"):
            if name is not None:
                yield name, lines
            name, lines = line.split(":", 1)[1].strip(), []
        elif name is not None:
            lines.append(line)
        elif line.strip():
            raise SchedulerError(f"bqueues printed a line megarun cannot read: {line[:100]!r}")
    if name is not None:
        yield name, lines


def _after_heading(lines: list[str], heading: str) -> str:
    for index, line in enumerate(lines[:-1]):
        words = line.split()
        if words and words[0] == heading:
            return lines[index + 1].strip()
    return ""


# -- Cobalt ------------------------------------------------------------------------------------

def parse_cobalt_qstat_q(text: str) -> list[ObservedQueue]:
    """`qstat -Q`: a header row, a row of `=`, one row per queue; `None` for no limit. The
    node limits are MinNodes/MaxNodes when the site shows them, else MaxUserNodes (no job
    of a user can be larger)."""
    rows = [line.split() for line in text.splitlines()
            if line.strip() and set(line.strip()) != {"="}]
    if not rows:
        return []
    header = rows[0]
    if header[:1] != ["Name"]:
        raise SchedulerError(f"qstat -Q printed a header megarun cannot read: {header[:4]}")
    found = []
    for row in rows[1:]:
        if len(row) != len(header):
            raise SchedulerError(f"qstat -Q printed a row megarun cannot read: {row[:4]}")
        fields = dict(zip(header, row, strict=True))
        min_nodes = _count(fields.get("MinNodes"))
        found.append(ObservedQueue(
            fields["Name"], _count(fields.get("MaxNodes", fields.get("MaxUserNodes"))),
            minutes(fields.get("MaxTime", "")), min_nodes if min_nodes and min_nodes > 1 else None,
            _count(fields.get("TotalNodes")), fields.get("State", "running") == "running"))
    return found

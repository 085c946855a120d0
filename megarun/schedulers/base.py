"""What every batch scheduler module provides: argv builders, parsers and a state map.

Schedulers are pure: they build argv lists, render directive lines and parse command output.
Running the argv (locally or over SSH) is the transport's job; deciding what a batch job's state
means for megarun's jobs is the services' job.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from megarun.errors import ConfigError, EnvironmentProblem


class SchedulerError(EnvironmentProblem):
    """A scheduler command failed or printed something megarun cannot read (exit code 3)."""


class BatchState(str, Enum):
    """The life of one batch job (allocation) as megarun tracks it."""

    PENDING_SUBMISSION = "pending_submission"
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    SUBMIT_FAILED = "submit_failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class QueueEntry:
    """One batch job as the scheduler's status command shows it."""

    scheduler_id: str
    native: str
    state: BatchState
    reason: str = ""
    never_runs: bool = False
    exit_code: int | None = None


@dataclass(frozen=True)
class NamedJob:
    """One of the user's batch jobs by its name: how a submission whose id was lost is found."""

    scheduler_id: str
    name: str


ExtraValue = str | int | bool


@dataclass(frozen=True)
class Allocation:
    """What a batch job asks for on each of its nodes: the whole node (the default), or a
    shape of `cpus_per_node` CPUs and `gpus_per_node` GPUs.

    Without either, schedulers hand out their smallest unit (one core on Slurm with CR_Core,
    one chunk of one CPU on PBS, one slot on LSF) while the agent would use the whole node:
    a pilot must own what it uses (docs/sites.md, "How pilots size their allocation").
    """

    exclusive: bool = True
    cpus_per_node: int = 0
    #: With whole nodes: the node's GPUs, for schedulers that hand GPUs out only on request
    #: (Slurm's GRES: an exclusive job without --gpus-per-node sees none of them).
    gpus_per_node: int = 0

    def describe(self) -> str:
        """One line for `site show` and error messages."""
        gpus = f" and {self.gpus_per_node} gpu(s)" if self.gpus_per_node else ""
        if self.exclusive:
            return f"whole nodes (exclusive){gpus.replace(' and', ' with')}"
        return f"{self.cpus_per_node} cpu(s){gpus} per node"


WHOLE_NODES = Allocation()


@dataclass(frozen=True)
class ScriptRequest:
    """Everything a batch script needs; paths are on the site."""

    job_name: str
    nodes: int
    walltime_minutes: int
    queue: str | None
    account: str | None
    batch_dir: str
    output: str
    exit_file: str
    agent_argv: list[str]
    extras: dict[str, ExtraValue] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    preamble: list[str] = field(default_factory=list)
    allocation: Allocation = WHOLE_NODES


#: Characters a value on a directive line may never hold: the scheduler reads these lines with
#: its own quoting rules, so quotes, backslashes and control characters could change their
#: meaning; `#` would start a comment for some of them.
_UNSAFE_DIRECTIVE = re.compile(r"[\"'\\`#\x00-\x1f\x7f]")
_EXTRA_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_SCHEDULER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\[\]-]*$")


def directive_value(value: ExtraValue, what: str) -> str:
    """`value` as it may appear on a directive line; double-quoted when it holds spaces."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if _UNSAFE_DIRECTIVE.search(text):
        raise ConfigError(f"{what}: {text!r} cannot go on a batch directive line "
                          "(quotes, backslashes, '#' and control characters are refused)")
    if text != text.strip() or not text:
        raise ConfigError(f"{what}: {text!r} must not be empty or start or end with a space")
    return f'"{text}"' if any(ch.isspace() for ch in text) else text


def directive_path(path: str, what: str) -> str:
    """A site path for a directive line: no whitespace at all (not every scheduler unquotes)."""
    if not path or any(ch.isspace() for ch in path) or _UNSAFE_DIRECTIVE.search(path):
        raise ConfigError(f"{what} {path!r} cannot go on a batch directive line: use a site work "
                          "dir without spaces, quotes or '#'")
    return path


def check_ids(ids: Sequence[str]) -> list[str]:
    """Scheduler ids as given to status and cancel commands: never options, never shell text."""
    checked = list(ids)
    for scheduler_id in checked:
        if not isinstance(scheduler_id, str) or not _SCHEDULER_ID.match(scheduler_id):
            raise SchedulerError(f"{scheduler_id!r} is not a batch job id")
    return checked


def queue_and_account(req: ScriptRequest, queue_flag: str, account_flag: str) -> list[str]:
    """The directive lines of the request's queue and account, when given (`queue_flag` and
    `account_flag` end with the separator: "#PBS -q ", "#SBATCH --account=")."""
    lines = []
    if req.queue:
        lines.append(queue_flag + directive_value(req.queue, "queue"))
    if req.account:
        lines.append(account_flag + directive_value(req.account, "account"))
    return lines


def normalize_key(key: str) -> str:
    """Extra keys compare with `_` and `-` alike: `gpus_per_node` is `--gpus-per-node`."""
    return key.replace("_", "-")


class Scheduler(ABC):
    """One batch scheduler: how to submit, poll and cancel, and how to read its answers."""

    name: ClassVar[str]
    #: Commands that must exist on the site (checked by `site init` and `site check`).
    commands: ClassVar[tuple[str, ...]]
    #: The variable holding the allocation's node list inside the job.
    nodelist_env: ClassVar[str]
    #: The variable holding the scheduler's id of the running job.
    jobid_env: ClassVar[str]
    #: Directive keys megarun sets itself: refused in site or submission extras.
    skip: ClassVar[frozenset[str]]
    #: Directive keys megarun sets from the site's [pilot] table (whole nodes or a node
    #: shape): refused in extras with a pointer to that table.
    allocation_keys: ClassVar[frozenset[str]] = frozenset()
    #: True when the submit command reads the script on stdin (`bsub < script`).
    submit_stdin: ClassVar[bool] = False
    #: False for a scheduler without directives (local): any extra setting is an error.
    accepts_extras: ClassVar[bool] = True

    @abstractmethod
    def directives(self, req: ScriptRequest) -> list[str]:
        """Whole directive lines for the script header, e.g. "#SBATCH --nodes=2"."""

    @abstractmethod
    def allocation_lines(self, nodes: int, allocation: Allocation,
                         extras: dict[str, ExtraValue]) -> list[str]:
        """The directive lines asking for `nodes` nodes, whole or of the allocation's shape
        (the extras may refine the request, e.g. PBS `select`/`place`); ConfigError when the
        scheduler cannot ask for it."""

    @abstractmethod
    def extra_directive(self, key: str, value: ExtraValue) -> str | None:
        """The directive line of one extra setting; None when a False flag drops it."""

    @abstractmethod
    def submit_argv(self, script_path: str) -> list[str]:
        """The command that submits the script at `script_path` on the site."""

    @abstractmethod
    def parse_submit(self, stdout: str) -> str:
        """The scheduler id in the submit command's output; SchedulerError on anything else."""

    @abstractmethod
    def status_argv(self, user: str | None, ids: Sequence[str]) -> list[str]:
        """ONE command that shows every batch job of `ids` (and of `user`) at once."""

    @abstractmethod
    def parse_status(self, stdout: str) -> dict[str, QueueEntry]:
        """Entries by scheduler id; a job missing from the dict is gone from the queue."""

    @abstractmethod
    def cancel_argv(self, ids: Sequence[str]) -> list[str]:
        """The command that cancels the batch jobs `ids`."""

    @abstractmethod
    def version_argv(self) -> list[str]:
        """A cheap probe that succeeds when the scheduler's commands work on the site."""

    def names_argv(self, user: str | None) -> list[str] | None:
        """ONE command listing the user's batch jobs (`user`, else the login) with their
        names; None when the scheduler cannot (a submission's lost id stays unknown)."""
        return None

    def parse_names(self, stdout: str, user: str | None) -> list[NamedJob]:
        """The jobs `names_argv` printed (only `user`'s when the output holds others')."""
        return []

    def status_failed(self, code: int, stderr: str) -> bool:
        """True when the status command's exit code means its output cannot be trusted.

        Several schedulers exit non-zero when one of the ids asked about is unknown (finished
        and purged) while still printing the others: that is not a failure.
        """
        return code != 0

    def extra_lines(self, extras: dict[str, ExtraValue]) -> list[str]:
        """Directive lines of the extras, in the order given, after checking each."""
        check_extras_table(self, extras, "extras")
        lines = []
        for key, value in extras.items():
            line = self.extra_directive(key, value)
            if line is not None:
                lines.append(line)
        return lines


def check_extras_table(scheduler: Scheduler, table: dict[str, Any], origin: str) -> None:
    """ConfigError on a key megarun sets itself or a value unsafe on a directive line."""
    if not isinstance(table, dict):
        raise ConfigError(f"{origin}: the [{scheduler.name}] table must be a table of settings")
    if table and not scheduler.accepts_extras:
        raise ConfigError(f"{origin}: the {scheduler.name} scheduler has no directives; remove "
                          f"the settings {', '.join(sorted(map(str, table)))}")
    for key, value in table.items():
        where = f"{origin}: {scheduler.name}.{key}"
        if not isinstance(key, str) or not _EXTRA_KEY.match(key):
            raise ConfigError(f"{where}: a directive name is letters, digits, '-' and '_'")
        if normalize_key(key) in scheduler.allocation_keys:
            raise ConfigError(f"{where}: megarun sets this directive itself from the site's "
                              "[pilot] table (pilot.exclusive, pilot.cpus_per_node, "
                              "pilot.gpus_per_node; see docs/sites.md)")
        if normalize_key(key) in scheduler.skip:
            megarun_sets = ", ".join(sorted(scheduler.skip))
            raise ConfigError(f"{where}: megarun sets this directive itself "
                              f"(never in extras: {megarun_sets})")
        if not isinstance(value, str | int | bool) or isinstance(value, float):
            raise ConfigError(f"{where}: a directive value is a string, an integer or a boolean")
        directive_value(value, where)


def flag_or_value(prefix: str, value: ExtraValue, separator: str,
                  what: str) -> str | None:
    """`prefix` alone for True, nothing for False, else prefix + separator + value."""
    if value is True:
        return prefix
    if value is False:
        return None
    return f"{prefix}{separator}{directive_value(value, what)}"


def split_minutes(minutes: int) -> tuple[int, int]:
    """Whole hours and the minutes left over."""
    if minutes < 1:
        raise ConfigError(f"a walltime must be at least one minute, got {minutes}")
    return divmod(minutes, 60)


def check_request(req: ScriptRequest) -> None:
    """Refuse a request no scheduler could take: no nodes, no time, paths unfit for directives."""
    if req.nodes < 1:
        raise ConfigError(f"a batch job needs at least one node, got {req.nodes}")
    split_minutes(req.walltime_minutes)
    for what, path in (("batch dir", req.batch_dir), ("output file", req.output),
                       ("exit-code file", req.exit_file)):
        directive_path(path, what)
    directive_value(req.job_name, "job name")
    for what, value in (("queue", req.queue), ("account", req.account)):
        if value is not None:
            directive_value(value, what)


def check_allocation(scheduler: Scheduler, allocation: Allocation,
                     extras: dict[str, ExtraValue], origin: str) -> None:
    """ConfigError naming `origin` when `scheduler` cannot ask for `allocation` with `extras`
    (checked when a site is added, so that no submission finds out later)."""
    try:
        scheduler.allocation_lines(1, allocation, extras)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None

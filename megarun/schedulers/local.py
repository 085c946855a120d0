"""No scheduler: the script runs detached on the site host itself.

Submit starts it in a new session (setsid(1), or python3's os.setsid where that is missing), so
its pid is also its process group id: status lists processes with one `ps`, cancel signals the
whole group. The script path is passed to /bin/sh as "$1", never pasted into shell text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from megarun.errors import ConfigError
from megarun.schedulers.base import (
    Allocation,
    BatchState,
    ExtraValue,
    QueueEntry,
    Scheduler,
    SchedulerError,
    ScriptRequest,
    check_ids,
)

_START = (
    # A new session makes the script's pid its process group id too. setsid(1) is util-linux;
    # elsewhere python3's os.setsid does the same (job control needs a tty, so `set -m` would
    # not). The last resort runs it in the background as it is: cancel then signals the pid.
    'if command -v setsid >/dev/null 2>&1; then '
    'setsid /bin/sh "$1" </dev/null >/dev/null 2>&1 & '
    'elif command -v python3 >/dev/null 2>&1; then '
    'python3 -c "import os, sys; os.setsid(); os.execv(\'/bin/sh\', [\'/bin/sh\', sys.argv[1]])" '
    '"$1" </dev/null >/dev/null 2>&1 & '
    'else nohup /bin/sh "$1" </dev/null >/dev/null 2>&1 & fi; '
    'echo "$!"'
)
_CANCEL = (
    'for pid do kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; done; '
    'exit 0'
)


class LocalScheduler(Scheduler):
    name: ClassVar[str] = "local"
    commands: ClassVar[tuple[str, ...]] = ("sh", "ps", "kill")
    nodelist_env: ClassVar[str] = ""
    jobid_env: ClassVar[str] = ""
    skip: ClassVar[frozenset[str]] = frozenset()
    accepts_extras: ClassVar[bool] = False

    def allocation_lines(self, nodes: int, allocation: Allocation,
                         extras: dict[str, ExtraValue]) -> list[str]:
        if not allocation.exclusive:
            raise ConfigError("the local scheduler has no allocation to shape: a node shape "
                              "(pilot.exclusive = false) is for batch schedulers")
        return []  # no scheduler: the agent counts what this host lets it use

    def directives(self, req: ScriptRequest) -> list[str]:
        return [*self.allocation_lines(req.nodes, req.allocation, req.extras),
                *self.extra_lines(req.extras)]  # no extras allowed: refuses any

    def extra_directive(self, key: str, value: ExtraValue) -> str | None:
        raise ConfigError(f"the local scheduler has no directives (got {key!r})")

    def submit_argv(self, script_path: str) -> list[str]:
        return ["/bin/sh", "-c", _START, "megarun-submit", script_path]

    def parse_submit(self, stdout: str) -> str:
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        if lines and lines[-1].isdigit() and int(lines[-1]) > 1:
            return lines[-1]
        raise SchedulerError(f"the detached start printed no process id: {stdout.strip()[:200]!r}")

    def status_argv(self, user: str | None, ids: Sequence[str]) -> list[str]:
        check_ids(ids)
        return ["ps", "-A", "-o", "pid=", "-o", "pgid=", "-o", "stat="]

    def parse_status(self, stdout: str) -> dict[str, QueueEntry]:
        entries = {}
        for line in stdout.splitlines():
            fields = line.split()
            if len(fields) < 3 or not fields[0].isdigit():
                continue
            pid, stat = fields[0], fields[2]
            state = BatchState.FINISHED if stat.startswith("Z") else BatchState.RUNNING
            entries[pid] = QueueEntry(pid, stat, state)
        return entries

    def cancel_argv(self, ids: Sequence[str]) -> list[str]:
        checked = check_ids(ids)
        for pid in checked:
            if not pid.isdigit() or int(pid) <= 1:
                raise SchedulerError(f"{pid!r} is not the process id of a local batch job")
        return ["/bin/sh", "-c", _CANCEL, "megarun-cancel", *checked]

    def version_argv(self) -> list[str]:
        return ["uname", "-sr"]

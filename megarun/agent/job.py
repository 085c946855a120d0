"""What an agent is started with, the jobs it holds, and the small helpers its parts share.

Stdlib only, Python 3.6: this runs on the sites (see megarun/agent/__init__.py).
"""

import errno
import json
import logging
import os
import re
import signal
from typing import Any, Dict, List, Optional, Tuple

from megarun.agent import mpi, nodes, runner

log = logging.getLogger("megarun.agent")


class Options:
    """What the agent was started with.

    `cpus`, `gpus` and `max_jobs` are per node. `nodes` names the allocation's nodes (default:
    this host only); `own_node` is the name of the agent's own node among them (default: the
    one that names this host). `walltime_end` is the allocation's end in seconds since the
    epoch (0: none); running jobs are stopped `end_grace` seconds before it.
    """

    def __init__(self, workdir: str, agent_id: str, cpus: int, gpus: Optional[List[str]] = None,
                 max_jobs: int = 0, heartbeat: float = 5.0, kill_grace: float = 3.0,
                 idle_exit: float = 0.0, nodes: Optional[List[str]] = None,
                 own_node: str = "", batch_job: str = "", pool: str = "",
                 mpi_launcher: str = "none", mpi_args: Optional[List[str]] = None,
                 walltime_end: float = 0.0, end_grace: float = 30.0,
                 slots_from: str = "") -> None:
        self.workdir = workdir
        self.agent_id = agent_id
        self.cpus = max(1, cpus)
        self.gpus = list(gpus or [])
        self.max_jobs = max_jobs
        self.heartbeat = heartbeat
        self.kill_grace = kill_grace
        self.idle_exit = idle_exit
        self.nodes = list(nodes or [])
        self.own_node = own_node
        self.batch_job = batch_job
        self.pool = pool
        self.mpi_launcher = mpi_launcher
        self.mpi_args = list(mpi_args or [])
        self.walltime_end = walltime_end
        self.end_grace = end_grace
        #: Where `cpus` and `gpus` came from (megarun/agent/allocation.py), for the start log.
        self.slots_from = slots_from


class Job:
    """A claimed job, queued in the agent or running."""

    __slots__ = (
        "attempt",
        "bundle",
        "cpus",
        "deadline",
        "gpu_ids",
        "gpus",
        "id",
        "kill_at",
        "kill_reason",
        "launch",
        "nodes",
        "pid",
        "placed",
        "ranks_per_node",
        "share",
        "spec",
        "started",
        "step",
        "steps",
        "timeout",
        "workdir",
    )

    def __init__(self, spec: Dict[str, Any], bundle: Optional[str]) -> None:
        self.spec = spec
        self.id = int(spec["id"])
        self.attempt = int(spec.get("attempt", 0))
        self.workdir = os.path.abspath(str(spec["workdir"]))
        self.steps: List[Dict[str, Any]] = list(spec.get("steps") or [])
        self.step = 0
        self.pid = 0
        self.bundle = bundle
        self.started = 0.0
        self.deadline: Optional[float] = None
        self.cpus = max(1, int(spec.get("cpus") or 1))
        self.gpus = int(spec.get("gpus") or 0)
        self.nodes = int(spec.get("nodes") or 1)
        timeout = spec.get("timeout")
        self.timeout: Optional[float] = float(timeout) if timeout else None
        self.gpu_ids: Optional[List[str]] = None
        self.kill_reason: Optional[str] = None
        self.kill_at: Optional[float] = None
        self.ranks_per_node = max(1, int(spec.get("ranks_per_node") or 1))
        packing = int(spec.get("packing") or 0)
        self.share = 1.0 / packing if packing > 0 else 0.0
        self.placed: List[nodes.Node] = []
        self.launch: Optional[mpi.Placement] = None

    @property
    def gpus_per_rank(self) -> int:
        given = self.spec.get("gpus_per_rank")
        return int(given) if given is not None else self.gpus // self.ranks_per_node


#: The head of a job spec line as the home host writes it: the id of a job whose line is broken.
SPEC_HEAD = re.compile(rb'\s*\{\s*"id"\s*:\s*(\d+)\s*,\s*"attempt"\s*:\s*(\d+)')


def parse_spec(line: bytes) -> Tuple[Optional[Dict[str, Any]], str]:
    """(spec, why it cannot run): (None, why) when the line is no JSON object with an id."""
    try:
        spec = json.loads(line.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError included
        return None, "not valid JSON: {}".format(exc)
    if not isinstance(spec, dict):
        return None, "not a JSON object"
    try:
        int(spec["id"])
    except (KeyError, TypeError, ValueError):
        return None, "no job id"
    return spec, runner.spec_problem(spec, b"\\u0000" in line)


def spec_key(spec: Dict[str, Any]) -> Tuple[int, int]:
    """(job, attempt) of a spec whose id is known to be an integer."""
    return int(spec["id"]), int_or_zero(spec.get("attempt"))


def int_or_zero(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


_FAULT = os.environ.get("MEGARUN_FAULT")  # read once: the check runs at every job's end


def fault_point(name: str) -> None:
    """Die on the spot, like `kill -9`, when $MEGARUN_FAULT names this step (tests only).

    The agent's own copy of megarun/core/faults.py: the agent imports nothing outside itself.
    """
    if _FAULT == name:
        os.kill(os.getpid(), signal.SIGKILL)


def step_name(step: Dict[str, Any], index: int) -> str:
    return str(step.get("name") or "step{}".format(index + 1))


def existing_parent(path: str) -> str:
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc)


def write_quietly(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    except OSError as exc:
        log.warning("cannot write to a job's log: %s", exc.strerror)

"""How many CPUs and GPUs per node the agent may use: what its batch allocation holds, never more.

A pilot's node may hold more cores than the batch job was given (Slurm hands out one core per
node unless asked for more): counting the node (os.cpu_count) would run more jobs than the
allocation holds and starve the node's other users. So inside a batch job the agent reads what
the scheduler says it was given:

- Slurm: SLURM_CPUS_ON_NODE (this node) and SLURM_JOB_CPUS_PER_NODE ("2(x3),1": the smallest
  counts, as every node is packed alike); GPUs from SLURM_GPUS_ON_NODE.
- PBS: PBS_NCPUS or NCPUS (the chunk's ncpus), PBS_NUM_PPN (Torque), else this host's lines
  in PBS_NODEFILE (Torque lists a host once per core).
- LSF: the slots of each host in LSB_MCPU_HOSTS ("host 4 host 4"), else LSB_DJOB_NUMPROC
  shared by the hosts.
- Cobalt: whole nodes, nothing to read.

With `whole_nodes` (the batch job asked for whole nodes: Slurm --exclusive, PBS place=excl,
LSF -x) PBS and LSF still list one slot per node, so the node's own count is used there.
Everything is capped by the CPU affinity mask (os.sched_getaffinity), which is what a process
here may run on; GPU ids come from CUDA_VISIBLE_DEVICES (or the ROCm and Level Zero
equivalents) when the scheduler sets them. An explicit --cpus/--gpus above the allocation is
capped, and the reason is logged.

Stdlib only, Python 3.6: this runs on the site.
"""

import os
import re
from typing import Callable, List, Mapping, Optional, Tuple

#: Variables that name the GPUs a process may use, first set wins.
GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK",
                 "HIP_VISIBLE_DEVICES")
#: What an older Slurm puts in CUDA_VISIBLE_DEVICES when the job has no GPU.
_NO_DEVICES = ("NoDevFiles", "")
_REPEAT = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")


class AllocationError(Exception):
    """A scheduler variable holds something the agent cannot read."""


class Count:
    """The CPUs and GPU ids per node the agent uses, where they came from, and what was capped."""

    def __init__(self, cpus: int, gpus: List[str], cpus_from: str, gpus_from: str,
                 notes: List[str]) -> None:
        self.cpus = cpus
        self.gpus = gpus
        self.cpus_from = cpus_from
        self.gpus_from = gpus_from
        self.notes = notes

    def describe(self) -> str:
        """The start log line's account: "2 cpus from SLURM_CPUS_ON_NODE=2, no gpus"."""
        gpus = "gpus {} from {}".format(",".join(self.gpus), self.gpus_from) if self.gpus \
            else "no gpus ({})".format(self.gpus_from)
        return "{} cpus from {}, {}".format(self.cpus, self.cpus_from, gpus)


def parse_cpus_per_node(text: str) -> List[int]:
    """Slurm's SLURM_JOB_CPUS_PER_NODE: "2(x3),1" -> [2, 2, 2, 1]."""
    counts = []  # type: List[int]
    for part in text.split(","):
        match = _REPEAT.match(part.strip())
        if match is None:
            raise AllocationError("SLURM_JOB_CPUS_PER_NODE {!r}: expected counts such as "
                                  "'2(x3),1'".format(text))
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def affinity_cpus() -> Optional[int]:
    """How many CPUs this process may run on; None where the system cannot tell."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:
        return None
    try:
        return len(getter(0)) or None
    except OSError:
        return None


def _positive(env: Mapping[str, str], name: str) -> Optional[int]:
    text = (env.get(name) or "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise AllocationError("{} {!r} is not a positive count of CPUs".format(name, text))
    return int(text)


def slurm_cpus(env: Mapping[str, str]) -> Optional[Tuple[int, str]]:
    """The CPUs per node of a Slurm job: the smallest of this node's and every node's count."""
    found = []  # type: List[Tuple[int, str]]
    own = _positive(env, "SLURM_CPUS_ON_NODE")
    if own is not None:
        found.append((own, "SLURM_CPUS_ON_NODE={}".format(own)))
    per_node = (env.get("SLURM_JOB_CPUS_PER_NODE") or "").strip()
    if per_node:
        counts = parse_cpus_per_node(per_node)
        found.append((min(counts), "SLURM_JOB_CPUS_PER_NODE={}".format(per_node)))
    return min(found) if found else None


def pbs_cpus(env: Mapping[str, str], host: str) -> Optional[Tuple[int, str]]:
    """The CPUs of a PBS job's chunk on each node (PBS Pro), or ppn (Torque)."""
    for name in ("PBS_NCPUS", "NCPUS", "PBS_NUM_PPN"):
        count = _positive(env, name)
        if count is not None:
            return count, "{}={}".format(name, count)
    path = env.get("PBS_NODEFILE")
    if not path:
        return None
    try:
        with open(path) as handle:
            names = [line.strip() for line in handle if line.strip()]
    except OSError:
        return None  # the node list reader reports an unreadable file
    short = host.split(".")[0]
    mine = sum(1 for name in names if name.split(".")[0] == short)
    return (mine, "{} lines for {} in PBS_NODEFILE".format(mine, short)) if mine else None


def lsf_cpus(env: Mapping[str, str]) -> Optional[Tuple[int, str]]:
    """The slots of an LSF job on each host: the smallest in LSB_MCPU_HOSTS."""
    words = (env.get("LSB_MCPU_HOSTS") or "").split()
    if len(words) >= 2 and len(words) % 2 == 0:
        slots = words[1::2]
        if not all(slot.isdigit() and int(slot) > 0 for slot in slots):
            raise AllocationError("LSB_MCPU_HOSTS {!r}: expected 'host slots' pairs".format(
                env.get("LSB_MCPU_HOSTS")))
        return min(int(slot) for slot in slots), "LSB_MCPU_HOSTS={}".format(
            " ".join(words))
    total = _positive(env, "LSB_DJOB_NUMPROC")
    if total is None:
        return None
    hosts = len(set((env.get("LSB_HOSTS") or "").split())) or 1
    return max(1, total // hosts), "LSB_DJOB_NUMPROC={} on {} host(s)".format(total, hosts)


def allocation_cpus(kind: str, env: Mapping[str, str], host: str,
                    whole_nodes: bool) -> Optional[Tuple[int, str]]:
    """What the batch system `kind` says each node of the job holds; None when it says nothing
    that counts (no batch system, Cobalt, or whole nodes where only slots are listed)."""
    if kind == "slurm":
        return slurm_cpus(env)  # --exclusive: Slurm counts the whole node itself
    if kind == "pbs" and not whole_nodes:
        return pbs_cpus(env, host)
    if kind == "lsf" and not whole_nodes:
        return lsf_cpus(env)
    return None


def count_cpus(kind: str, env: Mapping[str, str], host: str, whole_nodes: bool,
               given: Optional[int], affinity: Optional[int],
               cpu_count: Callable[[], Optional[int]] = os.cpu_count
               ) -> Tuple[int, str, List[str]]:
    """(cpus, where the count came from, notes on what was capped).

    Inside a batch job (`kind` not "none") the count never exceeds the allocation nor the
    affinity mask, whatever `given` (--cpus) says. Outside one, --cpus is the slot count the
    site chose (it may share cores on purpose: a note says so); without it, the affinity mask.
    """
    notes = []  # type: List[str]
    allocated = allocation_cpus(kind, env, host, whole_nodes)
    if allocated is not None:
        limit, source = allocated
        if affinity is not None and affinity < limit:
            notes.append("the allocation lists {} cpus ({}) but this process may run on only "
                         "{} (CPU affinity mask): using {}".format(limit, source, affinity,
                                                                   affinity))
            limit, source = affinity, "CPU affinity mask, below {}".format(source)
    elif affinity is not None:
        limit, source = affinity, "CPU affinity mask"
    else:
        limit, source = max(1, cpu_count() or 1), "os.cpu_count()"
    if given is None:
        return limit, source, notes
    if given <= limit:
        return given, "--cpus {} of {} ({})".format(given, limit, source), notes
    if kind == "none":
        notes.append("--cpus {} is more than the {} cpus this process may run on ({}): jobs "
                     "will share cores".format(given, limit, source))
        return given, "--cpus {}".format(given), notes
    notes.append("--cpus {} is more than the allocation holds: using {} ({})".format(
        given, limit, source))
    return limit, source, notes


def visible_gpus(env: Mapping[str, str]) -> Optional[Tuple[List[str], str]]:
    """The GPU ids a variable such as CUDA_VISIBLE_DEVICES names; None when none is set."""
    for name in GPU_VARIABLES:
        if name in env:
            text = env[name].strip()
            ids = [] if text in _NO_DEVICES else [g.strip() for g in text.split(",")
                                                   if g.strip()]
            return ids, "{}={}".format(name, text)
    return None


def count_gpus(kind: str, env: Mapping[str, str],
               given: List[str]) -> Tuple[List[str], str, List[str]]:
    """(GPU ids, where they came from, notes on what was capped).

    Inside a batch job the ids are those the scheduler made visible (all of them, or as many
    as --gpus lists, never more); with only a count (SLURM_GPUS_ON_NODE) the ids are --gpus's
    first ones or 0..N-1. Outside one, or when the scheduler tells nothing, --gpus as given.
    """
    notes = []  # type: List[str]
    if kind == "none":
        return list(given), "--gpus" if given else "none given", notes
    visible = visible_gpus(env)
    if visible is None:
        count = _positive(env, "SLURM_GPUS_ON_NODE") if kind == "slurm" else None
        if count is None:
            return list(given), "--gpus" if given else "none given", notes
        ids = list(given[:count]) if given else [str(i) for i in range(count)]
        visible = (ids, "SLURM_GPUS_ON_NODE={}".format(count))
    ids, source = visible
    if given and len(given) > len(ids):
        notes.append("--gpus lists {} gpus but the allocation holds {} ({}): using {}".format(
            len(given), len(ids), source, ",".join(ids) or "none"))
    return (list(ids[:len(given)]) if given else list(ids)), source, notes


def count(kind: str, env: Mapping[str, str], host: str, whole_nodes: bool,
          given_cpus: Optional[int], given_gpus: List[str]) -> Count:
    """The agent's slots per node (see the module docstring); AllocationError on a variable
    that cannot be read."""
    cpus, cpus_from, notes = count_cpus(kind, env, host, whole_nodes, given_cpus,
                                        affinity_cpus())
    gpus, gpus_from, gpu_notes = count_gpus(kind, env, given_gpus)
    return Count(cpus, gpus, cpus_from, gpus_from, notes + gpu_notes)

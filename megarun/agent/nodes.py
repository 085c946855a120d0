"""The nodes of an allocation: reading the node list a batch system gives, and what is free on each.

The node list comes from the environment of the batch job (`--nodes-from`), or from the command
line (`--nodelist`). Each node has the same shape (`--cpus`, `--gpus`); the agent keeps, per
node, the free cpus, the free GPU ids, the jobs on it and its occupancy (the sum of 1/packing
of its jobs, never above 1).
"""

import re
from typing import List, Mapping, Optional

#: Where each batch system puts the node list of a job, first found wins.
NODE_SOURCES = ("slurm", "pbs", "lsf", "cobalt", "none")

#: Rounding slack when occupancies such as 1/3 + 1/3 + 1/3 are added up.
_EPSILON = 1e-9


class NodeListError(Exception):
    """The node list cannot be read (the variable is missing or malformed)."""


def expand_hostlist(text: str) -> List[str]:
    """Expand a Slurm host list: "nid[001-003,007],login1" -> nid001 nid002 nid003 nid007 login1.

    Zero padding is kept; several bracket groups in one name multiply out ("r[1-2]n[1-2]").
    """
    names = []  # type: List[str]
    for part in _split_top_level(text.strip()):
        if part:
            names.extend(_expand_name(part))
    return names


def _split_top_level(text: str) -> List[str]:
    """Split on commas outside brackets."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise NodeListError("unbalanced ']' in host list {!r}".format(text))
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth != 0:
        raise NodeListError("unbalanced '[' in host list {!r}".format(text))
    parts.append(text[start:])
    return parts


def _expand_name(name: str) -> List[str]:
    match = re.match(r"([^\[]*)\[([^\]]*)\](.*)\Z", name)
    if match is None:
        return [name]
    prefix, ranges, rest = match.groups()
    tails = _expand_name(rest)
    return [prefix + number + tail for number in expand_ranges(ranges, name) for tail in tails]


def expand_ranges(ranges: str, origin: str) -> List[str]:
    """Expand "001-003,7" into "001", "002", "003", "7" (the width of each low bound is kept)."""
    numbers = []  # type: List[str]
    for item in ranges.split(","):
        item = item.strip()
        low, dash, high = item.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise NodeListError("bad range {!r} in {!r}".format(item, origin))
        if not dash:
            numbers.append(low)
            continue
        if int(high) < int(low):
            raise NodeListError("descending range {!r} in {!r}".format(item, origin))
        numbers.extend(str(n).zfill(len(low)) for n in range(int(low), int(high) + 1))
    return numbers


def unique(names: List[str]) -> List[str]:
    """The names without repeats, in the order first seen."""
    seen = set()
    kept = []
    for name in names:
        if name and name not in seen:
            seen.add(name)
            kept.append(name)
    return kept


def slurm_nodes(env: Mapping[str, str]) -> List[str]:
    text = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not text:
        raise NodeListError("SLURM_JOB_NODELIST is not set: is the agent inside a Slurm job?")
    return unique(expand_hostlist(text))


def pbs_nodes(env: Mapping[str, str]) -> List[str]:
    path = env.get("PBS_NODEFILE")
    if not path:
        raise NodeListError("PBS_NODEFILE is not set: is the agent inside a PBS job?")
    try:
        with open(path) as handle:
            return unique([line.strip() for line in handle])
    except OSError as exc:
        raise NodeListError("cannot read PBS_NODEFILE {}: {}".format(path, exc.strerror)) from None


def lsf_nodes(env: Mapping[str, str], drop_launch_host: bool = False) -> List[str]:
    """LSB_MCPU_HOSTS ("host slots host slots ...") or LSB_HOSTS (one name per slot).

    The first host is the launch host, where the batch script runs; on systems whose launch
    host is a separate service node (jsrun), it is dropped from the compute nodes.
    """
    pairs = (env.get("LSB_MCPU_HOSTS") or "").split()
    if pairs:
        names = unique(pairs[0::2])
    else:
        names = unique((env.get("LSB_HOSTS") or "").split())
    if not names:
        raise NodeListError("LSB_MCPU_HOSTS and LSB_HOSTS are not set: is the agent inside an "
                            "LSF job?")
    return names[1:] if drop_launch_host and len(names) > 1 else names


def cobalt_nodes(env: Mapping[str, str]) -> List[str]:
    """COBALT_PARTNAME: node ids and ranges, "1-3,7" -> 1 2 3 7 (as aprun -L takes them)."""
    text = (env.get("COBALT_PARTNAME") or "").strip()
    if not text:
        raise NodeListError("COBALT_PARTNAME is not set: is the agent inside a Cobalt job?")
    return unique([str(int(n)) for n in expand_ranges(text, "COBALT_PARTNAME")])


def read_nodes(kind: str, env: Mapping[str, str], host: str,
               drop_launch_host: bool = False) -> List[str]:
    """The node names of the allocation as the batch system `kind` gives them."""
    if kind == "slurm":
        return slurm_nodes(env)
    if kind == "pbs":
        return pbs_nodes(env)
    if kind == "lsf":
        return lsf_nodes(env, drop_launch_host)
    if kind == "cobalt":
        return cobalt_nodes(env)
    if kind == "none":
        return [host]
    raise NodeListError("unknown node list source {!r} (one of {})".format(
        kind, ", ".join(NODE_SOURCES)))


def same_host(name: str, host: str) -> bool:
    """Whether a node name is this host (short names compared: "n1" is "n1.cluster")."""
    return name == host or name.split(".")[0] == host.split(".")[0]


class Node:
    """One node of the allocation and what is free on it."""

    __slots__ = ("cpus", "free_cpus", "free_gpus", "jobs", "name", "occupancy", "own")

    def __init__(self, name: str, cpus: int, gpus: List[str], own: bool) -> None:
        self.name = name
        self.own = own
        self.cpus = cpus
        self.free_cpus = cpus
        self.free_gpus = list(gpus)
        self.jobs = 0
        self.occupancy = 0.0

    def fits(self, cpus: int, gpus: int, share: float, max_jobs: int) -> bool:
        """Whether a single-node job of this size can start here now."""
        return (cpus <= self.free_cpus and gpus <= len(self.free_gpus)
                and self.occupancy + share <= 1.0 + _EPSILON
                and (not max_jobs or self.jobs < max_jobs))

    def idle(self) -> bool:
        return self.jobs == 0

    def take(self, cpus: int, gpus: int, share: float) -> List[str]:
        """Reserve a job's share of the node; return the GPU ids it gets."""
        self.free_cpus -= cpus
        self.jobs += 1
        self.occupancy += share
        taken = self.free_gpus[:gpus]
        del self.free_gpus[:gpus]
        return taken

    def give(self, cpus: int, gpu_ids: Optional[List[str]], share: float) -> None:
        self.free_cpus += cpus
        self.jobs -= 1
        self.occupancy = self.occupancy - share if self.jobs else 0.0
        if gpu_ids:
            self.free_gpus.extend(gpu_ids)


def make_nodes(names: List[str], cpus: int, gpus: List[str], host: str) -> List[Node]:
    """Node objects for an allocation, the agent's own node (if it is one of them) first."""
    nodes = [Node(name, cpus, gpus, same_host(name, host)) for name in unique(names)]
    own = [node for node in nodes if node.own][:1]
    for node in nodes:
        if node.own and node is not own[0]:
            node.own = False  # two names for this host: only the first runs jobs directly
    return own + [node for node in nodes if not node.own]


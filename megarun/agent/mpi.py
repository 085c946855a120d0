"""The MPI launcher command of a job step that runs on other nodes or as more than one rank.

Each launcher gets the node list and the rank counts the agent chose, then the site's extra
arguments (`--mpi-arg`), then the step's own argv. Values are list items, never joined into a
shell line.
"""

from typing import List, Sequence

LAUNCHERS = ("none", "srun", "mpiexec", "mpirun", "aprun", "jsrun")


class Placement:
    """Where and how wide one job runs: its nodes, ranks per node, threads and GPUs per rank."""

    __slots__ = ("gpus_per_rank", "nodes", "ranks_per_node", "threads")

    def __init__(self, nodes: Sequence[str], ranks_per_node: int, threads: int,
                 gpus_per_rank: int) -> None:
        self.nodes = list(nodes)
        self.ranks_per_node = ranks_per_node
        self.threads = threads
        self.gpus_per_rank = gpus_per_rank

    @property
    def ranks(self) -> int:
        return len(self.nodes) * self.ranks_per_node


def launch_argv(launcher: str, where: Placement, extra: Sequence[str], command: Sequence[str],
                forward: Sequence[str] = ()) -> List[str]:
    """The argv that starts `command` through `launcher`.

    `forward` names the job's own environment variables, for launchers that do not pass the
    caller's environment on to other nodes by themselves (Open MPI's mpirun).
    """
    hosts = ",".join(where.nodes)
    ranks, per_node = str(where.ranks), str(where.ranks_per_node)
    if launcher == "srun":
        head = ["srun", "--nodes={}".format(len(where.nodes)), "--ntasks={}".format(ranks),
                "--ntasks-per-node={}".format(per_node),
                "--cpus-per-task={}".format(where.threads), "--nodelist={}".format(hosts)]
    elif launcher == "mpiexec":
        head = ["mpiexec", "-n", ranks, "-ppn", per_node, "--hosts", hosts]
    elif launcher == "mpirun":
        head = ["mpirun", "-n", ranks, "--host",
                ",".join("{}:{}".format(node, per_node) for node in where.nodes),
                "--map-by", "ppr:{}:node".format(per_node)]
        for name in forward:
            head += ["-x", name]
    elif launcher == "aprun":
        head = ["aprun", "-n", ranks, "-N", per_node, "-d", str(where.threads), "-L", hosts]
    elif launcher == "jsrun":
        # jsrun places resource sets itself inside the allocation: one per rank, `-r` per node.
        head = ["jsrun", "-n", ranks, "-a", "1", "-c", str(where.threads),
                "-g", str(where.gpus_per_rank), "-r", per_node]
    else:
        raise ValueError("no MPI launcher named {!r} (one of {})".format(
            launcher, ", ".join(LAUNCHERS)))
    return head + list(extra) + list(command)

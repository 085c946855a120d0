"""`python -m megarun.agent`: run the agent, or print its version."""

import argparse
import faulthandler
import json
import logging
import os
import platform
import signal
import socket
import sys
import time
from typing import List, Optional

from megarun.agent import AGENT_VERSION
from megarun.agent.allocation import AllocationError, Count, count
from megarun.agent.mpi import LAUNCHERS
from megarun.agent.nodes import NODE_SOURCES, NodeListError, read_nodes, same_host, unique


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m megarun.agent",
                                     description="The megarun agent (docs/spool-protocol.md).")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("version", help="print the agent version and Python as JSON")
    commands.add_parser("exchange", help="one sync exchange: JSON request on stdin, answer on stdout")
    run = commands.add_parser("run", help="run jobs from a site work dir's spool")
    run.add_argument("--workdir", required=True, help="the site work dir (holds spool/)")
    run.add_argument("--agent-id", default="", help="unique id (default: host-pid-time)")
    run.add_argument("--cpus", type=int, default=None,
                     help="CPU slots per node (default: what the allocation holds, else the "
                          "cores this process may run on); inside a batch job never more "
                          "than the allocation")
    run.add_argument("--gpus", default="", help="GPU ids per node, comma separated (inside a "
                                                "batch job: never more than it holds)")
    run.add_argument("--max-jobs", type=int, default=0,
                     help="at most this many jobs at once per node (default: no limit but cpus)")
    run.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeats")
    run.add_argument("--kill-grace", type=float, default=3.0,
                     help="seconds between SIGTERM and SIGKILL when a job is killed")
    run.add_argument("--idle-exit", type=float, default=0.0,
                     help="exit after this many idle seconds (default: never)")
    run.add_argument("--lock-fd", type=int, default=None, metavar="FD",
                     help="an inherited descriptor holding the site's agent lock: kept open, "
                          "and from no job, until this agent exits")
    pilot = run.add_argument_group("pilot", "running inside a batch allocation")
    pilot.add_argument("--batch-job", default="", help="the batch job id (told in the heartbeat)")
    pilot.add_argument("--pool", default="",
                       help='claim only bundles named "POOL~*.jsonl" (default: names without "~")')
    pilot.add_argument("--nodes-from", choices=NODE_SOURCES, default="none",
                       help="read the allocation's node list from this batch system's "
                            "environment (default: this host only)")
    pilot.add_argument("--nodelist", default="", help="explicit node names, comma separated")
    pilot.add_argument("--whole-nodes", action="store_true",
                       help="the batch job holds whole nodes (exclusive): count each node's "
                            "cpus, not the one slot per node PBS and LSF list")
    pilot.add_argument("--mpi-launcher", choices=LAUNCHERS, default="none",
                       help="starts jobs of several ranks or on other nodes (default: none)")
    pilot.add_argument("--mpi-arg", action="append", default=[], dest="mpi_args",
                       metavar="ARG", help="extra launcher argument (repeatable)")
    pilot.add_argument("--walltime-end", type=float, default=0.0, metavar="EPOCH",
                       help="the allocation's end, in seconds since the epoch")
    pilot.add_argument("--end-grace", type=float, default=30.0, metavar="S",
                       help="stop running jobs this many seconds before the walltime end "
                            "(default: 30)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(json.dumps({"version": AGENT_VERSION, "python": platform.python_version()}))
        return 0
    if args.command == "exchange":
        from megarun.agent.exchange import main as exchange_main

        return exchange_main()
    if args.command != "run":
        _parser().print_help(sys.stderr)
        return 2
    if args.lock_fd is not None and not _keep_lock(args.lock_fd):
        print("megarun agent: error: --lock-fd {} is not an open descriptor".format(
            args.lock_fd), file=sys.stderr)
        return 2
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <agent>` prints where it is
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    from megarun.agent.agent import Agent, Options

    agent_id = args.agent_id or "{}-{}-{}".format(socket.gethostname().split(".")[0],
                                                  os.getpid(), int(time.time() * 1e6))
    if not _safe_id(agent_id):
        print("megarun agent: error: agent id {!r} may only hold letters, digits, '.', '_' "
              "and '-'".format(agent_id), file=sys.stderr)
        return 2
    if args.pool and (not _safe_id(args.pool) or "~" in args.pool):
        print("megarun agent: error: pool {!r} may only hold letters, digits, '.', '_' "
              "and '-'".format(args.pool), file=sys.stderr)
        return 2
    try:
        nodes = _node_names(args)
    except NodeListError as exc:
        print("megarun agent: error: {}".format(exc), file=sys.stderr)
        return 3
    own_node = _own_node(args)
    if nodes and args.mpi_launcher == "none" and not any(
            same_host(name, own_node or socket.gethostname()) for name in nodes):
        print("megarun agent: error: this host ({}) is not one of the nodes ({}), and without "
              "an MPI launcher (--mpi-launcher) no job could run".format(
                  own_node or socket.gethostname(), ",".join(nodes)), file=sys.stderr)
        return 2
    if args.cpus is not None and args.cpus < 1:
        print("megarun agent: error: --cpus must be at least 1, got {}".format(args.cpus),
              file=sys.stderr)
        return 2
    try:
        counted = _count_slots(args)
    except AllocationError as exc:
        print("megarun agent: error: {}".format(exc), file=sys.stderr)
        return 3
    options = Options(args.workdir, agent_id, counted.cpus, counted.gpus, args.max_jobs,
                      args.heartbeat,
                      args.kill_grace, args.idle_exit, nodes=nodes, own_node=own_node,
                      batch_job=args.batch_job, pool=args.pool,
                      mpi_launcher=args.mpi_launcher, mpi_args=args.mpi_args,
                      walltime_end=args.walltime_end, end_grace=args.end_grace,
                      slots_from=counted.describe())
    try:
        return Agent(options).run()
    except OSError as exc:
        print("megarun agent: error: {}: {}".format(exc.filename or args.workdir,
                                                    exc.strerror or exc), file=sys.stderr)
        return 3


def _keep_lock(fd: int) -> bool:
    """Keep the lock descriptor our starter handed over for this process alone: a job that
    inherited it would hold the site's agent lock after this agent died."""
    try:
        os.set_inheritable(fd, False)
    except OSError:
        return False
    return True


def _count_slots(args: argparse.Namespace) -> Count:
    """The cpus and GPU ids per node: what the allocation holds, never more (logged)."""
    given_gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    # An explicit node list outside a batch system is not an allocation to read.
    kind = "none" if args.nodelist else args.nodes_from
    counted = count(kind, os.environ, socket.gethostname(), args.whole_nodes, args.cpus,
                    given_gpus)
    for note in counted.notes:
        logging.getLogger("megarun.agent").warning("%s", note)
    return counted


def _node_names(args: argparse.Namespace) -> List[str]:
    """The allocation's nodes; [] for this host only (no pilot options)."""
    if args.nodelist:
        return unique([n.strip() for n in args.nodelist.split(",") if n.strip()])
    if args.nodes_from == "none":
        return []
    return read_nodes(args.nodes_from, os.environ, socket.gethostname(),
                      drop_launch_host=args.mpi_launcher == "jsrun")


def _own_node(args: argparse.Namespace) -> str:
    """The agent's own node name when the batch system names it ('' : match the host name)."""
    if args.nodes_from == "slurm" and not args.nodelist:
        return os.environ.get("SLURMD_NODENAME", "")
    return ""


def _safe_id(agent_id: str) -> bool:
    return bool(agent_id) and agent_id not in (".", "..", "all") and all(
        c.isalnum() or c in "._-" for c in agent_id)


if __name__ == "__main__":
    sys.exit(main())

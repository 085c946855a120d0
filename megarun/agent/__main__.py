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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m megarun.agent",
                                     description="The megarun agent (docs/spool-protocol.md).")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("version", help="print the agent version and Python as JSON")
    commands.add_parser("exchange", help="one sync exchange: JSON request on stdin, answer on stdout")
    run = commands.add_parser("run", help="run jobs from a site work dir's spool")
    run.add_argument("--workdir", required=True, help="the site work dir (holds spool/)")
    run.add_argument("--agent-id", default="", help="unique id (default: host-pid-time)")
    run.add_argument("--cpus", type=int, default=os.cpu_count() or 1,
                     help="CPU slots on this node (default: all cores)")
    run.add_argument("--gpus", default="", help="GPU ids on this node, comma separated")
    run.add_argument("--max-jobs", type=int, default=0,
                     help="at most this many jobs at once (default: no limit but cpus)")
    run.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeats")
    run.add_argument("--kill-grace", type=float, default=3.0,
                     help="seconds between SIGTERM and SIGKILL when a job is killed")
    run.add_argument("--idle-exit", type=float, default=0.0,
                     help="exit after this many idle seconds (default: never)")
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
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    options = Options(args.workdir, agent_id, args.cpus, gpus, args.max_jobs, args.heartbeat,
                      args.kill_grace, args.idle_exit)
    try:
        return Agent(options).run()
    except OSError as exc:
        print("megarun agent: error: {}: {}".format(exc.filename or args.workdir,
                                                    exc.strerror or exc), file=sys.stderr)
        return 3


def _safe_id(agent_id: str) -> bool:
    return bool(agent_id) and agent_id not in (".", "..", "all") and all(
        c.isalnum() or c in "._-" for c in agent_id)


if __name__ == "__main__":
    sys.exit(main())

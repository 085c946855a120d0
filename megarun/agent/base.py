"""What one agent process keeps track of: its nodes and slots, the jobs it holds, its clocks.

The agent is one class told in layers, each a module on one subject, each building on the one
before: this state, the reports to the home side (megarun/agent/reports.py), claiming bundles
(claims.py), placing jobs on slots (placement.py), starting and watching processes
(processes.py), and the loop with its control files (agent.py). Stdlib only, Python 3.6.
"""

import collections
import os
import socket
import time
from typing import Deque, Dict, List, Optional, Tuple

from megarun.agent import nodes
from megarun.agent.job import Job, Options
from megarun.agent.spool import AgentSpool, EventLog


class AgentState:
    """The state of one agent process (see megarun/agent/agent.py for its loop)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.spool = AgentSpool(options.workdir, options.agent_id, options.pool)
        self.host = socket.gethostname()
        self.queued: Deque[Job] = collections.deque()
        #: Claimed jobs whose timeout no longer fits before the walltime end.
        self.held: List[Job] = []
        self.running: Dict[int, Job] = {}
        self.nodes = nodes.make_nodes(options.nodes or [self.host], options.cpus, options.gpus,
                                      options.own_node or self.host)
        own = self.nodes[0] if self.nodes[0].own else None
        #: The nodes jobs may run on: without a launcher, only the agent's own node.
        self.usable = self.nodes if options.mpi_launcher != "none" else [own] if own else []
        self.free_cpus = options.cpus * len(self.usable)
        #: How many claimed jobs the agent holds at most: enough to fill every slot.
        self._claim_limit = (options.max_jobs or options.cpus) * max(1, len(self.usable))
        self._job_cap = options.max_jobs * len(self.usable)
        self._end_at: Optional[float] = None
        self._ending = False
        if options.walltime_end:
            self._end_at = time.monotonic() + (options.walltime_end - options.end_grace
                                               - time.time())
        self.bundle_left: Dict[str, int] = {}
        self.finished_bundles: List[str] = []
        self._ended: List[Tuple[Job, str, int]] = []
        self._disk_checks: Dict[str, Tuple[float, bool]] = {}
        self.stop_mode: Optional[str] = None
        self.exit_message = ""
        self.env = dict(os.environ)
        self.env.pop("PYTHONPATH", None)
        self.started_at = time.time()
        self.events: Optional[EventLog] = None
        self._wakeup_r = -1
        self._next_control = 0.0
        self._next_beat = 0.0
        self._idle_since = time.monotonic()
        self._queue_empty = False

"""Processes the engine starts detached: the agent of a local site, and background launches.

Both run from this very installation (their PYTHONPATH names it) in a session of their own,
so that a Ctrl-C in the terminal that started them reaches only the launcher, which then
stops them on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from megarun.agent.layout import SpoolLayout, agent_log_path
from megarun.agent.private import make_private_dirs
from megarun.config.area import Area, LauncherSettings
from megarun.engine.agents import HOSTNAME
from megarun.sites.registry import SiteInfo


def agent_args(site: SiteInfo, settings: LauncherSettings) -> list[str]:
    """The agent's `run` options from the site's node shape and the launcher settings.

    Without node.cpus the agent counts the cores it may run on where it runs (its affinity
    mask): this host's count means nothing on an SSH site.
    """
    args = ["--heartbeat", str(settings.heartbeat),
            "--kill-grace", str(settings.kill_grace), "--idle-exit", str(settings.idle_exit)]
    node = site.spec.node
    if node.cpus:
        args += ["--cpus", str(node.cpus)]
    if node.gpus:
        args += ["--gpus", ",".join(str(i) for i in range(node.gpus))]
    if node.max_jobs:
        args += ["--max-jobs", str(node.max_jobs)]
    return args


def new_agent_id() -> str:
    return f"{HOSTNAME.split('.')[0]}-{os.getpid()}-{time.time_ns() // 1000}"


def start_local_agent(site: SiteInfo, settings: LauncherSettings, agent_id: str,
                      lock_fd: int) -> subprocess.Popen[bytes]:
    """Start the agent for a local site, detached from this terminal and its Ctrl-C; it holds
    the site's agent lock (`lock_fd`, megarun.core.filelocks.take_for_a_child) while it lives,
    which outlives this process."""
    argv = [sys.executable, "-m", "megarun.agent", "run", "--workdir", site.workdir,
            "--agent-id", agent_id, "--lock-fd", str(lock_fd), *agent_args(site, settings)]
    make_private_dirs(SpoolLayout(site.workdir).logs)
    fd = os.open(agent_log_path(site.workdir, agent_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                start_new_session=True, env=_agent_env(), pass_fds=(lock_fd,))
    finally:
        os.close(fd)


def _agent_env() -> dict[str, str]:
    """The agent imports megarun.agent from this very installation."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


def start_in_background(area: Area, args: list[str], log_name: str) -> tuple[int, Path]:
    """Run `megarun --area AREA ARGS...` detached from this terminal; return pid and log file."""
    make_private_dirs(str(area.logs_dir))
    log_path = area.logs_dir / log_name
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    argv = [sys.executable, "-m", "megarun", "--area", str(area.root), *args]
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                   start_new_session=True, env=_agent_env())
    finally:
        os.close(fd)
    return process.pid, log_path

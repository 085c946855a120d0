"""Drive a real agent process against a real spool directory (no launcher, no database)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import REPO

#: The oldest interpreter the agent must support; the agent tests run under it too.
OLDEST = "3.6"


def find_oldest_python() -> str | None:
    """A working Python 3.6 interpreter on this machine, if there is one."""
    candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{OLDEST}.*/bin/python")))
    candidates += sorted(glob.glob(f"/root/.pyenv/versions/{OLDEST}.*/bin/python"))
    candidates += [found for found in [shutil.which(f"python{OLDEST}")] if found]
    for candidate in candidates:
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == f"({OLDEST.replace('.', ', ')})":
            return candidate
    return None


class Site:
    """A site work dir with its spool, and the agents started on it."""

    def __init__(self, workdir: Path, python: str) -> None:
        self.workdir = workdir
        self.python = python
        self.spool = workdir / "spool"
        for sub in ("queue", "claimed", "control/kill", "control/stop", "agents", "events"):
            (self.spool / sub).mkdir(parents=True, exist_ok=True)
        self._bundles = 0
        self.processes: list[subprocess.Popen[bytes]] = []

    def job(self, job_id: int, cmd: str | list[str], **extra: Any) -> dict[str, Any]:
        steps = ([{"name": "job", "cmd": cmd}] if isinstance(cmd, str)
                 else [{"name": f"s{i + 1}", "cmd": c} for i, c in enumerate(cmd)])
        spec = {"id": job_id, "attempt": 1, "workdir": str(self.job_dir(job_id)),
                "steps": steps, "env": {}, "nodes": 1, "cpus": 1, "gpus": 0, "threads": 1,
                "timeout": None}
        spec.update(extra)
        return spec

    def job_dir(self, job_id: int) -> Path:
        return self.workdir / "jobs" / str(job_id)

    def queue(self, *specs: dict[str, Any], raw_lines: tuple[str, ...] = (),
              pool: str = "") -> Path:
        self._bundles += 1
        path = self.spool / "queue" / f"{pool + '~' if pool else ''}{self._bundles:06d}.jsonl"
        lines = [json.dumps(spec) for spec in specs] + list(raw_lines)
        tmp = path.with_name("." + path.name)
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.rename(path)
        return path

    def start(self, agent_id: str = "a1", *args: str, idle_exit: float = 0.5,
              cpus: int = 2, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        argv = [self.python, "-m", "megarun.agent", "run", "--workdir", str(self.workdir),
                "--agent-id", agent_id, "--cpus", str(cpus), "--heartbeat", "0.2",
                "--kill-grace", "1", "--idle-exit", str(idle_exit), *args]
        env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
        self.processes.append(process)
        return process

    def run(self, *args: str, agent_id: str = "a1", cpus: int = 2, timeout: float = 60,
            env: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Start an agent that exits when idle, wait for it, return its events."""
        process = self.start(agent_id, *args, cpus=cpus, env=env)
        try:
            _, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)  # the agent prints its stack
            time.sleep(1)
            process.kill()
            _, err = process.communicate()
            raise AssertionError("agent did not exit:\n" + err.decode()) from None
        assert process.returncode == 0, err.decode()
        return self.events(agent_id)

    def events(self, agent_id: str = "a1") -> list[dict[str, Any]]:
        path = self.spool / "events" / f"{agent_id}.jsonl"
        if not path.exists():
            return []
        events = []
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash; the home host skips it too
        return events

    def heartbeat(self, agent_id: str = "a1") -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.spool / "agents" / f"{agent_id}.json").read_text())
        return data

    def stop(self, mode: str, agent_id: str = "all") -> None:
        (self.spool / "control" / "stop" / agent_id).write_text(mode)

    def kill(self, job_id: int) -> None:
        (self.spool / "control" / "kill" / str(job_id)).write_text("")

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def of(events: list[dict[str, Any]], kind: str) -> dict[int, dict[str, Any]]:
    """The events of one kind by job id."""
    return {e["job"]: e for e in events if e["ev"] == kind}


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def process_gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def iter_python() -> Iterator[str]:
    yield sys.executable
    oldest = find_oldest_python()
    if oldest:
        yield oldest

"""Submit → poll until finished → cancel, for every scheduler, through the real LocalTransport.

PBS (PBS Pro and Torque dialects), LSF and Cobalt run against the fake commands in
tests/fakes/bin, which keep a real queue in a file and run the scripts for real; the local
scheduler needs no fake at all.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from megarun.schedulers import BatchState, QueueEntry, Scheduler, ScriptRequest, get_scheduler, render_script
from megarun.transport.local import LocalTransport

FAKES = Path(__file__).resolve().parents[2] / "fakes" / "bin"

AGENT = (
    "import os, sys, time\n"
    "print('nodelist', os.environ.get(sys.argv[1], '-'))\n"
    "print('agent pid', os.getpid())\n"
    "sys.stdout.flush()\n"
    "time.sleep(float(sys.argv[2]))\n"
    "sys.exit(int(sys.argv[3]))\n"
)

FLAVORS = {
    "pbspro": ("pbs", "pbspro"),
    "torque": ("pbs", "torque"),
    "lsf": ("lsf", ""),
    "cobalt": ("cobalt", "cobalt"),
    "local": ("local", ""),
}


@pytest.fixture
def queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MEGARUN_FAKE_QUEUE", str(tmp_path / "queue.json"))
    monkeypatch.setenv("MEGARUN_FAKE_START_DELAY", "0.3")
    return tmp_path / "queue.json"


SiteFactory = Callable[[str, Path], "Site"]


@pytest.fixture
def make_site() -> Iterator[SiteFactory]:
    """Sites for a test; whatever they submitted is cancelled when the test ends, pass or fail."""
    sites: list[Site] = []

    def make(name: str, batch_dir: Path) -> Site:
        sites.append(Site(get_scheduler(name), batch_dir))
        return sites[-1]

    yield make
    for site in sites:
        if site.submitted:
            site.transport.run(site.scheduler.cancel_argv(site.submitted), timeout=30)


class Site:
    """Drives one scheduler the way the services do: argv in, text out, one status call."""

    def __init__(self, scheduler: Scheduler, batch_dir: Path) -> None:
        self.scheduler = scheduler
        self.batch_dir = batch_dir
        self.transport = LocalTransport()
        self.submitted: list[str] = []

    def submit(self, name: str, seconds: float, code: int, nodes: int = 1) -> str:
        req = ScriptRequest(
            job_name=f"megarun-{name}", nodes=nodes, walltime_minutes=5, queue=None,
            account=None, batch_dir=str(self.batch_dir),
            output=str(self.batch_dir / f"{name}.out"),
            exit_file=str(self.batch_dir / f"{name}.exit"),
            agent_argv=[sys.executable, "-c", AGENT, self.scheduler.nodelist_env or "NONE",
                        str(seconds), str(code)])
        path = self.batch_dir / f"{name}.sh"
        script = render_script(self.scheduler.name, req)
        path.write_text(script)
        path.chmod(0o755)
        stdin = script.encode() if self.scheduler.submit_stdin else None
        result = self.transport.run(self.scheduler.submit_argv(str(path)), stdin=stdin, timeout=30)
        assert result.ok, result.stderr_text
        scheduler_id = self.scheduler.parse_submit(result.text)
        self.submitted.append(scheduler_id)
        return scheduler_id

    def status(self, ids: list[str]) -> dict[str, QueueEntry]:
        result = self.transport.run(self.scheduler.status_argv(getpass.getuser(), ids),
                                   timeout=30)
        assert not self.scheduler.status_failed(result.code, result.stderr_text), \
            result.stderr_text
        return self.scheduler.parse_status(result.text)

    def poll_until(self, scheduler_id: str, done: set[BatchState | None],
                   timeout: float = 30) -> list[BatchState | None]:
        """States seen (None: gone from the queue) until one in `done` shows."""
        seen: list[BatchState | None] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.status([scheduler_id]).get(scheduler_id)
            state = entry.state if entry else None
            if not seen or seen[-1] != state:
                seen.append(state)
            if state in done:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"job {scheduler_id} never reached {done}; saw {seen}")


@pytest.mark.parametrize("flavor", sorted(FLAVORS))
def test_submit_poll_finish_then_cancel(flavor: str, queue: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, make_site: SiteFactory) -> None:
    name, dialect = FLAVORS[flavor]
    if dialect:
        monkeypatch.setenv("MEGARUN_FAKE_FLAVOR", dialect)
    batch = tmp_path / "batch"
    batch.mkdir()
    site = make_site(name, batch)

    hold = tmp_path / "hold"  # the fake queue keeps jobs queued while this file exists
    monkeypatch.setenv("MEGARUN_FAKE_HOLD", str(hold))
    if name != "local":
        hold.touch()
    first = site.submit("1", seconds=0.5, code=4)
    if name != "local":  # queued, as the scheduler's own words say, until it may start
        assert site.poll_until(first, {BatchState.QUEUED})[-1] is BatchState.QUEUED
        hold.unlink()
    seen = site.poll_until(first, {BatchState.FINISHED, None})
    assert BatchState.RUNNING in seen
    assert (batch / "1.exit").read_text() == "4\n"  # the script's own record of how it ended
    nodelist = (batch / "1.out").read_text()
    if name in ("pbs", "lsf"):
        host = socket.gethostname()
        assert f"nodelist {host}" in nodelist or "nodelist /" in nodelist
    if name == "pbs":
        assert site.status([first])[first].exit_code == 4  # qstat shows the exit status too

    second = site.submit("2", seconds=120, code=0)
    site.poll_until(second, {BatchState.RUNNING})
    pid = agent_pid(batch / "2.out")
    cancel = site.transport.run(site.scheduler.cancel_argv([second]), timeout=30)
    assert cancel.ok, cancel.stderr_text
    end = site.poll_until(second, {BatchState.FINISHED, BatchState.CANCELLED, None})[-1]
    assert end in {BatchState.FINISHED, BatchState.CANCELLED, None}
    assert not (batch / "2.exit").exists()  # killed: no exit code recorded, never "success"
    assert_gone(pid)


def agent_pid(output: Path, timeout: float = 10) -> int:
    """The pid the test agent printed once it started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = output.read_text() if output.exists() else ""
        for line in text.splitlines():
            if line.startswith("agent pid "):
                return int(line.split()[-1])
        time.sleep(0.05)
    raise AssertionError(f"no agent pid in {output}")


def assert_gone(pid: int, timeout: float = 10) -> None:
    """The process is dead (or a zombie waiting for its parent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} survived the cancel")


def test_pbs_node_file_lists_this_host(queue: Path, tmp_path: Path, make_site: SiteFactory) -> None:
    site = make_site("pbs", tmp_path)
    job = site.submit("nodes", seconds=0, code=0)
    site.poll_until(job, {BatchState.FINISHED})
    line = next(line for line in (tmp_path / "nodes.out").read_text().splitlines()
                if line.startswith("nodelist "))
    assert Path(line.split(" ", 1)[1]).read_text().split() == [socket.gethostname()]


@pytest.mark.parametrize("flavor", ["pbspro", "lsf"])
def test_request_that_can_never_run(flavor: str, queue: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, make_site: SiteFactory) -> None:
    name, dialect = FLAVORS[flavor]
    monkeypatch.setenv("MEGARUN_FAKE_FLAVOR", dialect or "pbspro")
    monkeypatch.setenv("MEGARUN_FAKE_MAX_NODES", "1")
    site = make_site(name, tmp_path)
    job = site.submit("big", seconds=0, code=0, nodes=4)
    time.sleep(0.5)
    entry = site.status([job])[job]
    assert entry.state is BatchState.QUEUED
    assert entry.reason
    if name == "pbs":
        assert entry.never_runs and entry.reason.startswith("Can Never Run")


def test_unknown_ids_do_not_fail_the_status_command(
        queue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        make_site: SiteFactory) -> None:
    for dialect in ("pbspro", "torque"):
        monkeypatch.setenv("MEGARUN_FAKE_FLAVOR", dialect)
        site = make_site("pbs", tmp_path)
        job = site.submit(f"known-{dialect}", seconds=0, code=0)
        entries = site.status([job, "999999.gone"])  # asserts status_failed is False
        assert set(entries) == {job}
    site = make_site("lsf", tmp_path)
    job = site.submit("known-lsf", seconds=0, code=0)
    result = site.transport.run(site.scheduler.status_argv(None, [job, "999999"]))
    assert result.code == 255 and not site.scheduler.status_failed(result.code, result.stderr_text)
    assert set(site.scheduler.parse_status(result.text)) == {job}


def test_cobalt_refuses_a_script_that_is_not_executable(queue: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEGARUN_FAKE_FLAVOR", "cobalt")
    script = tmp_path / "x.sh"
    script.write_text("#!/bin/sh\n")
    result = LocalTransport().run(get_scheduler("cobalt").submit_argv(str(script)))
    assert not result.ok and "not executable" in result.stderr_text


def test_version_probes_answer(queue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = LocalTransport()
    for name, dialect in (("pbs", "pbspro"), ("pbs", "torque"), ("cobalt", "cobalt"),
                          ("lsf", ""), ("local", "")):
        monkeypatch.setenv("MEGARUN_FAKE_FLAVOR", dialect or "pbspro")
        result = transport.run(get_scheduler(name).version_argv())
        assert result.ok, (name, result.stderr_text)
        assert (result.text + result.stderr_text).strip()


def test_same_request_renders_for_every_scheduler(tmp_path: Path) -> None:
    req = ScriptRequest("megarun-1", 1, 10, None, None, str(tmp_path), str(tmp_path / "o"),
                        str(tmp_path / "e"), ["true"], {}, {}, [])
    for name in ("local", "slurm", "pbs", "lsf", "cobalt"):
        assert "--walltime-end" in render_script(name, dataclasses.replace(req))


def test_local_start_without_setsid_still_makes_a_process_group(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_site: SiteFactory) -> None:
    # Hosts without util-linux (macOS): python3's os.setsid must stand in for setsid(1).
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("python3", "ps", "date"):
        found = shutil.which(name)
        assert found, name
        (tools / name).symlink_to(found)
    monkeypatch.setenv("PATH", str(tools))
    batch = tmp_path / "batch"
    batch.mkdir()
    site = make_site("local", batch)
    job = site.submit("1", seconds=120, code=0)
    try:
        pid = agent_pid(batch / "1.out")
        assert os.getpgid(int(job)) == int(job)  # the script leads its own group
        assert os.getpgid(pid) == int(job)  # and the agent is in it
        assert site.status([job])[job].state is BatchState.RUNNING
    finally:
        cancel = site.transport.run(site.scheduler.cancel_argv([job]), timeout=30)
    assert cancel.ok
    assert_gone(pid)

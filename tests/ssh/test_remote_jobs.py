"""Jobs on SSH sites against the real sshd: launch, sync, logs, kill, faults, round trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megarun.services.areas import init_area
from tests.conftest import REPO, megarun_process
from tests.sshd import SshServer


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    (folder / ".ssh").mkdir(parents=True, mode=0o700)
    return folder


@pytest.fixture
def remote_area(tmp_path: Path, sshd: SshServer, home: Path, known_hosts: Path) -> Path:
    """An area with an SSH site `remote` on the loopback sshd and an `echo` app."""
    root = tmp_path / "area"
    init_area(root, keys=["os"])
    ok(root, home, "site", "add", "remote", "--preset", "local", "--host", sshd.spec,
       "--workdir", str(tmp_path / "remote-work"), "--identity", str(sshd.client_key.path),
       "--known-hosts", str(known_hosts))
    ok(root, home, "app", "add", "echo", "--command", "echo out {{ msg }}; echo err {{ msg }} >&2")
    return root


def cli(area: Path, home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return megarun_process(area, *args, env={"HOME": str(home)}, timeout=timeout)


def ok(area: Path, home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = cli(area, home, *args, timeout=timeout)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def jobs(area: Path, home: Path) -> list[dict[str, object]]:
    return list(json.loads(ok(area, home, "job", "ls", "--json").stdout))


def test_jobs_run_on_the_ssh_site_and_logs_come_back(remote_area: Path, home: Path,
                                                     tmp_path: Path) -> None:
    ok(remote_area, home, "job", "create", "--app", "echo", "-p", "msg=a b;c", "--site",
       "remote", "--count", "12")
    summary = json.loads(ok(remote_area, home, "launch", "--site", "remote", "--json").stdout)
    assert summary["by_status"] == {"PASS": 12}, summary
    rows = jobs(remote_area, home)
    assert {r["state"] for r in rows} == {"COMPLETED"}
    first = rows[0]
    shown = json.loads(ok(remote_area, home, "job", "show", str(first["id"]), "--json").stdout)
    workdir = Path(str(shown["workdir"]))
    assert workdir.is_relative_to(tmp_path / "remote-work" / "jobs")
    assert (workdir / "job.out").read_text() == "out a b;c\n"
    logs = ok(remote_area, home, "job", "logs", str(first["id"])).stdout
    assert "out a b;c" in logs and "err a b;c" in logs
    # The mirror holds the events; nothing is left queued or claimed on either side.
    mirror = remote_area / ".megarun" / "sites" / "remote" / "spool"
    assert not list((mirror / "outbox").glob("*.jsonl"))
    assert not list((mirror / "sent").glob("*.jsonl"))
    assert not list((tmp_path / "remote-work" / "spool" / "queue").glob("*.jsonl"))


def hidden_run(hide: Path, argv: list[str], env: dict[str, str],
               timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run argv in a private mount namespace where `hide` is an empty tmpfs.

    The sshd still sees the real files, so whatever the command shows from `hide` came over SSH.
    """
    script = 'mount -t tmpfs megarun-hidden "$1" && shift && exec "$@"'
    return subprocess.run(["unshare", "-m", "--", "sh", "-c", script, "sh", str(hide), *argv],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_nothing_of_the_site_is_read_locally(remote_area: Path, home: Path,
                                             tmp_path: Path) -> None:
    """launch, logs and show work while the site's work dir is invisible to megarun."""
    remote_work = tmp_path / "remote-work"
    remote_work.mkdir()
    (remote_work / "marker").write_text("here")
    env = {"HOME": str(home)}
    probe = hidden_run(remote_work, ["ls", "-A", str(remote_work)], env)
    if probe.returncode != 0:
        pytest.fail(f"cannot hide a directory with a mount namespace: {probe.stderr}")
    assert probe.stdout == ""  # proves the hiding works
    megarun = [sys.executable, "-m", "megarun", "--area", str(remote_area)]
    ok(remote_area, home, "job", "create", "--app", "echo", "-p", "msg=hidden", "--site",
       "remote", "--count", "3")
    launched = hidden_run(remote_work, [*megarun, "launch", "--site", "remote", "--json"], env)
    assert launched.returncode == 0, launched.stderr
    assert json.loads(launched.stdout)["by_status"] == {"PASS": 3}
    job_id = str(jobs(remote_area, home)[0]["id"])
    logs = hidden_run(remote_work, [*megarun, "job", "logs", job_id, "--json"], env)
    assert logs.returncode == 0, logs.stderr
    assert json.loads(logs.stdout) == {"job.out": "out hidden\n", "job.err": "err hidden\n"}


def test_jobs_run_on_a_second_host(tmp_path: Path, sshd_netns: SshServer, home: Path) -> None:
    root = tmp_path / "area"
    init_area(root, keys=["os"])
    known = tmp_path / "known_node2"
    known.write_text(sshd_netns.known_hosts_line)
    ok(root, home, "site", "add", "node2", "--preset", "local", "--host", sshd_netns.spec,
       "--workdir", str(tmp_path / "node2-work"), "--identity", str(sshd_netns.client_key.path),
       "--known-hosts", str(known))
    ok(root, home, "app", "add", "where", "--command", "hostname > where.txt")
    ok(root, home, "job", "create", "--app", "where", "--site", "node2", "--count", "4")
    summary = json.loads(ok(root, home, "launch", "--site", "node2", "--json").stdout)
    assert summary["by_status"] == {"PASS": 4}
    for row in jobs(root, home):
        shown = json.loads(ok(root, home, "job", "show", str(row["id"]), "--json").stdout)
        assert Path(str(shown["workdir"]), "where.txt").read_text().strip() == "node2"


def test_unknown_host_key_refuses_launch_and_loses_nothing(tmp_path: Path, sshd: SshServer,
                                                           home: Path) -> None:
    root = tmp_path / "area"
    init_area(root, keys=["os"])
    ok(root, home, "site", "add", "remote", "--preset", "local", "--host", sshd.spec,
       "--workdir", str(tmp_path / "w"), "--identity", str(sshd.client_key.path))
    ok(root, home, "app", "add", "noop", "--command", "true")
    ok(root, home, "job", "create", "--app", "noop", "--site", "remote", "--count", "2")
    refused = cli(root, home, "launch", "--site", "remote")
    assert refused.returncode == 3
    assert "--accept-host-key" in refused.stderr and "Traceback" not in refused.stderr
    assert {r["state"] for r in jobs(root, home)} == {"READY"}
    assert not (tmp_path / "w").exists()

"""Two hosts sharing one area: this host (the home) and "node2", a network namespace with its
own host name and sshd. node2 reads the mirror, forwards writes to the home host over the real
sshd, and takes the working database over with `homehost migrate` (also when either side is
killed -9 at any step of the hand-over)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megarun.homehost.areas import init_area
from megarun.homehost.handoff import FAULT_POINTS
from tests.conftest import REPO, megarun_process
from tests.sshd import SshServer

THIS_HOST = socket.gethostname()


class Hosts:
    """The area, and how to run megarun on either host."""

    def __init__(self, area: Path, home: Path, netns: str, key: Path, known_hosts: Path,
                 gateway: SshServer, node2: SshServer) -> None:
        self.area, self.home, self.netns = area, home, netns
        self.key, self.known_hosts = key, known_hosts
        self.gateway, self.node2 = gateway, node2

    def here(self, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
        return megarun_process(self.area, *args, env={"HOME": str(self.home), **(env or {})})

    def on_node2(self, *args: str, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
        script = 'hostname node2; exec "$@"'
        argv = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", script, "sh",
                sys.executable, "-m", "megarun", "--area", str(self.area), *args]
        full_env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(self.home), **(env or {})}
        return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=180,
                              check=False)

    def ssh_options(self) -> list[str]:
        return ["--identity", str(self.key), "--known-hosts", str(self.known_hosts)]

    def homehost(self) -> dict[str, object]:
        return dict(json.loads((self.area / ".megarun" / "homehost").read_text()))


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result


@pytest.fixture
def hosts(sshd_netns: SshServer, sshd_gateway: SshServer, tmp_path: Path) -> Hosts:
    area = tmp_path / "area"
    init_area(area, keys=["os"])
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd_gateway.known_hosts_line + sshd_netns.known_hosts_line)
    setup = Hosts(area, home, str(sshd_netns.netns), sshd_gateway.client_key.path, known_hosts,
                  sshd_gateway, sshd_netns)
    ok(setup.here("homehost", "set-address", sshd_gateway.spec, *setup.ssh_options()))
    ok(setup.here("app", "add", "hello", "--command", "echo {{ msg }}"))
    ok(setup.here("job", "create", "--app", "hello", "-p", "msg=hi", "--count", "3"))
    return setup


def job_ids(result: subprocess.CompletedProcess[str]) -> list[int]:
    return sorted(int(job["id"]) for job in json.loads(ok(result).stdout))


def db_jobs(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [row[0] for row in db.execute("SELECT id FROM job ORDER BY id")]


def test_node2_reads_the_mirror_without_locks(hosts: Hosts) -> None:
    assert hosts.on_node2("homehost", "show", "--json").returncode == 0
    result = hosts.on_node2("--verbose", "job", "ls", "--json")
    assert job_ids(result) == [1, 2, 3]
    assert f"reading the mirror of {THIS_HOST}'s working database, written" in result.stderr
    after = hosts.on_node2("job", "ls", "--json", "-v")  # a global option after the command
    assert f"reading the mirror of {THIS_HOST}'s working database" in after.stderr
    state = sorted(p.name for p in (hosts.area / ".megarun").iterdir())
    assert not [name for name in state if name.startswith("megarun.db-")]  # no journal, no shm
    info = json.loads(ok(hosts.on_node2("homehost", "show", "--json")).stdout)
    assert (info["host"], info["this_host"], info["is_home"]) == (THIS_HOST, "node2", False)


def test_node2_forwards_a_write_to_the_home_host(hosts: Hosts) -> None:
    result = ok(hosts.on_node2("--verbose", "job", "create", "--app", "hello", "-p", "msg=a b;c"))
    assert f"forwarding to the home host {THIS_HOST}" in result.stderr
    assert "4" in result.stdout  # the home host's answer, printed here
    assert db_jobs(Path(str(hosts.homehost()["db"]))) == [1, 2, 3, 4]
    assert job_ids(hosts.on_node2("job", "ls", "--json")) == [1, 2, 3, 4]  # the mirror caught up
    failed = hosts.on_node2("job", "show", "99")
    assert failed.returncode != 0 and "99" in failed.stderr  # read errors are local and clear


def test_write_is_refused_when_the_home_host_cannot_be_reached(hosts: Hosts) -> None:
    ok(hosts.here("homehost", "set-address", f"root@{hosts.gateway.address}:1",
                  *hosts.ssh_options()))
    result = hosts.on_node2("job", "create", "--app", "hello", "-p", "msg=x")
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "cannot be reached" in result.stderr
    assert db_jobs(Path(str(hosts.homehost()["db"]))) == [1, 2, 3]
    assert job_ids(hosts.on_node2("job", "ls", "--json")) == [1, 2, 3]  # reads still work


def test_homehost_migrate_there_and_back(hosts: Hosts) -> None:
    first_db = Path(str(hosts.homehost()["db"]))
    moved = ok(hosts.on_node2("homehost", "migrate", "--address", hosts.node2.spec,
                              *hosts.ssh_options(), "--json"))
    info = json.loads(moved.stdout)
    assert (info["from"], info["to"]) == (THIS_HOST, "node2")
    record = hosts.homehost()
    assert record["host"] == "node2" and record["moving_to"] is None
    assert db_jobs(Path(str(record["db"]))) == [1, 2, 3]
    assert not first_db.exists()  # the old copy is kept aside under another name
    assert list(first_db.parent.glob(first_db.name + ".released-*"))
    # now this host reads the mirror and forwards its writes to node2
    ok(hosts.here("job", "create", "--app", "hello", "-p", "msg=x"))
    assert db_jobs(Path(str(record["db"]))) == [1, 2, 3, 4]
    assert job_ids(hosts.here("job", "ls", "--json")) == [1, 2, 3, 4]
    ok(hosts.here("homehost", "migrate", "--address", hosts.gateway.spec, *hosts.ssh_options()))
    back = hosts.homehost()
    assert back["host"] == THIS_HOST
    assert db_jobs(Path(str(back["db"]))) == [1, 2, 3, 4]
    ok(hosts.here("job", "create", "--app", "hello", "-p", "msg=x"))  # a plain local write again
    assert db_jobs(Path(str(back["db"]))) == [1, 2, 3, 4, 5]


def test_homehost_migrate_refuses_a_busy_area(hosts: Hosts) -> None:
    db_path = Path(str(hosts.homehost()["db"]))
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE job SET state = 'RUNNING' WHERE id = 1")
    result = hosts.on_node2("homehost", "migrate", "--address", hosts.node2.spec,
                            *hosts.ssh_options())
    assert result.returncode == 3 and "not quiet" in result.stderr, result.stderr
    record = hosts.homehost()
    assert record["host"] == THIS_HOST and record["moving_to"] is None
    ok(hosts.here("job", "create", "--app", "hello", "-p", "msg=x"))  # the home works as before
    forced = hosts.on_node2("homehost", "migrate", "--force", "--address", hosts.node2.spec,
                            *hosts.ssh_options())
    assert forced.returncode == 0, forced.stderr
    assert hosts.homehost()["host"] == "node2"


@pytest.mark.parametrize("step", FAULT_POINTS)
def test_a_crash_at_any_step_leaves_exactly_one_home(hosts: Hosts, step: str) -> None:
    before = db_jobs(Path(str(hosts.homehost()["db"])))
    crashed = hosts.on_node2("homehost", "migrate", "--address", hosts.node2.spec,
                             *hosts.ssh_options(), env={"MEGARUN_FAULT": step})
    expected_home = "node2" if step in ("homehost-release:after-switch",
                                        "homehost-migrate:after-commit") else THIS_HOST
    if step.startswith("homehost-migrate:"):
        assert crashed.returncode == -9, crashed.stderr  # node2 itself died
    elif expected_home == "node2":
        assert crashed.returncode == 0, crashed.stderr  # node2 saw the file name it
    else:
        assert crashed.returncode == 3, crashed.stderr  # the home host's half died under it
    deadline = time.monotonic() + 15  # after node2 died, the home host may still be finishing
    while hosts.homehost()["host"] != expected_home and time.monotonic() < deadline:
        time.sleep(0.1)
    record = hosts.homehost()
    assert record["host"] in (THIS_HOST, "node2")
    home_db = Path(str(record["db"]))
    assert record["host"] == expected_home
    assert db_jobs(home_db) == before  # the one home has every job, intact
    # whichever host is home, both hosts go on working: a write from each lands there once
    ok(hosts.here("job", "create", "--app", "hello", "-p", "msg=x"))
    ok(hosts.on_node2("job", "create", "--app", "hello", "-p", "msg=x"))
    assert db_jobs(home_db) == [*before, len(before) + 1, len(before) + 2]
    assert hosts.homehost()["moving_to"] is None

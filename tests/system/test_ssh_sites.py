"""SSH sites through the CLI against the real sshd: add, check, host keys, failures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from megarun.homehost.areas import init_area
from tests.conftest import megarun_process
from tests.sshd import SshServer


@pytest.fixture
def site_area(tmp_path: Path) -> Path:
    root = tmp_path / "area"
    init_area(root, keys=["os"])
    return root


def cli(area: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return megarun_process(area, *args, env={"HOME": str(home)}, timeout=120)


def add_site(area: Path, home: Path, sshd: SshServer, tmp_path: Path, *extra: str) -> None:
    result = cli(area, home, "site", "add", "remote", "--preset", "local", "--host", sshd.spec,
                 "--workdir", str(tmp_path / "remote-work"), "--identity",
                 str(sshd.client_key.path), *extra)
    assert result.returncode == 0, result.stderr


def test_unknown_host_key_is_refused_until_accepted(sshd: SshServer, site_area: Path,
                                                     home: Path, tmp_path: Path) -> None:
    add_site(site_area, home, sshd, tmp_path)
    known = home / ".ssh" / "known_hosts"
    refused = cli(site_area, home, "site", "check", "remote")
    assert refused.returncode == 3
    assert "megarun site check remote --accept-host-key" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not known.exists() or sshd.host_public_key.split()[1] not in known.read_text()
    accepted = cli(site_area, home, "site", "check", "remote", "--accept-host-key", "--json")
    assert accepted.returncode == 0, accepted.stderr
    assert sshd.host_public_key.split()[1] in known.read_text()
    assert (known.stat().st_mode & 0o777) == 0o600
    again = cli(site_area, home, "site", "check", "remote", "--json")
    assert again.returncode == 0, again.stderr
    facts = json.loads(again.stdout)
    assert facts["python"].startswith("3.") and facts["disk_free"] > 0
    assert facts["agent_installed"] is False and facts["host_spec"] == sshd.spec


def test_check_with_known_hosts_file_and_an_old_or_missing_python(
        sshd: SshServer, site_area: Path, home: Path, tmp_path: Path, known_hosts: Path) -> None:
    add_site(site_area, home, sshd, tmp_path, "--known-hosts", str(known_hosts),
             "--python", "/no/such/python3")
    result = cli(site_area, home, "site", "check", "remote")
    assert result.returncode == 3
    assert "'/no/such/python3' was not found" in result.stderr and "--python" in result.stderr


def test_check_reports_a_missing_scheduler(sshd: SshServer, site_area: Path, home: Path,
                                           tmp_path: Path, known_hosts: Path) -> None:
    add_site(site_area, home, sshd, tmp_path, "--known-hosts", str(known_hosts),
             "--set", "scheduler=lsf")
    result = cli(site_area, home, "site", "check", "remote", "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["scheduler_found"] is False
    assert "the lsf commands are not on the PATH" in result.stderr


def test_unreachable_host_is_a_clear_environment_error(site_area: Path, home: Path,
                                                       tmp_path: Path, sshd: SshServer) -> None:
    result = cli(site_area, home, "site", "add", "gone", "--preset", "local", "--host",
                 "127.0.0.1:1", "--workdir", "/tmp/x", "--identity", str(sshd.client_key.path))
    assert result.returncode == 0, result.stderr
    check = cli(site_area, home, "site", "check", "gone")
    assert check.returncode == 3 and "Traceback" not in check.stderr
    assert "127.0.0.1" in check.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--host", "user@host;rm -rf /", "--workdir", "/w"), "host"),
    (("--host", "host:99999", "--workdir", "/w"), "port"),
    (("--host", "host", "--workdir", "relative/dir"), "absolute path"),
    (("--host", "host"), "--workdir"),
    (("--host", "host", "--workdir", "/w", "--identity", "/no/such/key"), "no such file"),
    (("--identity", "/no/such/key"), "need --host"),
])
def test_bad_ssh_site_options(site_area: Path, home: Path, args: tuple[str, ...],
                              message: str) -> None:
    result = cli(site_area, home, "site", "add", "bad", "--preset", "local", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    listed = cli(site_area, home, "site", "ls", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)] == []


def test_install_agent_ships_once_and_the_shipped_agent_runs(
        sshd: SshServer, site_area: Path, home: Path, tmp_path: Path, known_hosts: Path) -> None:
    add_site(site_area, home, sshd, tmp_path, "--known-hosts", str(known_hosts))
    first = cli(site_area, home, "site", "check", "remote", "--install-agent", "--json")
    assert first.returncode == 0, first.stderr
    facts = json.loads(first.stdout)
    assert facts["agent_shipped"] is True and facts["agent_installed"] is True
    shipped = tmp_path / "remote-work" / "agent" / facts["agent"]
    assert (shipped.stat().st_mode & 0o777) == 0o600
    version = subprocess.run(["python3", str(shipped), "version"], capture_output=True,
                             text=True, check=True)
    assert json.loads(version.stdout)["version"]
    second = cli(site_area, home, "site", "check", "remote", "--install-agent", "--json")
    assert json.loads(second.stdout)["agent_shipped"] is False  # same content, same name

"""The Python API against the real sshd: a job of an SSH site has its logs read there, as
`megarun job logs` reads them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import megarun
from tests.sshd import SshServer
from tests.system.test_remote_jobs import add_ssh_site, hidden_run, new_area, ok


def test_logs_of_a_job_on_the_ssh_site(tmp_path: Path, sshd: SshServer, home: Path,
                                       known_hosts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    area = new_area(tmp_path)
    add_ssh_site(area, home, "remote", sshd, tmp_path / "remote-work", known_hosts)
    ok(area, home, "app", "add", "echo", "--command",
       "echo out {{ msg }}; echo err {{ msg }} >&2", "--param", "msg=x")
    monkeypatch.setenv("HOME", str(home))  # no ~/.ssh of the machine's, as the CLI runs
    with megarun.open_area(area) as api:
        assert api.create_jobs("echo", params=[{"msg": "a b;c"}], site="remote") == [1]
    ok(area, home, "launch", "--site", "remote", "--quiet")
    printed = ok(area, home, "job", "logs", "1").stdout
    assert printed == "==> job.out <==\nout a b;c\n\n==> job.err <==\nerr a b;c\n"
    with megarun.open_area(area) as api:
        job = api.job(1)
        assert job.site == "remote" and job.status == "PASS"
        assert job.logs() == printed
        assert job.logs(tail=1, step="job") == ok(area, home, "job", "logs", "1", "--tail", "1",
                                                   "--step", "job").stdout
    # Read over SSH: with the site's work dir hidden from this process, the logs still come.
    code = ("import sys, megarun\n"
            "with megarun.open_area(sys.argv[1]) as area:\n"
            "    print(area.job(1).logs(), end='')\n")
    hidden = hidden_run(tmp_path / "remote-work", [sys.executable, "-c", code, str(area)],
                        {"HOME": str(home)})
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout == printed

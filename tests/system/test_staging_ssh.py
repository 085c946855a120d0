"""Moving files and trees to and from an SSH host for stage-in/out, against the real sshd.

SFTP always; rsync for large trees when it exists on both ends (installed with apt-get here if
missing and this is root, else those tests are skipped loudly).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from megarun.engine import staging
from megarun.engine.staging import StageItem, StagingError
from megarun.transport import rsync
from megarun.transport.ssh.transport import SshTransport
from tests.conftest import megarun_process
from tests.sshd import SshServer
from tests.system.conftest import skip_loudly

Make = Callable[..., SshTransport]


def make_tree(root: Path) -> Path:
    (root / "deep" / "er").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "deep" / "er" / "data.bin").write_bytes(bytes(range(256)) * 64)
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o750)
    (root / "link").symlink_to("deep/er/data.bin")
    return root


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Every path under root: its kind and content (or link target), and its permission bits."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = ("link", os.readlink(path))
        elif path.is_dir():
            found[name] = ("dir", "")
        else:
            found[name] = (oct(path.stat().st_mode & 0o777), path.read_bytes().hex())
    return found


@pytest.fixture
def immutable(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A folder even root cannot write into (chattr +i), made writable again afterwards."""
    folder = tmp_path / "locked"
    folder.mkdir()
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        skip_loudly(request.config, f"PERMISSION TEST NOT RUN: chattr +i failed: {done.stderr}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


@pytest.fixture(scope="session")
def rsync_present(request: pytest.FixtureRequest) -> None:
    """rsync on this machine (which is also the sshd's), installed by tests/system_services.py."""
    if not shutil.which("rsync"):
        skip_loudly(request.config, "RSYNC TESTS NOT RUN: rsync is missing (python3 -m "
                                    "tests.system_services installs it; scripts/test runs that)")


# -- SFTP ------------------------------------------------------------------------------------
def test_files_and_trees_go_and_come_back_over_sftp(make_transport: Make, tmp_path: Path) -> None:
    transport = make_transport()
    local = make_tree(tmp_path / "local")
    remote = tmp_path / "remote" / "a" / "tree"
    assert transport.put_tree(local, remote) == "sftp"
    assert snapshot(remote) == snapshot(local)
    assert transport.is_dir(remote) and not transport.is_dir(remote / "run.sh")
    assert not transport.is_dir(tmp_path / "nothing")
    back = tmp_path / "back"
    assert transport.get_tree(remote, back) == "sftp"
    assert snapshot(back) == snapshot(local)
    (local / "run.sh").write_text("changed\n")
    transport.put_tree(local, remote)  # merges over what is there
    assert (remote / "run.sh").read_text() == "changed\n"
    assert (remote / "deep" / "er" / "data.bin").exists()


def test_stage_in_and_out_through_an_ssh_executor(make_transport: Make, tmp_path: Path) -> None:
    transport = make_transport()
    source = tmp_path / "in.dat"
    source.write_text("input\n")
    job_dir = tmp_path / "site" / "jobs" / "7"
    staging.stage_in(transport, str(job_dir), [StageItem(str(source), "sub/in.dat"),
                                              StageItem(str(make_tree(tmp_path / "t")), "t")])
    assert (job_dir / "sub" / "in.dat").read_text() == "input\n"
    assert snapshot(job_dir / "t") == snapshot(tmp_path / "t")
    home = tmp_path / "home"
    staging.stage_out(transport, str(job_dir), [StageItem("sub/in.dat", str(home / "r.dat")),
                                               StageItem("t", str(home / "t"))])
    assert (home / "r.dat").read_text() == "input\n"
    assert snapshot(home / "t") == snapshot(tmp_path / "t")


def test_permission_denied_is_a_clear_staging_error(make_transport: Make, tmp_path: Path,
                                                    immutable: Path) -> None:
    transport = make_transport()
    source = tmp_path / "in.dat"
    source.write_text("x")
    with pytest.raises(StagingError) as raised:
        staging.stage_in(transport, str(immutable), [StageItem(str(source), "in.dat")])
    assert str(raised.value) == (f"stage-in: {source} -> {immutable}/in.dat on "
                                 f"{transport.description}: permission denied")
    with pytest.raises(StagingError, match="permission denied"):
        staging.stage_in(transport, str(immutable), [StageItem(str(make_tree(tmp_path / "t")),
                                                              "tree")])
    assert list(immutable.iterdir()) == []  # no temporary file left behind


def test_a_missing_file_on_the_site_is_named(make_transport: Make, tmp_path: Path) -> None:
    transport = make_transport()
    with pytest.raises(StagingError) as raised:
        staging.stage_out(transport, str(tmp_path), [StageItem("out.dat", str(tmp_path / "h"))])
    assert str(raised.value) == (f"stage-out: {tmp_path}/out.dat on {transport.description}: "
                                 "no such file")


# -- rsync -----------------------------------------------------------------------------------
def test_large_trees_go_through_rsync(rsync_present: None, make_transport: Make, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rsync, "RSYNC_MIN_FILES", 2)
    transport = make_transport()
    local = make_tree(tmp_path / "local")
    remote = tmp_path / "remote" / "tree"
    assert transport.put_tree(local, remote) == "rsync"
    assert snapshot(remote) == snapshot(local)
    back = tmp_path / "back"
    assert transport.get_tree(remote, back) == "rsync"
    assert snapshot(back) == snapshot(local)


def test_small_trees_stay_on_sftp(rsync_present: None, make_transport: Make,
                                  tmp_path: Path) -> None:
    transport = make_transport()
    local = make_tree(tmp_path / "local")
    assert transport.put_tree(local, tmp_path / "remote") == "sftp"
    assert transport.get_tree(tmp_path / "remote", tmp_path / "back") == "sftp"


def test_rsync_checks_the_host_key(rsync_present: None, sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = rsync.rsync_target(sshd.user, sshd.address, sshd.port, [str(sshd.client_key.path)],
                                str(empty), 10)
    assert target is not None
    source = make_tree(tmp_path / "local")
    done = rsync.run_rsync(rsync.rsync_argv(target, str(source), target.remote(str(tmp_path / "r"))))
    # ssh's refusal is 255; rsync reports it as 255 or, when its side noticed the closed
    # stream first, as 12 (protocol data stream): either way the copy never started.
    assert done.returncode in (12, 255), done
    assert b"Host key verification failed" in done.stderr
    assert not (tmp_path / "r").exists()


def test_rsync_failing_to_connect_falls_back_to_sftp(rsync_present: None, make_transport: Make,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rsync, "RSYNC_MIN_FILES", 2)
    monkeypatch.setattr(rsync, "run_rsync", lambda argv: subprocess.CompletedProcess(
        argv, 255, b"", b"ssh: connect to host: Connection refused\n"))
    transport = make_transport()
    local = make_tree(tmp_path / "local")
    assert transport.put_tree(local, tmp_path / "remote") == "sftp"
    assert snapshot(tmp_path / "remote") == snapshot(local)


def test_rsync_failing_on_a_file_is_a_clear_error(rsync_present: None, make_transport: Make,
                                                  tmp_path: Path, immutable: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rsync, "RSYNC_MIN_FILES", 2)
    transport = make_transport()
    with pytest.raises(StagingError) as raised:
        staging.stage_in(transport, str(immutable),
                         [StageItem(str(make_tree(tmp_path / "t")), "tree")])
    message = str(raised.value)
    assert message.startswith(f"stage-in: {tmp_path / 't'} -> {immutable}/tree on ")
    # rsync names the refused file, or (when its receiver died first) only exits 11/23
    assert "rsync failed (exit " in message
    assert "Operation not permitted" in message or "(exit 11)" in message or "(exit 23)" in message
    assert "\n" not in message


def test_values_rsync_would_split_keep_it_away(tmp_path: Path) -> None:
    spaced = tmp_path / "my keys" / "id"
    spaced.parent.mkdir()
    spaced.write_text("")
    assert rsync.rsync_target("me", "host", 22, [str(spaced)], "/k", 10) is None
    assert rsync.rsync_target("me", "host", 22, [], "/k'h", 10) is None
    plain = rsync.rsync_target("me", "::1", 2222, [], "/k", 10)
    assert plain is not None and plain.login == "me@[::1]"
    assert "StrictHostKeyChecking=yes" in plain.ssh_command


# -- an SSH site end to end ------------------------------------------------------------------
def test_a_job_on_an_ssh_site_stages_in_and_out(tmp_path: Path, sshd: SshServer,
                                                known_hosts: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from megarun.homehost.areas import init_area

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    env = {"HOME": str(home)}
    area = tmp_path / "area"
    init_area(area, keys=["os"])

    def ok(*args: str) -> str:
        done = megarun_process(area, *args, env=env, timeout=180)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    ok("site", "add", "remote", "--preset", "local", "--host", sshd.spec, "--workdir",
       str(tmp_path / "remote-work"), "--identity", str(sshd.client_key.path),
       "--known-hosts", str(known_hosts))
    (area / "data").mkdir()
    (area / "data" / "in.txt").write_text("from home\n")
    (area / "apps" / "rev.toml").write_text(
        'command = "rev input.txt > out.txt"\n'
        'stage_in = [{src = "data/in.txt", dest = "input.txt"}]\n'
        'stage_out = [{src = "out.txt", dest = "results/{{ tag }}.txt"}]\n')
    ok("app", "sync")
    ok("job", "create", "--app", "rev", "-p", "tag=t1", "--site", "remote")
    summary = json.loads(ok("launch", "--site", "remote", "--json"))
    assert summary["by_status"] == {"PASS": 1}, summary
    shown = json.loads(ok("job", "show", "1", "--json"))
    workdir = Path(shown["workdir"])
    assert workdir.is_relative_to(tmp_path / "remote-work")
    assert (workdir / "input.txt").read_text() == "from home\n"
    # The launcher copied the result home before it returned.
    assert (area / "results" / "t1.txt").read_text() == "emoh morf\n"

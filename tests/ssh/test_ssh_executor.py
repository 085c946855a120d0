"""SshExecutor against a real OpenSSH server on loopback (and one in a network namespace)."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from megarun.transport.base import Executor
from megarun.transport.errors import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    HostUnreachable,
)
from megarun.transport.ssh import SshExecutor, close_all, get_executor
from tests.sshd import SshServer, free_port, make_key

MakeExecutor = Callable[..., SshExecutor]


# -- the harness is real ---------------------------------------------------------------------
def test_commands_run_through_the_real_sshd(make_executor: MakeExecutor, sshd: SshServer) -> None:
    executor = make_executor()
    result = executor.run(["sh", "-c", "echo $SSH_CONNECTION"])
    client_ip, _, server_ip, server_port = result.text.split()
    assert (client_ip, server_ip, int(server_port)) == ("127.0.0.1", "127.0.0.1", sshd.port)
    assert isinstance(executor, Executor)
    assert executor.description == f"{sshd.user}@127.0.0.1:{sshd.port}"


# -- commands ------------------------------------------------------------------------------------
HOSTILE_ARGS = [
    "two words", "it's", '"double"', "$(touch {marker})", "`touch {marker}`", "; touch {marker}",
    "&& touch {marker}", "| tee {marker}", "> {marker}", "$HOME", "*", "~", "", "a\nb", "\\n",
    "--help", "-c",
]


def test_arguments_arrive_literally_and_nothing_is_executed(make_executor: MakeExecutor,
                                                            tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    args = [arg.format(marker=marker) for arg in HOSTILE_ARGS]
    result = make_executor().run(["printf", "%s\\0", *args])
    assert result.code == 0, result.stderr_text
    assert result.stdout.split(b"\0")[:-1] == [arg.encode() for arg in args]
    assert not marker.exists()


def test_program_name_with_metacharacters_is_not_a_shell_command(make_executor: MakeExecutor,
                                                                  tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = make_executor().run([f"true; touch {marker}"])
    assert result.code == 127
    assert not marker.exists()


def test_stdin_is_passed_through(make_executor: MakeExecutor) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    result = make_executor().run(["sha256sum"], stdin=data)
    assert result.text.split()[0] == hashlib.sha256(data).hexdigest()


def test_large_output_on_both_streams_does_not_deadlock(make_executor: MakeExecutor) -> None:
    script = "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2"
    result = make_executor().run(["sh", "-c", script], timeout=30)
    assert (len(result.stdout), len(result.stderr)) == (3_000_000, 3_000_000)


def test_stdin_not_read_by_the_command_does_not_hang(make_executor: MakeExecutor) -> None:
    result = make_executor().run(["true"], stdin=b"x" * 5_000_000, timeout=30)
    assert result.code == 0


def test_exit_codes_and_stderr(make_executor: MakeExecutor) -> None:
    executor = make_executor()
    result = executor.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.code, result.text, result.stderr_text) == (7, "out\n", "err\n")
    assert not result.ok
    assert executor.run(["true"]).ok
    assert executor.run(["no-such-program-megarun"]).code == 127


def test_timeout_raises_a_clear_error(make_executor: MakeExecutor) -> None:
    executor = make_executor()
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"sleep did not finish within 0.5 s"):
        executor.run(["sleep", "5"], timeout=0.5)
    assert time.monotonic() - started < 2
    assert executor.run(["echo", "still usable"]).text == "still usable\n"


def test_run_python_with_arguments_and_stdin(make_executor: MakeExecutor) -> None:
    executor = make_executor()
    script = "import sys; print(repr(sys.argv[1:]))"
    assert executor.run_python(script, ["a b", "$(x)"]).text == "['a b', '$(x)']\n"
    echo = "import sys; sys.stdout.write(sys.stdin.read().upper())"
    assert executor.run_python(echo, stdin=b"piped").text == "PIPED"


def test_concurrent_commands_share_one_connection(make_executor: MakeExecutor) -> None:
    executor = make_executor(max_channels=4)
    results: list[str] = []

    def work(index: int) -> None:
        results.append(executor.run(["sh", "-c", f"sleep 0.2; echo {index}"]).text.strip())

    threads = [threading.Thread(target=work, args=(index,)) for index in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results, key=int) == [str(index) for index in range(12)]
    assert executor.connect_attempts == 1


# -- files over SFTP -----------------------------------------------------------------------------
def test_write_atomic_read_put_get(make_executor: MakeExecutor, tmp_path: Path) -> None:
    executor = make_executor()
    remote = tmp_path / "remote" / "deep" / "dir"
    executor.makedirs(remote)
    assert remote.is_dir() and stat.S_IMODE(remote.stat().st_mode) == 0o700
    executor.makedirs(remote)  # existing: fine

    target = remote / "secret.json"
    executor.write_bytes_atomic(target, b'{"token": 1}')
    assert target.read_bytes() == b'{"token": 1}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    executor.write_bytes_atomic(target, b"replaced", mode=0o640)
    assert executor.read_bytes(target) == b"replaced"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(os.listdir(remote)) == ["secret.json"]  # no temp files left

    local = tmp_path / "agent.pyz"
    local.write_bytes(os.urandom(3_000_000))
    local.chmod(0o755)
    executor.put(local, remote / "agent.pyz")
    assert (remote / "agent.pyz").read_bytes() == local.read_bytes()
    assert stat.S_IMODE((remote / "agent.pyz").stat().st_mode) == 0o755

    back = tmp_path / "back.json"
    executor.get(target, back)
    assert back.read_bytes() == b"replaced"
    assert stat.S_IMODE(back.stat().st_mode) == 0o640


def test_exists_and_missing_files(make_executor: MakeExecutor, tmp_path: Path) -> None:
    executor = make_executor()
    (tmp_path / "here").write_text("x")
    assert executor.exists(tmp_path / "here")
    assert not executor.exists(tmp_path / "gone")
    with pytest.raises(FileNotFoundError):
        executor.read_bytes(tmp_path / "gone")
    with pytest.raises(FileNotFoundError):
        executor.get(tmp_path / "gone", tmp_path / "local-copy")
    assert not (tmp_path / "local-copy").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- host keys -------------------------------------------------------------------------------------
def test_unknown_host_key_is_refused_and_nothing_written(make_executor: MakeExecutor,
                                                         sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    executor = make_executor(known_hosts=empty, site_name="cluster1")
    with pytest.raises(HostKeyUnknown) as caught:
        executor.run(["true"])
    message = str(caught.value)
    assert f"[127.0.0.1]:{sshd.port}" in message
    assert "SHA256:" in message
    assert "megarun site check cluster1 --accept-host-key" in message
    assert caught.value.exit_code == 3
    assert not empty.exists()
    assert executor.connect_attempts == 1  # not retried


def test_accept_host_key_records_it_and_the_next_connect_works(
        make_executor: MakeExecutor, sshd: SshServer, tmp_path: Path) -> None:
    path = tmp_path / "dir" / "known_hosts"
    accepting = make_executor(known_hosts=path, accept_host_key=True)
    assert accepting.run(["true"]).ok
    assert path.read_text() == sshd.known_hosts_line
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    strict = make_executor(known_hosts=path)
    assert strict.run(["echo", "ok"]).text == "ok\n"
    assert path.read_text() == sshd.known_hosts_line  # nothing added twice


def test_accept_host_key_appends_to_an_existing_file(make_executor: MakeExecutor,
                                                     sshd: SshServer, tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    # An unreadable line (bad base64) is skipped, as ssh does; no newline at the end.
    path.write_text("other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBogusBogusBogus")
    assert make_executor(known_hosts=path, accept_host_key=True).run(["true"]).ok
    assert path.read_text().splitlines()[1] == sshd.known_hosts_line.strip()


def test_changed_host_key_is_refused_even_when_accepting(
        make_executor: MakeExecutor, sshd: SshServer, tmp_path: Path) -> None:
    other = make_key(tmp_path / "other_host_key").split()[:2]
    path = tmp_path / "known_hosts"
    path.write_text(f"{sshd.known_hosts_name} {other[0]} {other[1]}\n")
    before = path.read_text()
    for accept in (False, True):
        with pytest.raises(HostKeyMismatch, match="HAS CHANGED"):
            make_executor(known_hosts=path, accept_host_key=accept).run(["true"])
    assert path.read_text() == before


# -- authentication and reachability --------------------------------------------------------------
def test_wrong_identity_fails_fast_without_retries(make_executor: MakeExecutor,
                                                   tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_key"
    make_key(wrong)
    executor = make_executor(identity_file=wrong, attempts=5, retry_delay=1.0)
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="refused the login"):
        executor.run(["true"])
    assert executor.connect_attempts == 1
    assert time.monotonic() - started < 1.0


def test_missing_identity_file_is_an_authentication_problem(make_executor: MakeExecutor,
                                                            tmp_path: Path) -> None:
    executor = make_executor(identity_file=tmp_path / "nope")
    with pytest.raises(AuthenticationFailed, match="no identity file"):
        executor.run(["true"])


def test_closed_port_is_unreachable_after_retries(make_executor: MakeExecutor) -> None:
    port = free_port()
    executor = make_executor(f"127.0.0.1:{port}", attempts=3, retry_delay=0.1)
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match=r"after 3 attempt\(s\)") as caught:
        executor.run(["true"])
    elapsed = time.monotonic() - started
    assert executor.connect_attempts == 3
    assert 0.3 <= elapsed < 3  # backoff 0.1 + 0.2
    assert "\n" not in str(caught.value)


# -- ssh config -----------------------------------------------------------------------------------
def test_ssh_config_alias_is_honoured(make_executor: MakeExecutor, sshd: SshServer,
                                      ssh_config: Path) -> None:
    ssh_config.write_text(
        "Host testbox\n"
        "    HostName 127.0.0.1\n"
        f"    Port {sshd.port}\n"
        f"    User {sshd.user}\n"
        f"    IdentityFile {sshd.client_key.path}\n")
    executor = make_executor("testbox", identity_file=None)
    assert executor.description == f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert executor.run(["echo", "via alias"]).text == "via alias\n"


def test_explicit_options_override_ssh_config(make_executor: MakeExecutor, sshd: SshServer,
                                              ssh_config: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_key"
    make_key(wrong)
    ssh_config.write_text(f"Host testbox\n    HostName 127.0.0.1\n    Port 1\n"
                          f"    IdentityFile {wrong}\n")
    executor = make_executor(f"testbox:{sshd.port}")  # the fixture passes the right key
    assert executor.run(["true"]).ok


# -- connection reuse ------------------------------------------------------------------------------
def test_one_connection_is_reused_and_reopened_after_it_died(make_executor: MakeExecutor,
                                                             tmp_path: Path) -> None:
    executor = make_executor()
    assert executor.transport is None  # lazy
    executor.run(["true"])
    first = executor.transport
    executor.run(["true"])
    executor.write_bytes_atomic(tmp_path / "f", b"x")
    assert executor.transport is first
    assert executor.connect_attempts == 1

    assert first is not None
    first.close()
    assert executor.run(["echo", "again"]).text == "again\n"
    assert executor.transport is not first
    assert executor.read_bytes(tmp_path / "f") == b"x"  # SFTP reopened on the new transport
    assert executor.connect_attempts == 2


def test_close_then_use_reconnects(make_executor: MakeExecutor) -> None:
    executor = make_executor()
    executor.run(["true"])
    executor.close()
    assert executor.transport is None
    assert executor.run(["true"]).ok


def test_pool_keeps_one_executor_per_key(make_executor: MakeExecutor) -> None:
    made: list[SshExecutor] = []

    def factory() -> SshExecutor:
        made.append(make_executor())
        return made[-1]

    try:
        first = get_executor("test-site", factory)
        assert get_executor("test-site", factory) is first
        first.run(["true"])
    finally:
        close_all()
    assert len(made) == 1
    assert first.transport is None
    assert get_executor("test-site", factory) is not first
    close_all()


# -- a second host through a jump host -------------------------------------------------------------
def test_proxyjump_through_loopback_to_the_namespace_host(
        make_executor: MakeExecutor, sshd: SshServer, sshd_netns: SshServer,
        known_hosts: Path, ssh_config: Path) -> None:
    known_hosts.write_text(sshd.known_hosts_line + sshd_netns.known_hosts_line)
    ssh_config.write_text(
        "Host node2\n"
        f"    HostName {sshd_netns.address}\n"
        f"    ProxyJump jumpbox\n"
        "Host jumpbox\n"
        "    HostName 127.0.0.1\n"
        f"    Port {sshd.port}\n")
    executor = make_executor("node2")
    result = executor.run(["sh", "-c", "hostname; echo $SSH_CONNECTION"])
    name, connection = result.text.splitlines()
    assert name == "node2"
    assert connection.split()[2:] == [sshd_netns.address, "22"]
    jump = executor.jump_transport
    assert jump is not None and jump.is_active()
    transport = executor.transport
    assert transport is not None
    assert transport.sock.__class__.__name__ == "Channel"  # tunnelled, not a direct socket


def test_explicit_jump_spec(make_executor: MakeExecutor, sshd: SshServer,
                            sshd_netns: SshServer, known_hosts: Path, tmp_path: Path) -> None:
    known_hosts.write_text(sshd.known_hosts_line + sshd_netns.known_hosts_line)
    executor = make_executor(sshd_netns.spec, jump=sshd.spec)
    assert executor.run(["hostname"]).text == "node2\n"
    executor.write_bytes_atomic(tmp_path / "file", b"over the jump")
    assert executor.read_bytes(tmp_path / "file") == b"over the jump"


def test_unknown_key_of_the_target_behind_a_jump(make_executor: MakeExecutor, sshd: SshServer,
                                                 sshd_netns: SshServer,
                                                 known_hosts: Path) -> None:
    executor = make_executor(sshd_netns.spec, jump=sshd.spec, site_name="node2")
    with pytest.raises(HostKeyUnknown, match=sshd_netns.address):
        executor.run(["true"])
    assert known_hosts.read_text() == sshd.known_hosts_line

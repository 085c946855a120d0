"""SshTransport against a real OpenSSH server on loopback (and one in a network namespace)."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from megarun.transport.base import Transport
from megarun.transport.errors import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyMismatch,
    HostKeyUnknown,
    HostUnreachable,
)
from megarun.transport.pool import close_all, get_transport
from megarun.transport.ssh.transport import SshTransport
from tests.sshd import SshServer, free_port, make_key

MakeTransport = Callable[..., SshTransport]


# -- the harness is real ---------------------------------------------------------------------
def test_commands_run_through_the_real_sshd(make_transport: MakeTransport, sshd: SshServer) -> None:
    transport = make_transport()
    result = transport.run(["sh", "-c", "echo $SSH_CONNECTION"])
    client_ip, _, server_ip, server_port = result.text.split()
    assert (client_ip, server_ip, int(server_port)) == ("127.0.0.1", "127.0.0.1", sshd.port)
    assert isinstance(transport, Transport)
    assert transport.description == f"{sshd.user}@127.0.0.1:{sshd.port}"


# -- commands ------------------------------------------------------------------------------------
HOSTILE_ARGS = [
    "two words", "it's", '"double"', "$(touch {marker})", "`touch {marker}`", "; touch {marker}",
    "&& touch {marker}", "| tee {marker}", "> {marker}", "$HOME", "*", "~", "", "a\nb", "\\n",
    "--help", "-c",
]


def test_arguments_arrive_literally_and_nothing_is_executed(make_transport: MakeTransport,
                                                            tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    args = [arg.format(marker=marker) for arg in HOSTILE_ARGS]
    result = make_transport().run(["printf", "%s\\0", *args])
    assert result.code == 0, result.stderr_text
    assert result.stdout.split(b"\0")[:-1] == [arg.encode() for arg in args]
    assert not marker.exists()


def test_program_name_with_metacharacters_is_not_a_shell_command(make_transport: MakeTransport,
                                                                  tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = make_transport().run([f"true; touch {marker}"])
    assert result.code == 127
    assert not marker.exists()


def test_stdin_is_passed_through(make_transport: MakeTransport) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    result = make_transport().run(["sha256sum"], stdin=data)
    assert result.text.split()[0] == hashlib.sha256(data).hexdigest()


def test_large_output_on_both_streams_does_not_deadlock(make_transport: MakeTransport) -> None:
    script = "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2"
    result = make_transport().run(["sh", "-c", script], timeout=30)
    assert (len(result.stdout), len(result.stderr)) == (3_000_000, 3_000_000)


def test_stdin_not_read_by_the_command_does_not_hang(make_transport: MakeTransport) -> None:
    result = make_transport().run(["true"], stdin=b"x" * 5_000_000, timeout=30)
    assert result.code == 0


def test_exit_codes_and_stderr(make_transport: MakeTransport) -> None:
    transport = make_transport()
    result = transport.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.code, result.text, result.stderr_text) == (7, "out\n", "err\n")
    assert not result.ok
    assert transport.run(["true"]).ok
    assert transport.run(["no-such-program-megarun"]).code == 127


def test_timeout_raises_a_clear_error(make_transport: MakeTransport) -> None:
    transport = make_transport()
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"sleep did not finish within 0.5 s"):
        transport.run(["sleep", "5"], timeout=0.5)
    assert time.monotonic() - started < 2
    assert transport.run(["echo", "still usable"]).text == "still usable\n"


def test_run_python_with_arguments_and_stdin(make_transport: MakeTransport) -> None:
    transport = make_transport()
    script = "import sys; print(repr(sys.argv[1:]))"
    assert transport.run_python(script, ["a b", "$(x)"]).text == "['a b', '$(x)']\n"
    echo = "import sys; sys.stdout.write(sys.stdin.read().upper())"
    assert transport.run_python(echo, stdin=b"piped").text == "PIPED"


def test_concurrent_commands_share_one_connection(make_transport: MakeTransport) -> None:
    transport = make_transport(max_channels=4)
    results: list[str] = []

    def work(index: int) -> None:
        results.append(transport.run(["sh", "-c", f"sleep 0.2; echo {index}"]).text.strip())

    threads = [threading.Thread(target=work, args=(index,)) for index in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results, key=int) == [str(index) for index in range(12)]
    assert transport.connect_attempts == 1


# -- files over SFTP -----------------------------------------------------------------------------
def test_write_atomic_read_put_get(make_transport: MakeTransport, tmp_path: Path) -> None:
    transport = make_transport()
    remote = tmp_path / "remote" / "deep" / "dir"
    transport.makedirs(remote)
    assert remote.is_dir() and stat.S_IMODE(remote.stat().st_mode) == 0o700
    transport.makedirs(remote)  # existing: fine

    target = remote / "secret.json"
    transport.write_bytes_atomic(target, b'{"token": 1}')
    assert target.read_bytes() == b'{"token": 1}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    transport.write_bytes_atomic(target, b"replaced", mode=0o640)
    assert transport.read_bytes(target) == b"replaced"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(os.listdir(remote)) == ["secret.json"]  # no temp files left

    local = tmp_path / "agent.pyz"
    local.write_bytes(os.urandom(3_000_000))
    local.chmod(0o755)
    transport.put(local, remote / "agent.pyz")
    assert (remote / "agent.pyz").read_bytes() == local.read_bytes()
    assert stat.S_IMODE((remote / "agent.pyz").stat().st_mode) == 0o755

    back = tmp_path / "back.json"
    transport.get(target, back)
    assert back.read_bytes() == b"replaced"
    assert stat.S_IMODE(back.stat().st_mode) == 0o640


def test_exists_and_missing_files(make_transport: MakeTransport, tmp_path: Path) -> None:
    transport = make_transport()
    (tmp_path / "here").write_text("x")
    assert transport.exists(tmp_path / "here")
    assert not transport.exists(tmp_path / "gone")
    with pytest.raises(FileNotFoundError):
        transport.read_bytes(tmp_path / "gone")
    with pytest.raises(FileNotFoundError):
        transport.get(tmp_path / "gone", tmp_path / "local-copy")
    assert not (tmp_path / "local-copy").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- host keys -------------------------------------------------------------------------------------
def test_unknown_host_key_is_refused_and_nothing_written(make_transport: MakeTransport,
                                                         sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    transport = make_transport(known_hosts=empty, site_name="cluster1")
    with pytest.raises(HostKeyUnknown) as caught:
        transport.run(["true"])
    message = str(caught.value)
    assert f"[127.0.0.1]:{sshd.port}" in message
    assert "SHA256:" in message
    assert "megarun site check cluster1 --accept-host-key" in message
    assert caught.value.exit_code == 3
    assert not empty.exists()
    assert transport.connect_attempts == 1  # not retried


def test_accept_host_key_records_it_and_the_next_connect_works(
        make_transport: MakeTransport, sshd: SshServer, tmp_path: Path) -> None:
    path = tmp_path / "dir" / "known_hosts"
    accepting = make_transport(known_hosts=path, accept_host_key=True)
    assert accepting.run(["true"]).ok
    assert path.read_text() == sshd.known_hosts_line
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    strict = make_transport(known_hosts=path)
    assert strict.run(["echo", "ok"]).text == "ok\n"
    assert path.read_text() == sshd.known_hosts_line  # nothing added twice


def test_accept_host_key_appends_to_an_existing_file(make_transport: MakeTransport,
                                                     sshd: SshServer, tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    # An unreadable line (bad base64) is skipped, as ssh does; no newline at the end.
    path.write_text("other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBogusBogusBogus")
    assert make_transport(known_hosts=path, accept_host_key=True).run(["true"]).ok
    assert path.read_text().splitlines()[1] == sshd.known_hosts_line.strip()


def test_changed_host_key_is_refused_even_when_accepting(
        make_transport: MakeTransport, sshd: SshServer, tmp_path: Path) -> None:
    other = make_key(tmp_path / "other_host_key").split()[:2]
    path = tmp_path / "known_hosts"
    path.write_text(f"{sshd.known_hosts_name} {other[0]} {other[1]}\n")
    before = path.read_text()
    for accept in (False, True):
        with pytest.raises(HostKeyMismatch, match="HAS CHANGED"):
            make_transport(known_hosts=path, accept_host_key=accept).run(["true"])
    assert path.read_text() == before


# -- authentication and reachability --------------------------------------------------------------
def test_wrong_identity_fails_fast_without_retries(make_transport: MakeTransport,
                                                   tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_key"
    make_key(wrong)
    transport = make_transport(identity_file=wrong, attempts=5, retry_delay=1.0)
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="refused the login"):
        transport.run(["true"])
    assert transport.connect_attempts == 1
    assert time.monotonic() - started < 1.0


def test_missing_identity_file_is_an_authentication_problem(make_transport: MakeTransport,
                                                            tmp_path: Path) -> None:
    transport = make_transport(identity_file=tmp_path / "nope")
    with pytest.raises(AuthenticationFailed, match="no identity file"):
        transport.run(["true"])


def test_closed_port_is_unreachable_after_retries(make_transport: MakeTransport) -> None:
    port = free_port()
    transport = make_transport(f"127.0.0.1:{port}", attempts=3, retry_delay=0.1)
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match=r"after 3 attempt\(s\)") as caught:
        transport.run(["true"])
    elapsed = time.monotonic() - started
    assert transport.connect_attempts == 3
    assert 0.3 <= elapsed < 3  # backoff 0.1 + 0.2
    assert "\n" not in str(caught.value)


# -- ssh config -----------------------------------------------------------------------------------
def test_ssh_config_alias_is_honoured(make_transport: MakeTransport, sshd: SshServer,
                                      ssh_config: Path) -> None:
    ssh_config.write_text(
        "Host testbox\n"
        "    HostName 127.0.0.1\n"
        f"    Port {sshd.port}\n"
        f"    User {sshd.user}\n"
        f"    IdentityFile {sshd.client_key.path}\n")
    transport = make_transport("testbox", identity_file=None)
    assert transport.description == f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert transport.run(["echo", "via alias"]).text == "via alias\n"


def test_explicit_options_override_ssh_config(make_transport: MakeTransport, sshd: SshServer,
                                              ssh_config: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_key"
    make_key(wrong)
    ssh_config.write_text(f"Host testbox\n    HostName 127.0.0.1\n    Port 1\n"
                          f"    IdentityFile {wrong}\n")
    transport = make_transport(f"testbox:{sshd.port}")  # the fixture passes the right key
    assert transport.run(["true"]).ok


# -- connection reuse ------------------------------------------------------------------------------
def test_one_connection_is_reused_and_reopened_after_it_died(make_transport: MakeTransport,
                                                             tmp_path: Path) -> None:
    transport = make_transport()
    assert transport.ssh_transport is None  # lazy
    transport.run(["true"])
    first = transport.ssh_transport
    transport.run(["true"])
    transport.write_bytes_atomic(tmp_path / "f", b"x")
    assert transport.ssh_transport is first
    assert transport.connect_attempts == 1

    assert first is not None
    first.close()
    assert transport.run(["echo", "again"]).text == "again\n"
    assert transport.ssh_transport is not first
    assert transport.read_bytes(tmp_path / "f") == b"x"  # SFTP reopened on the new transport
    assert transport.connect_attempts == 2


def test_close_then_use_reconnects(make_transport: MakeTransport) -> None:
    transport = make_transport()
    transport.run(["true"])
    transport.close()
    assert transport.ssh_transport is None
    assert transport.run(["true"]).ok


def test_pool_keeps_one_executor_per_key(make_transport: MakeTransport) -> None:
    made: list[SshTransport] = []

    def factory() -> SshTransport:
        made.append(make_transport())
        return made[-1]

    try:
        first = get_transport("test-site", factory)
        assert get_transport("test-site", factory) is first
        first.run(["true"])
    finally:
        close_all()
    assert len(made) == 1
    assert first.ssh_transport is None
    assert get_transport("test-site", factory) is not first
    close_all()


# -- a second host through a jump host -------------------------------------------------------------
def test_proxyjump_through_loopback_to_the_namespace_host(
        make_transport: MakeTransport, sshd: SshServer, sshd_netns: SshServer,
        known_hosts: Path, ssh_config: Path) -> None:
    known_hosts.write_text(sshd.known_hosts_line + sshd_netns.known_hosts_line)
    ssh_config.write_text(
        "Host node2\n"
        f"    HostName {sshd_netns.address}\n"
        f"    ProxyJump jumpbox\n"
        "Host jumpbox\n"
        "    HostName 127.0.0.1\n"
        f"    Port {sshd.port}\n")
    transport = make_transport("node2")
    result = transport.run(["sh", "-c", "hostname; echo $SSH_CONNECTION"])
    name, connection = result.text.splitlines()
    assert name == "node2"
    assert connection.split()[2:] == [sshd_netns.address, "22"]
    jump = transport.jump_transport
    assert jump is not None and jump.is_active()
    paramiko_transport = transport.ssh_transport
    assert paramiko_transport is not None
    assert paramiko_transport.sock.__class__.__name__ == "Channel"  # tunnelled, not a direct socket


def test_explicit_jump_spec(make_transport: MakeTransport, sshd: SshServer,
                            sshd_netns: SshServer, known_hosts: Path, tmp_path: Path) -> None:
    known_hosts.write_text(sshd.known_hosts_line + sshd_netns.known_hosts_line)
    transport = make_transport(sshd_netns.spec, jump=sshd.spec)
    assert transport.run(["hostname"]).text == "node2\n"
    transport.write_bytes_atomic(tmp_path / "file", b"over the jump")
    assert transport.read_bytes(tmp_path / "file") == b"over the jump"


def test_unknown_key_of_the_target_behind_a_jump(make_transport: MakeTransport, sshd: SshServer,
                                                 sshd_netns: SshServer,
                                                 known_hosts: Path) -> None:
    transport = make_transport(sshd_netns.spec, jump=sshd.spec, site_name="node2")
    with pytest.raises(HostKeyUnknown, match=sshd_netns.address):
        transport.run(["true"])
    assert known_hosts.read_text() == sshd.known_hosts_line

"""LocalTransport, host specs, ssh config resolution and argv quoting (no sshd needed)."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from megarun.errors import ConfigError, EnvironmentProblem, UsageError
from megarun.transport.base import CommandResult, Transport, shell_join
from megarun.transport.errors import CommandTimeout, HostKeyUnknown
from megarun.transport.local import LocalTransport
from megarun.transport.pool import close_all, get_transport
from megarun.transport.ssh.hostspec import HostSpec, parse_host_spec
from megarun.transport.ssh.known_hosts import append_known_host
from megarun.transport.ssh.ssh_config import load_ssh_config, resolve_endpoint
from megarun.transport.ssh.transport import SshTransport


# -- CommandResult and quoting ------------------------------------------------------------------
def test_command_result_text_helpers() -> None:
    result = CommandResult(0, "héllo\n".encode(), b"\xffbad")
    assert result.ok and result.text == "héllo\n" == result.stdout_text
    assert result.stderr_text == "\ufffdbad"
    with pytest.raises(AttributeError):
        result.code = 1  # type: ignore[misc]


@pytest.mark.parametrize("arg", ["a b", "it's", "$(id)", "`id`", "; rm -rf /", "", "*", "a\nb"])
def test_shell_join_gives_back_exactly_the_argv(arg: str) -> None:
    line = shell_join(["echo", arg])
    assert shlex.split(line) == ["echo", arg]
    done = subprocess.run(["sh", "-c", f"printf %s {shell_join([arg])}"], capture_output=True,
                          text=True, check=True)
    assert done.stdout == arg


@pytest.mark.parametrize("argv", ["echo hi", b"echo", [], ["echo", 3], ["a\0b"]])
def test_argv_must_be_a_nonempty_list_of_strings(argv: object) -> None:
    with pytest.raises(UsageError):
        shell_join(argv)  # type: ignore[arg-type]


# -- LocalTransport ----------------------------------------------------------------------------
@pytest.fixture
def local() -> LocalTransport:
    return LocalTransport()


def test_local_is_an_executor(local: LocalTransport) -> None:
    assert isinstance(local, Transport)
    assert local.description == "local"


def test_local_run_codes_streams_and_literal_args(local: LocalTransport, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = local.run(["sh", "-c", 'echo "$1"; echo err >&2; exit 4', "sh", f"$(touch {marker})"])
    assert (result.code, result.text, result.stderr_text) == (4, f"$(touch {marker})\n", "err\n")
    assert not marker.exists()


def test_local_stdin_and_no_stdin(local: LocalTransport) -> None:
    assert local.run(["cat"], stdin=b"piped").stdout == b"piped"
    assert local.run(["cat"]).stdout == b""  # stdin is empty, never the terminal


def test_local_missing_program_is_127(local: LocalTransport, tmp_path: Path) -> None:
    assert local.run(["no-such-program-megarun"]).code == 127
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    assert local.run([str(script)]).code == 126


def test_local_timeout(local: LocalTransport) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"sleep did not finish within 0\.3 s") as caught:
        local.run(["sleep", "5"], timeout=0.3)
    assert time.monotonic() - started < 2
    assert isinstance(caught.value, EnvironmentProblem)


def test_local_run_python(local: LocalTransport) -> None:
    script = "import sys; print(sys.argv[1:])"
    assert local.run_python(script, ["a b"], python=sys.executable).text == "['a b']\n"
    echo = "import sys; print(sys.stdin.read())"
    assert local.run_python(echo, python=sys.executable, stdin=b"in").text == "in\n"


def test_local_files(local: LocalTransport, tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    local.makedirs(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    local.write_bytes_atomic(target / "f", b"one")
    local.write_bytes_atomic(target / "f", b"two", mode=0o640)
    assert local.read_bytes(target / "f") == b"two"
    assert stat.S_IMODE((target / "f").stat().st_mode) == 0o640
    assert os.listdir(target) == ["f"]
    source = tmp_path / "tool"
    source.write_bytes(b"#!/bin/sh\n")
    source.chmod(0o750)
    local.put(source, target / "tool")
    local.get(target / "tool", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE((tmp_path / "copy").stat().st_mode) == 0o750
    assert local.exists(target / "tool") and not local.exists(target / "nope")
    with pytest.raises(FileNotFoundError):
        local.read_bytes(target / "nope")


# -- host specs -------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("host", HostSpec("host")),
    ("alice@host", HostSpec("host", "alice")),
    ("alice@host.example.org:2222", HostSpec("host.example.org", "alice", 2222)),
    ("ssh://bob@10.0.0.1:22", HostSpec("10.0.0.1", "bob", 22)),
    ("[::1]:2200", HostSpec("::1", None, 2200)),
    ("u@[fe80::1]", HostSpec("fe80::1", "u")),
    ("my_alias", HostSpec("my_alias")),
])
def test_parse_host_spec(text: str, expected: HostSpec) -> None:
    assert parse_host_spec(text) == expected
    assert parse_host_spec(str(expected)) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    ("@host", "user before '@' is empty"),
    ("alice@", "host is empty"),
    (":22", "host is empty"),
    ("host:", "port after ':' is empty"),
    ("host:0", "not a number from 1 to 65535"),
    ("host:70000", "not a number from 1 to 65535"),
    ("host:22x", "not a number"),
    ("host:-1", "not a number"),
    ("host;rm -rf /", "shell metacharacters"),
    ("$(id)@host", "shell metacharacters"),
    ("host`id`", "shell metacharacters"),
    ("a b", "shell metacharacters"),
    ("-oProxyCommand=x", "shell metacharacters"),
    ("-host", "must not start with '-'"),
    ("[nothex]:22", "IPv6"),
    ("[::1]x", "unexpected"),
    ("h\u00e9st", "may only contain"),
])
def test_parse_host_spec_rejects(text: str, reason: str) -> None:
    with pytest.raises(UsageError, match=reason) as caught:
        parse_host_spec(text)
    assert "[user@]host[:port]" in str(caught.value)


@pytest.mark.parametrize("module", ["megarun.transport.ssh.hostspec", "megarun.sites.registry",
                                    "megarun.sites.remote_spool", "megarun.transport.pool"])
def test_host_specs_and_sites_load_without_paramiko(module: str) -> None:
    # Checking a host spec or listing sites must not pay for the SSH stack.
    script = f"import sys, {module}; print('paramiko' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "False"


# -- ssh config resolution (no connection is made) -----------------------------------------------
def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config"
    path.write_text(text)
    return path


def test_resolution_from_ssh_config(tmp_path: Path) -> None:
    config = load_ssh_config(write_config(tmp_path, (
        "Host cluster\n  HostName login.example.org\n  User carol\n  Port 2022\n"
        "  IdentityFile ~/.ssh/id_cluster\n  ProxyJump gate\n")))
    endpoint = resolve_endpoint(parse_host_spec("cluster"), config)
    assert (endpoint.hostname, endpoint.user, endpoint.port) == ("login.example.org", "carol", 2022)
    assert endpoint.identity_files == (os.path.expanduser("~/.ssh/id_cluster"),)
    assert endpoint.proxy_jump == "gate"
    assert endpoint.known_hosts_name == "[login.example.org]:2022"

    explicit = resolve_endpoint(parse_host_spec("dave@cluster:22"), config, "/keys/k")
    assert (explicit.user, explicit.port, explicit.identity_files) == ("dave", 22, ("/keys/k",))
    assert explicit.known_hosts_name == "login.example.org"


def test_executor_is_lazy_and_takes_jump_from_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, "Host inner\n  ProxyJump gate:2200\n")
    transport = SshTransport("inner", ssh_config=config, known_hosts=tmp_path / "kh")
    assert transport.ssh_transport is None
    assert transport.jump_endpoint is not None
    assert (transport.jump_endpoint.hostname, transport.jump_endpoint.port) == ("gate", 2200)
    overridden = SshTransport("inner", ssh_config=config, jump="other", known_hosts=tmp_path)
    assert overridden.jump_endpoint is not None
    assert overridden.jump_endpoint.hostname == "other"
    transport.close()  # nothing opened: nothing to do


def test_only_one_jump_hop(tmp_path: Path) -> None:
    config = write_config(tmp_path, "Host inner\n  ProxyJump a,b\n")
    with pytest.raises(ConfigError, match="one"):
        SshTransport("inner", ssh_config=config)


def test_known_hosts_from_config_and_bad_port(tmp_path: Path) -> None:
    config = write_config(tmp_path, "Host x\n  UserKnownHostsFile /etc/kh /etc/kh2\nHost y\n"
                                    "  Port nine\n")
    assert SshTransport("x", ssh_config=config).known_hosts == Path("/etc/kh")
    with pytest.raises(ConfigError, match="Port"):
        SshTransport("y", ssh_config=config)


def test_append_known_host_creates_private_file(tmp_path: Path) -> None:
    key = paramiko.RSAKey.generate(1024)
    path = tmp_path / "ssh" / "known_hosts"
    append_known_host(path, "[h]:2222", key)
    append_known_host(path, "h", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines == [f"[h]:2222 ssh-rsa {key.get_base64()}", f"h ssh-rsa {key.get_base64()}"]
    assert paramiko.HostKeys(str(path)).lookup("[h]:2222") is not None


def test_host_key_unknown_message_says_how_to_accept() -> None:
    error = HostKeyUnknown("[h]:22", "ssh-ed25519", "SHA256:abc", "/kh", site_name="big")
    assert error.exit_code == 3
    assert "megarun site check big --accept-host-key" in str(error)
    assert "SHA256:abc" in str(error) and "[h]:22" in str(error)


def test_pool_returns_one_executor_per_key() -> None:
    made: list[LocalTransport] = []

    def factory() -> LocalTransport:
        made.append(LocalTransport())
        return made[-1]

    try:
        assert get_transport("a", factory) is get_transport("a", factory)
        assert get_transport("b", factory) is not get_transport("a", factory)
    finally:
        close_all()
    assert len(made) == 2

"""A real, private OpenSSH server for tests, and a second host in a network namespace.

Follows shared/INFRA.md: own sshd_config, own ed25519 host key, own client key pair,
authorized_keys and a known_hosts file for the client, all in a temp dir; `StrictModes no`
(the keys live under world-writable /tmp), `UsePAM no`, internal-sftp, PidFile in the dir.

    ensure_openssh()                       # present? (tests/system_services.py installs it)
    key = ClientKey.create(tmp / "client")
    server = SshServer(tmp / "sshd", key); server.start(); ...; server.stop()

    host = NetnsHost.create()              # veth 10.200.x.1 <-> 10.200.x.2 in namespace
    node2 = SshServer(tmp / "node2", key, address=host.guest_address, port=22,
                      netns=host.name, hostname="node2")

Problems are raised as SshdUnavailable with a reason meant to be shown loudly.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
APT_TIMEOUT = 300
NETNS_PREFIX = "megarun-t"
VETH_PREFIX = "mrv"


class SshdUnavailable(Exception):
    """A real sshd (or a network namespace) cannot be had on this machine; str() says why."""


# -- installing and keys -------------------------------------------------------------------------
def ensure_openssh() -> None:
    """Make sure /usr/sbin/sshd and ssh-keygen exist (tests/system_services.py installs them)."""
    if not openssh_present():
        raise SshdUnavailable(f"{SSHD} or ssh-keygen is missing: install openssh-server "
                              "(python3 -m tests.system_services, which scripts/test runs)")


def openssh_present() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh-keygen") is not None


def apt(argv: list[str], env: dict[str, str],
         unavailable: type[Exception] = SshdUnavailable) -> None:
    """Run one apt-get step; a timeout or failure raises `unavailable` with stderr's tail.

    Steps take turns machine-wide (the test workers of one run, and other runs): two apt-get
    at once fail on dpkg's lock."""
    try:
        with open(Path(tempfile.gettempdir()) / "megarun-tests-apt.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = subprocess.run(argv, env=env, capture_output=True, text=True,
                                  timeout=APT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise unavailable(f"{' '.join(argv)} took more than {APT_TIMEOUT} s") from None
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise unavailable(f"{' '.join(argv)} failed (rc {done.returncode}): {tail}")


def make_key(path: Path, comment: str = "megarun-test") -> str:
    """Generate an ed25519 key pair at `path` (no passphrase); return the public key line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_call(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_suffix(".pub").read_text().strip()


@dataclass(frozen=True)
class ClientKey:
    """The key pair the test client logs in with."""

    path: Path
    public: str

    @classmethod
    def create(cls, directory: Path) -> ClientKey:
        path = directory / "id_ed25519"
        return cls(path, make_key(path, "megarun-test-client"))


# -- sshd ------------------------------------------------------------------------------------------
class SshServer:
    """One private sshd: on 127.0.0.1 at a free high port, or inside a network namespace."""

    def __init__(self, root: Path, client_key: ClientKey, address: str = "127.0.0.1",
                 port: int | None = None, netns: str | None = None,
                 hostname: str | None = None) -> None:
        self.root = root
        self.client_key = client_key
        self.address = address
        self.port = port if port is not None else free_port(address)
        self.netns = netns
        self.hostname = hostname
        self.user = getpass.getuser()
        self.config = root / "sshd_config"
        self.log = root / "sshd.log"
        self.pidfile = root / "sshd.pid"
        self.host_key = root / "ssh_host_ed25519_key"
        self.known_hosts = root / "known_hosts"
        self.host_public_key = ""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def known_hosts_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    @property
    def known_hosts_line(self) -> str:
        return f"{self.known_hosts_name} {self.host_public_key}\n"

    @property
    def spec(self) -> str:
        """`user@address:port`, as a site would name this host."""
        return f"{self.user}@{self.address}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):  # only root's sshd needs it
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.host_key.exists():  # a restart keeps the host key clients already know
            public = self.host_key.with_suffix(".pub").read_text().strip()
        else:
            public = make_key(self.host_key, "megarun-test-host")
        key_type, key_data = public.split()[:2]
        self.host_public_key = f"{key_type} {key_data}"
        (self.root / "authorized_keys").write_text(self.client_key.public + "\n")
        self.known_hosts.write_text(self.known_hosts_line)
        self.config.write_text(self._config_text())
        # -D: sshd stays our child (it still writes its PidFile), so we can reap it: nothing
        # reaps orphans on this machine, and a daemonized sshd would stay a zombie.
        self._process = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         start_new_session=True)
        self._wait_until_ready(timeout)

    def stop(self) -> None:
        """Kill sshd by the PID in its PidFile and wait until it is gone."""
        pid = self.pid()
        if pid is not None:
            _terminate(pid)
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            self._process.communicate(timeout=10)
            self._process = None
        self.pidfile.unlink(missing_ok=True)

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _command(self) -> list[str]:
        if self.netns is None:
            return [SSHD, "-D", "-f", str(self.config), "-E", str(self.log)]
        script = f'hostname {self.hostname or "node2"}; exec {SSHD} -D -f "$0" -E "$1"'
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", script,
                str(self.config), str(self.log)]

    def _config_text(self) -> str:
        return "\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.address}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pidfile}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "AllowTcpForwarding yes",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "",
        ])

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self._process is not None
        while time.monotonic() < deadline and self._process.poll() is None:
            if self.pid() is not None and _banner(self.address, self.port).startswith("SSH-2.0"):
                return
            time.sleep(0.05)
        code = self._process.poll()
        self.stop()
        what = f"exited with rc {code}" if code is not None else f"did not answer in {timeout:g} s"
        raise SshdUnavailable(f"sshd on {self.address}:{self.port} {what} {self._log_tail()}")

    def _log_tail(self) -> str:
        if not self.log.exists():
            return ""
        return "| log: " + " | ".join(self.log.read_text().strip().splitlines()[-5:])


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def _banner(address: str, port: int) -> str:
    try:
        with socket.create_connection((address, port), timeout=1.0) as conn:
            return conn.recv(64).decode("ascii", errors="replace")
    except OSError:
        return ""


def _terminate(pid: int, grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _is_zombie(pid):
        return False
    # A zombie child of ours still answers signal 0: reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _check_call(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise SshdUnavailable(f"{' '.join(argv)} failed (rc {done.returncode}): "
                              f"{done.stderr.strip()}")


# -- a second host: network namespace --------------------------------------------------------------
@dataclass(frozen=True)
class NetnsHost:
    """A network namespace joined to this one by a veth pair in 10.200.<subnet>.0/30."""

    name: str
    veth_host: str
    veth_guest: str
    subnet: int

    @property
    def host_address(self) -> str:
        return f"10.200.{self.subnet}.1"

    @property
    def guest_address(self) -> str:
        return f"10.200.{self.subnet}.2"

    @classmethod
    def create(cls) -> NetnsHost:
        """Make the namespace (names carry our pid); SshdUnavailable if it cannot be done."""
        if shutil.which("ip") is None or shutil.which("unshare") is None:
            raise SshdUnavailable("no `ip` or `unshare` command (iproute2, util-linux)")
        if os.geteuid() != 0:
            raise SshdUnavailable("network namespaces need root")
        remove_leftover_namespaces()
        pid = os.getpid()
        host = cls(f"{NETNS_PREFIX}{pid}", f"{VETH_PREFIX}{pid}h", f"{VETH_PREFIX}{pid}n",
                   _free_subnet(pid))
        try:
            host._build()
        except SshdUnavailable:
            host.destroy()
            raise
        return host

    def _build(self) -> None:
        guest = ["ip", "netns", "exec", self.name]
        for argv in (
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_guest],
            ["ip", "link", "set", self.veth_guest, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_address}/30", "dev", self.veth_host],
            ["ip", "link", "set", self.veth_host, "up"],
            [*guest, "ip", "addr", "add", f"{self.guest_address}/30", "dev", self.veth_guest],
            [*guest, "ip", "link", "set", self.veth_guest, "up"],
            [*guest, "ip", "link", "set", "lo", "up"],
        ):
            _check_call(argv)

    def destroy(self) -> None:
        """Kill what still runs in the namespace, then remove the veth pair and the namespace."""
        _destroy_namespace(self.name, self.veth_host)


def remove_leftover_namespaces() -> None:
    """Remove namespaces and veths of earlier test runs whose process is gone."""
    listed = _output(["ip", "netns", "list"])
    for match in re.finditer(rf"^{NETNS_PREFIX}(\d+)\b", listed, re.MULTILINE):
        if not _alive(int(match.group(1))):
            _destroy_namespace(match.group(0), f"{VETH_PREFIX}{match.group(1)}h")
    links = _output(["ip", "-o", "link", "show"])
    for match in re.finditer(rf"\b{VETH_PREFIX}(\d+)h\b", links):
        if not _alive(int(match.group(1))):
            _quiet(["ip", "link", "del", match.group(0)])


def _destroy_namespace(name: str, veth_host: str) -> None:
    for pid in _output(["ip", "netns", "pids", name]).split():
        _terminate(int(pid), grace=2.0)
    _quiet(["ip", "link", "del", veth_host])
    _quiet(["ip", "netns", "del", name])


def _free_subnet(pid: int) -> int:
    used = set(re.findall(r"10\.200\.(\d+)\.", _output(["ip", "-o", "-4", "addr", "show"])))
    for offset in range(250):
        subnet = (pid + offset) % 250 + 1
        if str(subnet) not in used:
            return subnet
    raise SshdUnavailable("no free 10.200.x.0/30 subnet for the test namespace")


def _output(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return done.stdout if done.returncode == 0 else ""


def _quiet(argv: list[str]) -> None:
    subprocess.run(argv, capture_output=True, timeout=30, check=False)

"""Session-wide real sshd fixtures (see tests/sshd.py) and per-test transport helpers.

    browser       a headless Chromium driven over the DevTools protocol (tests/browser.py)
    sshd          a private sshd on 127.0.0.1 at a free high port (session scope)
    sshd_netns    a second sshd, host name "node2", in a network namespace (session scope)
    sshd_gateway  an sshd on this host's end of the namespace's veth pair (node2 reaches us)
    known_hosts   a per-test copy of known_hosts holding the loopback sshd's key
    ssh_config    a per-test, empty ~/.ssh/config stand-in (the real one is never read)
    make_transport SshTransport factory with the test's key, known_hosts and config; closed after
    slurm         a real single-node Slurm (see tests/slurmd.py) shared by the session; its
                  commands work locally and through `sshd` (config at /etc/slurm/slurm.conf)

If sshd, the namespace or Slurm cannot be had, the dependent tests are skipped with a loud reason,
also printed to stderr.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from megarun.transport.ssh.transport import SshTransport
from tests.browser import Browser, BrowserUnavailable
from tests.slurmd import SlurmCluster, SlurmUnavailable, start_slurm
from tests.sshd import ClientKey, NetnsHost, SshdUnavailable, SshServer, ensure_openssh


def skip_loudly(config: pytest.Config, reason: str) -> NoReturn:
    """Skip with the reason shown in the summary and, past pytest's capture, on the terminal."""
    message = f"!!! {reason} !!!"
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{message}", file=sys.stderr, flush=True)
    pytest.skip(message)


@pytest.fixture(scope="session")
def sshd(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    root = tmp_path_factory.mktemp("sshd")
    try:
        ensure_openssh()
        server = SshServer(root / "server", ClientKey.create(root / "client"))
        server.start()
    except SshdUnavailable as exc:
        skip_loudly(request.config, f"SSH TESTS NOT RUN: no real sshd: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sshd_netns(request: pytest.FixtureRequest, sshd: SshServer,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    try:
        host = NetnsHost.create()
    except SshdUnavailable as exc:
        skip_loudly(request.config, f"SECOND-HOST SSH TESTS NOT RUN: no network namespace: {exc}")
    server = SshServer(tmp_path_factory.mktemp("sshd-node2"), sshd.client_key,
                       address=host.guest_address, port=22, netns=host.name, hostname="node2")
    try:
        server.start()
    except SshdUnavailable as exc:
        host.destroy()
        skip_loudly(request.config, f"SECOND-HOST SSH TESTS NOT RUN: sshd in the namespace failed: {exc}")
    yield server
    server.stop()
    host.destroy()


@pytest.fixture(scope="session")
def sshd_gateway(request: pytest.FixtureRequest, sshd: SshServer, sshd_netns: SshServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An sshd on this host's end of the namespace's veth pair: how "node2" reaches us."""
    address = sshd_netns.address.rsplit(".", 1)[0] + ".1"
    server = SshServer(tmp_path_factory.mktemp("sshd-gateway"), sshd.client_key, address=address)
    try:
        server.start()
    except SshdUnavailable as exc:
        skip_loudly(request.config, f"SECOND-HOST SSH TESTS NOT RUN: sshd on {address}: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slurm(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    """Installs (apt-get, as root) and starts Slurm, or reuses the running one; released after."""
    try:
        cluster = start_slurm()
    except SlurmUnavailable as exc:
        skip_loudly(request.config, f"SLURM TESTS NOT RUN: no real Slurm: {exc}")
    yield cluster
    cluster.release()


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Browser]:
    """A real headless Chromium (Debian's package, installed by tests/system_services.py)."""
    try:
        with Browser.start(tmp_path / "chromium-profile") as started:
            yield started
    except BrowserUnavailable as exc:
        skip_loudly(request.config, f"BROWSER TESTS NOT RUN: {exc}")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME: the CLI reads no ~/.ssh of the machine's."""
    folder = tmp_path / "home"
    (folder / ".ssh").mkdir(parents=True, mode=0o700)
    return folder


@pytest.fixture
def known_hosts(sshd: SshServer, tmp_path: Path) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(sshd.known_hosts_line)
    return path


@pytest.fixture
def ssh_config(tmp_path: Path) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text("")
    return path


@pytest.fixture
def make_transport(sshd: SshServer, known_hosts: Path,
                  ssh_config: Path) -> Iterator[Callable[..., SshTransport]]:
    made: list[SshTransport] = []

    def make(host: str | None = None, **options: Any) -> SshTransport:
        options.setdefault("identity_file", sshd.client_key.path)
        options.setdefault("known_hosts", known_hosts)
        options.setdefault("ssh_config", ssh_config)
        options.setdefault("allow_agent", False)
        transport = SshTransport(host or sshd.spec, **options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()

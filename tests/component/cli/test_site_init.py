"""`megarun site init`: the real rich prompts answered through a pseudo-terminal, the same setup
from options alone, and failures that keep nothing."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, megarun_process
from tests.sshd import ClientKey, SshdUnavailable, SshServer, ensure_openssh

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
PBS_VERSION = "pbs_version = 2022.1.3"


class Terminal:
    """`python -m megarun ...` on a pseudo-terminal: wait for text, type answers."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                        start_new_session=True, close_fds=True)
        os.close(slave)
        self.seen = ""  # everything shown so far, ANSI codes removed
        self.position = 0  # what expect() has consumed

    def expect(self, text: str, timeout: float = 30) -> str:
        """Wait until `text` shows after the last match; return what came before it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[self.position:]:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{text!r} never shown; the terminal showed:\n{self.seen}")
        start = self.seen.index(text, self.position)
        before = self.seen[self.position:start]
        self.position = start + len(text)
        return before

    def answer(self, text: str) -> None:
        os.write(self.master, text.encode() + b"\r")

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        while self._read(0.1):
            pass
        return self.process.wait(timeout=1)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.seen += ANSI.sub("", data.decode("utf-8", "replace")).replace("\r", "")
        return bool(data)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A `qstat` answering the version probe as PBS Pro does (PBS cannot run here)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    qstat = folder / "qstat"
    qstat.write_text(f"#!/bin/sh\n[ \"$1\" = --version ] && echo '{PBS_VERSION}' && exit 0\n"
                     "echo 'qstat: not this fake' >&2\nexit 2\n")
    qstat.chmod(0o755)
    return folder


def environment(fake_bin: Path | None = None) -> dict[str, str]:
    path = os.environ.get("PATH", "")
    return {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200",
            "TERM": "xterm", "PATH": f"{fake_bin}:{path}" if fake_bin else path}


@pytest.fixture
def terminal(area: Path) -> Iterator[Any]:
    opened: list[Terminal] = []

    def start(*args: str, fake_bin: Path | None = None, home: Path | None = None) -> Terminal:
        argv = [sys.executable, "-m", "megarun", "--area", str(area), "site", "init", *args]
        env = environment(fake_bin)
        if home is not None:
            env["HOME"] = str(home)
        opened.append(Terminal(argv, env))
        return opened[-1]

    yield start
    for term in opened:
        term.close()


def site_json(area: Path, name: str) -> dict[str, Any]:
    done = megarun_process(area, "site", "show", name, "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def site_names(area: Path) -> list[str]:
    done = megarun_process(area, "site", "ls", "--json")
    assert done.returncode == 0, done.stderr
    return [row["name"] for row in json.loads(done.stdout)]


def test_wizard_sets_up_a_local_site_through_the_prompts(area: Path, terminal: Any,
                                                         tmp_path: Path) -> None:
    term = terminal()
    listing = term.expect("Preset (number or name)")
    assert re.search(r"1\s+local\s+local\s+This machine", listing)
    assert "perlmutter-gpu" in listing and "NERSC Perlmutter GPU" in listing
    term.answer("1")
    term.expect("Site name")
    term.answer("bad name!")
    assert "invalid site name 'bad name!'" in term.expect("Site name")  # asked again
    term.answer("box")
    term.expect("Host")
    term.answer("")  # the default: this machine
    term.expect("Work dir on the site")
    term.answer(str(tmp_path / "box-work"))
    term.expect("site 'box' saved")
    assert term.wait() == 0
    site = site_json(area, "box")
    assert site["preset"] == "local" and site["host"] == "local"
    assert site["workdir"] == str(tmp_path / "box-work")
    assert (tmp_path / "box-work").is_dir()


def test_wizard_goes_back_and_suggests_a_misspelt_preset(area: Path, terminal: Any,
                                                          fake_bin: Path, tmp_path: Path) -> None:
    term = terminal(fake_bin=fake_bin)
    assert "Type 'back' at any question" in term.expect("Preset (number or name)")
    term.answer("back")
    assert "this is the first question" in term.expect("Preset (number or name)")
    term.answer("polaria")
    assert "unknown preset 'polaria' (did you mean 'polaris'?)" in term.expect("Preset")
    term.answer("polaris")
    term.expect("Site name (letters, digits, '_', '.', '-')")
    term.answer("back")  # to the preset: the answer changes what the next questions offer
    term.expect("Preset (number or name)")
    term.answer("local")
    term.expect("Site name")
    assert term.expect("):").endswith("(local")  # the local preset's name is the default now
    term.answer("box")
    term.expect("Host: [user@]host[:port], or 'local' for this machine")
    term.answer("")
    term.expect("Work dir on the site")
    term.answer("BACK")
    term.expect("Host: [user@]host[:port]")
    term.answer("local")
    term.expect("Work dir on the site")
    term.answer(str(tmp_path / "box-work"))
    term.expect("site 'box' saved")
    assert term.wait() == 0
    assert site_json(area, "box")["preset"] == "local"


def test_wizard_offers_the_presets_queues_and_insists_on_an_account(
        area: Path, terminal: Any, fake_bin: Path, tmp_path: Path) -> None:
    term = terminal(fake_bin=fake_bin)
    term.expect("Preset (number or name)")
    term.answer("polaris")
    term.expect("Site name")
    term.answer("")  # default: the preset's name
    term.expect("Host")
    assert "polaris.alcf.anl.gov" in term.expect("):")  # the preset's login host is offered
    term.answer("local")
    term.expect("Account")
    term.answer("")
    assert "needs an account" in term.expect("Account")
    term.answer("proj1")
    queues = term.expect("Queue (number or name)")
    assert re.search(r"2\s+debug-scaling\s+up to 10 nodes, 1 h", queues)
    assert re.search(r"prod\s+10-496 nodes, 24 h", queues)
    term.answer("9")
    assert "not between 1 and 5" in term.expect("Queue (number or name)")
    term.answer("2")
    term.expect("Work dir on the site")
    suggestion = term.expect("):")
    assert "/eagle/proj1/megarun/polaris" in suggestion
    term.answer(str(tmp_path / "polaris-work"))
    progress = term.expect("site 'polaris' saved")
    assert PBS_VERSION in progress
    assert term.wait() == 0
    settings = site_json(area, "polaris")["settings"]
    assert settings["account"] == "proj1"
    assert settings["default_queue"] == "debug-scaling"
    assert settings["pbs"] == {"filesystems": "home:eagle", "place": "scatter"}


def test_options_answer_everything_and_nothing_is_asked(area: Path, fake_bin: Path,
                                                        tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    done = megarun_process(area, "site", "init", "--preset", "aurora", "--name", "a1",
                           "--host", "local", "--account", "0042", "--queue", "debug-scaling",
                           "--workdir", str(workdir), "--json", env=environment(fake_bin))
    assert done.returncode == 0, done.stderr
    assert "?" not in done.stderr and "Preset" not in done.stderr
    result = json.loads(done.stdout)
    assert result["scheduler"] == "pbs" and result["queue"] == "debug-scaling"
    assert result["account"] == "0042"  # an account of digits stays a string
    assert result["scheduler_version"] == PBS_VERSION
    assert result["workdir"] == str(workdir)
    assert site_json(area, "a1")["settings"]["node"] == {"cpus": 102, "gpus": 6, "max_jobs": 0}


def test_no_input_takes_the_presets_defaults(area: Path, fake_bin: Path) -> None:
    done = megarun_process(area, "site", "init", "--preset", "generic-pbs", "--host", "",
                           "--no-input", env={**environment(fake_bin), "HOME": str(area)})
    assert done.returncode == 0, done.stderr
    assert "site 'generic-pbs' saved" in done.stdout
    site = site_json(area, "generic-pbs")
    assert site["workdir"] == f"{area}/megarun/generic-pbs"  # $HOME/megarun/NAME, expanded


@pytest.mark.parametrize(("args", "message"), [
    (["--preset", "nope"], "unknown preset 'nope'; valid presets: local"),
    (["--preset", "polaris", "--host", "local"], "the polaris preset needs an account"),
    (["--preset", "polaris", "--host", "local", "--account", "p", "--queue", "gpu"],
     "has no queue 'gpu'; valid queues: debug, debug-scaling, prod, capacity, preemptable"),
    (["--preset", "local", "--name", "a b"], "invalid site name 'a b'"),
    (["--preset", "local", "--host", "local", "--user", "me"], "a user needs a host"),
    (["--preset", "local", "--host", "-oProxyCommand=x"], "invalid host '-oProxyCommand=x'"),
    (["--preset", "generic-slurm", "--host", "local", "--account", "a;b"],
     "account 'a;b' may only hold"),
])
def test_bad_options_are_usage_errors(area: Path, args: list[str], message: str) -> None:
    done = megarun_process(area, "site", "init", "--no-input", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert site_names(area) == []


def test_a_scheduler_that_does_not_answer_keeps_nothing(area: Path, tmp_path: Path) -> None:
    empty_bin = tmp_path / "nothing"
    empty_bin.mkdir()
    env = {**environment(), "PATH": f"{empty_bin}:/usr/bin:/bin"}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":")
                           if not (Path(p) / "bjobs").exists())
    workdir = tmp_path / "lsf-work"
    done = megarun_process(area, "site", "init", "--preset", "generic-lsf", "--name", "lsf",
                           "--host", "local", "--workdir", str(workdir), "--no-input", env=env)
    assert done.returncode == 3, done.stderr
    assert "the lsf scheduler does not answer on this machine: bjobs: not found" in done.stderr
    assert site_names(area) == []
    assert not workdir.exists()


def test_an_unreachable_host_keeps_nothing(area: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    done = megarun_process(area, "site", "init", "--preset", "generic-slurm", "--name", "far",
                           "--host", "nobody@127.0.0.1:1", "--workdir", "/tmp/far",
                           "--no-input", env={**environment(), "HOME": str(home)})
    assert done.returncode == 3, done.stderr
    assert "cannot connect to nobody@127.0.0.1:1" in done.stderr
    assert site_names(area) == []


def test_an_existing_site_name_is_refused_before_anything_runs(area: Path) -> None:
    first = megarun_process(area, "site", "init", "--preset", "local", "--name", "here",
                            "--no-input")
    assert first.returncode == 0, first.stderr
    again = megarun_process(area, "site", "init", "--preset", "local", "--name", "here",
                            "--no-input")
    assert again.returncode == 2
    assert "site 'here' already exists" in again.stderr
    assert "connecting" not in again.stderr


# -- an SSH site: a real sshd on this machine ------------------------------------------------------
@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    root = tmp_path_factory.mktemp("sshd")
    try:
        ensure_openssh()
        server = SshServer(root / "server", ClientKey.create(root / "client"))
        server.start()
    except SshdUnavailable as exc:
        pytest.skip(f"!!! SSH SITE INIT TESTS NOT RUN: no real sshd: {exc} !!!")
    yield server
    server.stop()


def test_ssh_site_host_key_is_trusted_only_when_confirmed(area: Path, terminal: Any,
                                                          sshd: SshServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    workdir = tmp_path / "remote-work"
    options = ["--preset", "local", "--name", "remote", "--host", sshd.spec, "--workdir",
               str(workdir), "--identity", str(sshd.client_key.path)]
    refused = megarun_process(area, "site", "init", *options, "--no-input",
                              env={**environment(), "HOME": str(home)})
    assert refused.returncode == 3
    assert "is not known" in refused.stderr and "--accept-host-key" in refused.stderr
    assert site_names(area) == [] and not (home / ".ssh" / "known_hosts").exists()

    term = terminal(*options, home=home)
    shown = term.expect("Trust it and add it to")
    assert "The host key of" in shown and "ssh-ed25519" in shown
    term.answer("y")
    progress = term.expect("site 'remote' saved")
    assert "agent installed: megarun-agent-" in progress
    assert term.wait() == 0
    assert sshd.host_public_key.split()[1] in (home / ".ssh" / "known_hosts").read_text()
    assert list((workdir / "agent").glob("megarun-agent-*.pyz"))
    assert site_json(area, "remote")["host"] == sshd.spec


def test_ssh_site_work_dir_is_expanded_there(area: Path, sshd: SshServer,
                                             tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line)
    env = {**environment(), "HOME": str(home), "MEGARUN_TEST_ONLY_HERE": "/here"}
    common = ["--preset", "local", "--host", sshd.spec, "--identity",
              str(sshd.client_key.path), "--no-input", "--json"]
    unset = megarun_process(area, "site", "init", "--name", "v1", "--workdir",
                            "$MEGARUN_TEST_ONLY_HERE/w", *common, env=env)
    assert unset.returncode == 2, unset.stderr
    assert f"a variable in it is not set on {sshd.spec}" in unset.stderr
    good = megarun_process(area, "site", "init", "--name", "v2", "--workdir",
                           f"{tmp_path}/$USER-w", *common, env=env)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["workdir"] == f"{tmp_path}/{sshd.user}-w"

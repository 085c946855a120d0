"""A real single-node Slurm (munged, slurmctld, slurmd on this host) for tests.

Follows shared/INFRA.md: Debian's Slurm packages (installed by tests/system_services.py, the
test command's one install step), the config at /etc/slurm/slurm.conf (SSH commands read it too),
`batch_sched_delay=0` so a job starts 0.3-0.6 s after sbatch, no accounting (no `sacct`).

Use it through the session fixture `slurm` of tests/system/conftest.py:

    def test_x(slurm: SlurmCluster, make_transport, tmp_path):
        job = slurm.sbatch(script, cwd=tmp_path)              # local sbatch --parsable -D cwd
        job = slurm.sbatch(script, "-n", "2", cwd=tmp_path,    # or the same over the real sshd
                           via=make_transport())
        info = slurm.wait_finished(job)                        # scontrol show job, polled
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0"
        slurm.wait_gone(job)                                   # or: until plain squeue drops it

    slurm.hostname    the node (and controller) name, `hostname -s`: SLURM_JOB_NODELIST is this
    slurm.partition   "debug", the default partition (sbatch needs no -p)
    slurm.cpus        CPUs of the node (CR_Core: a job asking for more pends forever with
                      Reason=PartitionConfig; 1-cpu jobs beyond `cpus` queue, they do not share)

The fixture lives in tests/ssh/conftest.py: tests that use it belong under tests/ssh (they can
also use `sshd`, `make_transport`). Without the fixture: `start_slurm()` ... `release_slurm()`.

Timing measured on a 2-CPU machine: from nothing (apt-get update + install + start) about 6 s;
installed but stopped about 1 s; already running 0.01 s. slurmctld schedules on a 1 s tick: a
job runs 0.5-1 s after sbatch (the first after a start about 2 s); 20 one-cpu jobs submitted at
once all finish after about 9 s, two at a time (CR_Core, CPUs = real count).

Raw commands work too (`sbatch`, `squeue`, `scontrol`, `scancel`, `srun` inside a job), locally
and through the test sshd. Facts to design for (INFRA.md): `sacct` fails (no accounting);
`scontrol show job -o ID` keeps a finished job for MinJobAge=300 s, then says "Invalid job id
specified"; `squeue -t all` shows finished jobs for as long, plain `squeue` drops them at once;
time limits round up to whole minutes; always give sbatch `-D`/`-o` (output lands in the cwd).
Job ids restart at 1 whenever the test run starts slurmctld (`-c`: no old state).

Sharing: the daemons are shared by every test session on the machine. A session registers its
pid under /run/slurm/megarun-test-users; `release()` (the fixture's teardown) unregisters it and
stops the daemons only when tests started them and no live session still uses them. A Slurm
that was running without the tests (no megarun header in slurm.conf) is used as it is, never
rewritten or stopped.

Problems are raised as SlurmUnavailable with a reason meant to be shown loudly.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from megarun.transport.base import CommandResult, Transport
from megarun.transport.local import LocalTransport
from tests.sshd import _alive, _terminate

SLURM_CONF = Path("/etc/slurm/slurm.conf")
HEADER = "# Written by megarun's tests (tests/slurmd.py): a single-node Slurm for the test suite."
PACKAGES = ["slurmd", "slurmctld", "slurm-client", "munge"]
PARTITION = "debug"

RUN_SLURM = Path("/run/slurm")
RUN_MUNGE = Path("/run/munge")
MUNGE_SOCKET = RUN_MUNGE / "munge.socket.2"
STATE_DIR = Path("/var/lib/slurm")
LOG_DIR = Path("/var/log/slurm")
USERS_DIR = RUN_SLURM / "megarun-test-users"
STARTED_MARK = RUN_SLURM / "megarun-test-started"   # lists the daemons the tests started
LOCK_FILE = Path("/tmp/megarun-test-slurm.lock")

# Job states after which a job never runs again (scontrol/squeue long names).
FINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE",
})


class SlurmUnavailable(Exception):
    """A real Slurm cannot be had on this machine; str() says why."""


@dataclass(frozen=True)
class Daemon:
    name: str
    pidfile: Path
    argv: tuple[str, ...]


MUNGED = Daemon("munged", RUN_MUNGE / "munged.pid", ("runuser", "-u", "munge", "--", "/usr/sbin/munged"))
SLURMCTLD = Daemon("slurmctld", RUN_SLURM / "slurmctld.pid", ("/usr/sbin/slurmctld", "-c"))
SLURMD = Daemon("slurmd", RUN_SLURM / "slurmd.pid", ("/usr/sbin/slurmd",))
DAEMONS = (MUNGED, SLURMCTLD, SLURMD)


# -- the cluster, as tests see it ------------------------------------------------------------------
@dataclass
class SlurmCluster:
    """A running single-node Slurm; helpers run locally or through any Transport (`via`)."""

    hostname: str
    partition: str
    cpus: int
    local: Transport = field(default_factory=LocalTransport, repr=False, compare=False)

    def sbatch(self, script: Path | str, *options: str, cwd: Path | str,
               via: Transport | None = None) -> str:
        """Submit `script` with `sbatch --parsable -D cwd [options]`; return the job id."""
        result = self._run(["sbatch", "--parsable", "-D", str(cwd), *options, str(script)], via)
        if result.code != 0:
            raise AssertionError(f"sbatch failed (rc {result.code}): {result.stderr_text.strip()}")
        return result.text.strip().split(";")[0]

    def squeue(self, job_ids: Sequence[str] = (), all_states: bool = False,
               via: Transport | None = None) -> dict[str, str]:
        """Job id -> state (PENDING, RUNNING, ...); without all_states finished jobs are absent."""
        argv = ["squeue", "-h", "-o", "%i %T"]
        if all_states:
            argv += ["-t", "all"]
        if job_ids:
            argv += ["-j", ",".join(job_ids)]
        result = self._run(argv, via)
        if result.code != 0 and "Invalid job id" not in result.stderr_text:
            raise AssertionError(f"squeue failed (rc {result.code}): {result.stderr_text.strip()}")
        return dict(line.split(None, 1) for line in result.text.splitlines() if line.strip())

    def job(self, job_id: str, via: Transport | None = None) -> dict[str, str]:
        """`scontrol show job -o ID` as a dict (JobState, ExitCode, Reason, NodeList, ...);
        empty once the job was purged (MinJobAge)."""
        result = self._run(["scontrol", "show", "job", "-o", job_id], via)
        if result.code != 0:
            return {}
        return parse_scontrol_line(result.text)

    def wait_finished(self, job_id: str, timeout: float = 60.0,
                      via: Transport | None = None) -> dict[str, str]:
        """Poll until the job reaches a final state; return its `scontrol show job` fields."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id, via)
            if info.get("JobState") in FINAL_STATES:
                return info
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not finished after {timeout:g} s: {info}")

    def wait_gone(self, job_id: str, timeout: float = 60.0, via: Transport | None = None) -> None:
        """Poll plain `squeue -j ID` until the job is no longer listed (it ended somehow)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if job_id not in self.squeue([job_id], via=via):
                return
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still in squeue after {timeout:g} s")

    def cancel(self, *job_ids: str, via: Transport | None = None) -> None:
        self._run(["scancel", *job_ids], via)

    def node_state(self) -> str:
        """The node's state word as sinfo prints it (idle, mixed, allocated, down*, ...)."""
        return _output(["sinfo", "-h", "-n", self.hostname, "-o", "%T"]).strip()

    def release(self) -> None:
        """This session is done: stop the daemons if the tests started them and nobody else
        uses them."""
        release_slurm()

    stop = release

    def _run(self, argv: list[str], via: Transport | None) -> CommandResult:
        return (via or self.local).run(argv, timeout=60)


def parse_scontrol_line(text: str) -> dict[str, str]:
    """`Key=Value Key=Value ...` of `scontrol show ... -o` (values without spaces; the rest,
    like Command= paths with spaces, are kept up to the next key)."""
    fields: dict[str, str] = {}
    key = ""
    for word in text.strip().split(" "):
        name, sep, value = word.partition("=")
        if sep and name and name.replace("/", "").replace(":", "").isalnum():
            key = name
            fields[key] = value
        elif key:
            fields[key] += " " + word
    return fields


# -- starting and stopping --------------------------------------------------------------------------
def start_slurm(timeout: float = 60.0) -> SlurmCluster:
    """Reuse the running Slurm or install, configure and start it; register this session.

    On failure nothing the call started is left running (unless another session uses it)."""
    if not _ours_or_absent():
        return _foreign_cluster()
    if os.geteuid() != 0:
        cluster = _running_cluster()
        if cluster is None:
            raise SlurmUnavailable("Slurm is not running and this is not root: run the tests "
                                   "as root (tests/slurmd.py installs and starts it)")
        return cluster
    try:
        with _locked():
            ensure_slurm_packages()
            _ensure_resolvable(short_hostname())
            _register()
            _write_config_and_start(timeout)
        cluster = _running_cluster(timeout)
        if cluster is None:
            raise SlurmUnavailable(f"the node never became idle: {_diagnosis()}")
    except SlurmUnavailable:
        release_slurm()
        raise
    return cluster


def _foreign_cluster() -> SlurmCluster:
    cluster = _running_cluster()
    if cluster is None:
        raise SlurmUnavailable(f"{SLURM_CONF} was not written by the tests (no megarun header) "
                               "and that Slurm shows no usable node: not touching it")
    return cluster


def release_slurm() -> None:
    """Unregister this session; stop the tests' daemons when no live session remains."""
    with _locked():
        (USERS_DIR / str(os.getpid())).unlink(missing_ok=True)
        if live_users() or not STARTED_MARK.exists():
            return
        started = set(STARTED_MARK.read_text().split())
        for daemon in reversed(DAEMONS):
            if daemon.name in started:
                _stop(daemon)
        STARTED_MARK.unlink(missing_ok=True)


def ensure_slurm_packages() -> None:
    """Make sure munged, slurmctld, slurmd and the client commands exist (installed beforehand by
    tests/system_services.py, not here)."""
    if not slurm_present():
        raise SlurmUnavailable("Slurm is missing: install " + " ".join(PACKAGES)
                               + " (python3 -m tests.system_services, which scripts/test runs)")


def slurm_conf_text(hostname: str, cpus: int, memory_mb: int) -> str:
    """The whole slurm.conf: one node, one default partition, fast scheduling, no accounting."""
    return "\n".join([
        HEADER,
        "ClusterName=megarun-test",
        f"SlurmctldHost={hostname}",
        "AuthType=auth/munge",
        "CryptoType=crypto/munge",
        "SlurmUser=slurm",
        "SlurmdUser=root",
        f"StateSaveLocation={STATE_DIR / 'slurmctld'}",
        f"SlurmdSpoolDir={STATE_DIR / 'slurmd'}",
        f"SlurmctldPidFile={SLURMCTLD.pidfile}",
        f"SlurmdPidFile={SLURMD.pidfile}",
        f"SlurmctldLogFile={LOG_DIR / 'slurmctld.log'}",
        f"SlurmdLogFile={LOG_DIR / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        # Schedule at once on submit; no deferral: submit -> running in well under a second.
        "SchedulerParameters=batch_sched_delay=0",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={LOG_DIR / 'jobcomp.log'}",
        "MailProg=/bin/true",
        "MinJobAge=300",          # finished jobs stay visible to scontrol/squeue -t all
        "KillWait=2",             # SIGTERM -> SIGKILL on cancel/timeout: 2 s, not 30
        "InactiveLimit=0",
        "ReturnToService=2",      # a node that was down comes back as soon as slurmd answers
        "SlurmdTimeout=30",
        "SlurmctldTimeout=30",
        f"NodeName={hostname} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={hostname} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def desired_config() -> str:
    return slurm_conf_text(short_hostname(), os.cpu_count() or 1, _memory_mb())


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(1, int(line.split()[1]) * 9 // 10 // 1024)
    return 1


def _ours_or_absent() -> bool:
    return not SLURM_CONF.exists() or SLURM_CONF.read_text().startswith(HEADER)


def _write_config_and_start(timeout: float) -> None:
    """Write slurm.conf if it differs (restarting the Slurm daemons that used the old one),
    then start whatever is not running."""
    wanted = desired_config()
    if not SLURM_CONF.exists() or SLURM_CONF.read_text() != wanted:
        for daemon in (SLURMD, SLURMCTLD):
            _stop(daemon)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(wanted)
    _make_dirs()
    started = set(STARTED_MARK.read_text().split()) if STARTED_MARK.exists() else set()
    deadline = time.monotonic() + timeout
    for daemon in DAEMONS:
        if daemon_pid(daemon) is None:
            _start(daemon, deadline)
            started.add(daemon.name)
            if daemon is MUNGED:
                _wait_for(lambda: MUNGE_SOCKET.exists(), deadline, "munged made no socket")
    if started:
        STARTED_MARK.write_text("\n".join(sorted(started)) + "\n")


def _make_dirs() -> None:
    munge = pwd.getpwnam("munge")
    slurm = pwd.getpwnam("slurm")
    for path, owner in ((RUN_MUNGE, munge), (Path("/var/log/munge"), munge),
                        (Path("/var/lib/munge"), munge), (RUN_SLURM, slurm),
                        (STATE_DIR / "slurmctld", slurm), (STATE_DIR / "slurmd", slurm),
                        (LOG_DIR, slurm)):
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _start(daemon: Daemon, deadline: float) -> None:
    # Each daemon forks into the background; its pid file says when it is up.
    done = subprocess.run(daemon.argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise SlurmUnavailable(f"{' '.join(daemon.argv)} failed (rc {done.returncode}): "
                               f"{done.stderr.strip()} {_log_tail(daemon)}")
    _wait_for(lambda: daemon_pid(daemon) is not None, deadline,
              f"{daemon.name} did not stay up {_log_tail(daemon)}")


def _stop(daemon: Daemon) -> None:
    pid = daemon_pid(daemon)
    if pid is not None:
        _terminate(pid)
    daemon.pidfile.unlink(missing_ok=True)


def daemon_pid(daemon: Daemon) -> int | None:
    try:
        pid = int(daemon.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _running_cluster(timeout: float = 0.0) -> SlurmCluster | None:
    """The cluster if sinfo shows an idle (or busy) node in the default partition."""
    deadline = time.monotonic() + timeout
    while True:
        line = _output(["sinfo", "-h", "-N", "-o", "%N %P %c %T"]).split()
        if len(line) >= 4 and line[3].rstrip("*~#") in ("idle", "mixed", "allocated", "completing"):
            return SlurmCluster(line[0], line[1].rstrip("*"), int(line[2]))
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def _diagnosis() -> str:
    sinfo = _output(["sinfo", "-h", "-N", "-o", "%N %T %E"]).strip() or "sinfo answered nothing"
    return f"sinfo: {sinfo} {_log_tail(SLURMCTLD)} {_log_tail(SLURMD)}"


def _log_tail(daemon: Daemon) -> str:
    log = {"munged": Path("/var/log/munge/munged.log")}.get(daemon.name,
                                                             LOG_DIR / f"{daemon.name}.log")
    if not log.exists():
        return ""
    return f"| {log}: " + " | ".join(log.read_text(errors="replace").strip().splitlines()[-4:])


def _register() -> None:
    USERS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    (USERS_DIR / str(os.getpid())).write_text("")


def live_users() -> list[int]:
    users = []
    for entry in USERS_DIR.glob("*") if USERS_DIR.is_dir() else []:
        if entry.name.isdigit() and _alive(int(entry.name)):
            users.append(int(entry.name))
        else:
            entry.unlink(missing_ok=True)
    return users


def _ensure_resolvable(hostname: str) -> None:
    try:
        socket.gethostbyname(hostname)
    except OSError:
        with Path("/etc/hosts").open("a") as hosts:
            hosts.write(f"127.0.0.1 {hostname}\n")


def slurm_present() -> bool:
    return all(Path(path).is_file() for path in
               ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")) and \
        all(shutil.which(command) for command in ("sbatch", "squeue", "scontrol", "sinfo"))


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One session at a time starts or stops the daemons."""
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_for(ready: Callable[[], bool], deadline: float, problem: str) -> None:
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise SlurmUnavailable(problem)


def _output(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return done.stdout if done.returncode == 0 else ""

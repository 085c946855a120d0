"""Reaching SSH sites: their transport, and `site check`."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from megarun.agent import private
from megarun.core.files import private_dirs
from megarun.errors import EnvironmentProblem, UsageError
from megarun.schedulers import get_scheduler
from megarun.sites.agentzip import agent_zipapp
from megarun.sites.identity import SiteIdentity
from megarun.transport.base import Transport
from megarun.transport.local import LocalTransport
from megarun.transport.pool import get_transport

#: Scheduler commands `site check` looks for on the site's PATH.
SCHEDULER_COMMANDS = ("sbatch", "squeue", "scancel", "qsub", "qstat", "qdel", "bsub", "bjobs",
                      "bkill", "srun", "mpiexec", "mpirun", "aprun", "jsrun", "rsync")

# Runs on the site under its Python (3.6+): facts about the interpreter, disk and commands.
_PROBE = """
import json, os, platform, shutil, sys
workdir, agent = sys.argv[1], sys.argv[2]
folder = workdir
while not os.path.isdir(folder) and folder != os.path.dirname(folder):
    folder = os.path.dirname(folder)
usage = os.statvfs(folder)
print(json.dumps({
    "python": platform.python_version(), "ok": sys.version_info >= (3, 6),
    "host": platform.node(), "workdir_exists": os.path.isdir(workdir),
    "os": platform.system().lower(), "arch": platform.machine(),
    "disk_free": usage.f_bavail * usage.f_frsize,
    "agent_installed": os.path.isfile(os.path.join(workdir, "agent", agent)),
    "commands": sorted(c for c in sys.argv[3:] if shutil.which(c)),
}))
"""


# Runs on the site: remove job run paths, only those under the given root, and the folders
# above them that this emptied (up to the root).
_REMOVE_PATHS = """
import json, os, shutil, sys
root = os.path.realpath(sys.argv[1])
removed = 0
for path in json.loads(sys.stdin.read()):
    real = os.path.realpath(path)
    if not real.startswith(root + os.sep):
        continue
    if os.path.isdir(real):
        shutil.rmtree(real)
        removed += 1
    folder = os.path.dirname(real)
    while folder.startswith(root + os.sep):  # emptied folders up to the root, never above
        try:
            os.rmdir(folder)
        except FileNotFoundError:
            pass  # removed by an earlier clean
        except OSError:
            break
        folder = os.path.dirname(folder)
print(removed)
"""


def remove_remote_run_paths(site: SiteIdentity, root: str, paths: list[str]) -> int:
    """Delete run paths on an SSH site (only under `root`); return how many were removed."""
    result = site_transport(site).run([site.spec.interpreter, "-c", _REMOVE_PATHS, root],
                                     stdin=json.dumps(paths).encode(), timeout=600)
    if result.code != 0:
        lines = result.stderr_text.strip().splitlines()
        raise EnvironmentProblem(f"site {site.name!r}: cannot remove run paths: "
                                 f"{lines[-1] if lines else f'exit code {result.code}'}")
    return int(result.stdout_text.strip() or 0)


def site_transport(site: SiteIdentity, accept_host_key: bool = False) -> Transport:
    """The site's pooled SSH transport (a fresh one when a host key may be accepted)."""
    from megarun.transport.ssh.transport import SshTransport  # paramiko: only for SSH sites

    if not site.host:
        raise UsageError(f"site {site.name!r} is local; it has no SSH connection")
    ssh = site.spec.ssh

    def make() -> SshTransport:
        return SshTransport(site.host or "", site_name=site.name, identity_file=ssh.identity,
                           jump=ssh.jump, known_hosts=ssh.known_hosts,
                           accept_host_key=accept_host_key)

    if accept_host_key:
        return make()
    return get_transport(f"site:{site.name}", make)


def transport_for(site: SiteIdentity) -> Transport:
    """Where the site's commands run: its SSH connection, or this machine."""
    if site.host:
        return site_transport(site)
    return LocalTransport()


def agent_command(site: SiteIdentity) -> list[str]:
    """How a batch script starts the agent zipapp on the site (installed by install_agent)."""
    python = site.spec.interpreter if site.host or site.spec.python is not None \
        else sys.executable
    return [python, agent_path(site)]


def agent_path(site: SiteIdentity) -> str:
    return f"{site.workdir}/agent/{agent_zipapp().name}"


def private_script() -> str:
    """The text of megarun/agent/private.py, to run on a site with `python -c`."""
    return Path(private.__file__).read_text(encoding="utf-8")


def checked_agent_argv(site: SiteIdentity, *args: str) -> list[str]:
    """Run the site's agent with `args` after checking (there) that it and its folders are
    private: the same round trip, and a zipapp planted by someone else never runs."""
    return [site.spec.interpreter, "-c", private_script(), "run", agent_path(site), *args]


def ensure_site_dirs(site: SiteIdentity, transport: Transport, *folders: str) -> None:
    """Make `folders` 0700 on the site and refuse any another user owns or may write
    (checked on the site, in one round trip)."""
    if not site.host:
        private_dirs(Path(folders[0]), *(Path(folder) for folder in folders[1:]))
        return
    result = transport.run([site.spec.interpreter, "-c", private_script(), "ensure", *folders],
                          timeout=60)
    if result.code == 0:
        return
    try:
        error = str(json.loads(result.stdout_text.strip().splitlines()[-1])["error"])
    except (ValueError, IndexError, KeyError, TypeError):
        lines = result.stderr_text.strip().splitlines()
        error = lines[-1] if lines else f"exit code {result.code}"
    raise EnvironmentProblem(f"site {site.name!r} ({site.host}): {error}",
                             f"check the site: megarun site check {site.name}")


def install_agent(site: SiteIdentity, transport: Transport | None = None) -> bool:
    """Ship this version of the agent to a site (over SFTP) unless it is there already.

    The zipapp's name carries its content hash, so an existing file is this very agent.
    Returns True when it was shipped.
    """
    transport = transport or site_transport(site)
    path = agent_path(site)
    if transport.exists(path):
        return False
    ensure_site_dirs(site, transport, site.workdir, path.rsplit("/", 1)[0])
    transport.write_bytes_atomic(path, agent_zipapp().data, 0o600)
    return True


def check_site(site: SiteIdentity, accept_host_key: bool = False,
               install: bool = False) -> dict[str, Any]:
    """Connect, and report the remote Python, free disk, agent and scheduler commands."""
    if site.host:
        transport, python = site_transport(site, accept_host_key), site.spec.interpreter
    else:
        transport, python = LocalTransport(), sys.executable
    try:
        shipped = install_agent(site, transport) if install and site.host else False
        result = transport.run([python, "-c", _PROBE, site.workdir, agent_zipapp().name,
                               *SCHEDULER_COMMANDS], timeout=60)
    finally:
        if accept_host_key:
            transport.close()
    if result.code != 0:
        detail = result.stderr_text.strip().splitlines()
        reason = detail[-1] if detail else f"exit code {result.code}"
        if result.code == 127:
            reason = f"{python!r} was not found on {site.host}"
        raise EnvironmentProblem(f"site {site.name!r}: cannot run {shlex.quote(python)}: "
                                 f"{reason}", "set the interpreter with: megarun site add ... "
                                 "--python PATH")
    facts: dict[str, Any] = json.loads(result.stdout_text)
    if not facts.pop("ok"):
        raise EnvironmentProblem(f"site {site.name!r}: Python {facts['python']} on {site.host} "
                                 "is older than 3.6, which the agent needs",
                                 "point --python at a newer interpreter")
    wanted = [] if site.scheduler == "local" else list(get_scheduler(site.scheduler).commands)
    facts.update({"site": site.name, "host_spec": site.host or "local", "workdir": site.workdir,
                  "agent": agent_zipapp().name, "agent_shipped": shipped,
                  "scheduler": site.scheduler,
                  "scheduler_found": all(c in facts["commands"] for c in wanted)})
    return facts

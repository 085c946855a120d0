"""The one step that installs what the system tests use: `python3 -m tests.system_services`.

scripts/test runs it before pytest. It installs, with one apt-get update and one apt-get
install, whichever of these is missing: the OpenSSH server and client (the real sshd on
loopback and in a network namespace), rsync (staging over SSH), Debian's Slurm (a real
single-node cluster), cron (its daemon and crontab: the real crontab round trip) and Debian's
Chromium with a font (the HTML report's browser tests). The fixtures only check that these are
present and start them; when this step could not install something (not root, no apt-get, no
network), it says so loudly here and the tests that need it skip with the same reason. It
never fails the run by itself.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable

from tests.browser import chromium_path
from tests.slurmd import PACKAGES as SLURM_PACKAGES
from tests.slurmd import slurm_present
from tests.sshd import SshdUnavailable, apt, openssh_present

#: What each service needs: (name, apt packages, check that it is there).
SERVICES: tuple[tuple[str, tuple[str, ...], Callable[[], bool]], ...] = (
    ("sshd", ("openssh-server", "openssh-client"), openssh_present),
    ("rsync", ("rsync",), lambda: shutil.which("rsync") is not None),
    ("slurm", tuple(SLURM_PACKAGES), slurm_present),
    ("cron", ("cron",), lambda: shutil.which("crontab") is not None
     and shutil.which("cron", path=f"{os.environ.get('PATH', '')}:/usr/sbin") is not None),
    ("chromium", ("chromium", "fonts-liberation"), lambda: chromium_path() is not None),
)


def missing() -> list[tuple[str, tuple[str, ...]]]:
    return [(name, packages) for name, packages, present in SERVICES if not present()]


def install() -> list[str]:
    """Install what is missing; return one line per service that is still missing, and why."""
    wanted = missing()
    if not wanted:
        return []
    names = ", ".join(name for name, _ in wanted)
    if os.geteuid() != 0:
        return [f"{names}: missing, and this is not root (apt-get needs root)"]
    if shutil.which("apt-get") is None:
        return [f"{names}: missing, and there is no apt-get to install them"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    packages = [package for _, group in wanted for package in group]
    try:
        apt(["apt-get", "update", "-qq"], env)
        apt(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env)
    except SshdUnavailable as exc:
        return [f"{names}: {exc}"]
    return [f"{name}: apt-get ran but it is still missing" for name, _ in missing()]


def main() -> int:
    before = [name for name, _ in missing()]
    problems = install()
    for line in problems:
        print(f"!!! SYSTEM TESTS WILL SKIP: {line} !!!", file=sys.stderr)
    installed = [name for name in before if not any(line.startswith(name) for line in problems)]
    print("system services: " + (f"installed {', '.join(installed)}" if installed
                                 else "all present" if not problems else "see above"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

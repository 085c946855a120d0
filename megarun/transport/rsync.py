"""rsync for large directory trees of SSH sites, as an argv list built from the site's endpoint.

SshTransport.put_tree/get_tree use rsync only when it exists on both hosts, the tree is large
(RSYNC_MIN_FILES files or RSYNC_MIN_BYTES bytes), the site needs no jump host, and every value
that goes into rsync's `-e` command is made of plain characters: rsync splits that one argument
on spaces itself, so a value with a space or a quote is never passed (SFTP is used instead).
The ssh that rsync starts checks the host key exactly as megarun does: the site's known_hosts,
StrictHostKeyChecking=yes, BatchMode=yes (no prompt), and ~/.ssh/config is not read (its
values were already resolved into the endpoint).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

RSYNC_MIN_FILES = 200
RSYNC_MIN_BYTES = 256 << 20
#: rsync exit codes that mean the connection or the remote rsync failed, not a file:
#: the caller falls back to SFTP. (5 startup, 10 socket, 12 protocol stream, 14 IPC,
#: 35 daemon timeout, 255 ssh itself.)
CONNECTION_CODES = frozenset({5, 10, 12, 14, 35, 255})
_PLAIN = re.compile(r"[A-Za-z0-9_.,:/@%+=-]+\Z")

#: Runs on the site (Python 3.6+): is `root` a folder, is it large, is rsync there.
REMOTE_PROBE = """
import json, os, shutil, sys
root, max_files, max_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
files = size = 0
large = False
for folder, _dirs, names in os.walk(root):
    for name in names:
        files += 1
        try:
            size += os.lstat(os.path.join(folder, name)).st_size
        except OSError:
            pass
    if files >= max_files or size >= max_bytes:
        large = True
        break
print(json.dumps({"exists": os.path.lexists(root), "dir": os.path.isdir(root),
                  "large": large, "rsync": shutil.which("rsync") is not None}))
"""


@dataclass(frozen=True)
class RsyncTarget:
    """How rsync reaches a host: `user@host` and the `-e` ssh command (both plain)."""

    login: str
    ssh_command: str

    def remote(self, path: str) -> str:
        return f"{self.login}:{path}"


def local_rsync() -> str | None:
    """The rsync program of this machine, or None."""
    return shutil.which("rsync")


def rsync_target(user: str, hostname: str, port: int, identity_files: Sequence[str],
                 known_hosts: str, connect_timeout: float) -> RsyncTarget | None:
    """The target for rsync over ssh, or None when a value is not plain enough to pass."""
    words = ["ssh", "-F", "/dev/null", "-p", str(port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
             "-o", f"ConnectTimeout={max(1, int(connect_timeout))}"]
    identities = [path for path in identity_files if os.path.isfile(path)]
    for identity in identities:
        words += ["-i", identity]
    if identities:
        words += ["-o", "IdentitiesOnly=yes"]
    host = f"[{hostname}]" if ":" in hostname else hostname
    if not all(_PLAIN.match(word) for word in [*words, user, hostname]):
        return None
    return RsyncTarget(f"{user}@{host}", " ".join(words))


def rsync_argv(target: RsyncTarget, source: str, destination: str) -> list[str]:
    """Copy the folder `source` into the folder `destination` (trailing slashes: contents).

    -r recursive, -l symlinks as symlinks, -p permissions, -t times (no owners, no devices);
    -s passes the paths inside rsync's protocol, never through the remote shell.
    """
    return ["rsync", "-rlpt", "-s", "-e", target.ssh_command, "--",
            source.rstrip("/") + "/", destination.rstrip("/") + "/"]


def run_rsync(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run rsync locally (argv list, no shell); its exit code says how it went."""
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)


def tree_is_large(path: str, min_files: int | None = None, min_bytes: int | None = None) -> bool:
    """True when the local folder holds at least `min_files` files or `min_bytes` bytes."""
    max_files = RSYNC_MIN_FILES if min_files is None else min_files
    max_bytes = RSYNC_MIN_BYTES if min_bytes is None else min_bytes
    files = size = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            try:
                size += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
        if files >= max_files or size >= max_bytes:
            return True
    return False


def error_line(data: bytes) -> str:
    """The line of rsync's stderr that names what failed (its first "rsync: ..." line, else
    the last line), for a one-line error message."""
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    specific = [line for line in lines if line.startswith("rsync: ")]
    chosen = specific[0] if specific else (lines[-1] if lines else "no message")
    return chosen[:300]

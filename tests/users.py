"""A real second local user for the permission tests: made with useradd, acted as with setpriv.

Only root can make a user and act as another; elsewhere these tests are skipped, loudly.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

OTHER = "megarun-other"


def other_user() -> pwd.struct_passwd:
    """The second user, created (system user, no home, no login) when missing."""
    if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("useradd"):
        pytest.skip("PERMISSION TESTS NOT RUN: they need root, useradd and setpriv")
    try:
        return pwd.getpwnam(OTHER)
    except KeyError:
        pass
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                           "/usr/sbin/nologin", OTHER], capture_output=True, text=True,
                          check=False)
    try:
        return pwd.getpwnam(OTHER)  # also when a concurrent session made it first
    except KeyError:
        raise AssertionError(f"useradd {OTHER} failed: {made.stderr}") from None


def as_user(user: pwd.struct_passwd, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv as `user` (real and effective ids, and that user's groups)."""
    return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                           "--init-groups", "--", *argv], capture_output=True, text=True,
                          timeout=60, check=True)


@contextmanager
def shared_folder() -> Iterator[Path]:
    """A folder like /tmp (mode 1777): every user may make things in it (pytest's own
    tmp_path is reachable by root only)."""
    folder = Path(tempfile.mkdtemp(prefix="megarun-shared-"))
    try:
        os.chmod(folder, 0o1777)
        yield folder
    finally:
        shutil.rmtree(folder)


def planted_bundle(workdir: Path, marker: Path) -> str:
    """A bundle whose job would create `marker` if it ever ran."""
    spec = {"id": 999, "attempt": 1, "workdir": f"{workdir}/jobs/999",
            "steps": [{"name": "job", "cmd": f"touch {marker}"}], "env": {}, "nodes": 1,
            "cpus": 1, "gpus": 0, "threads": 1, "timeout": None}
    return json.dumps(spec)


def plant_work_dir(user: pwd.struct_passwd, workdir: Path, marker: Path) -> None:
    """As `user`: a world-writable work dir with the spool folders and a bundle queued."""
    spool = workdir / "spool"
    folders = " ".join(shlex.quote(str(spool / sub)) for sub in (
        "queue", "claimed", "control/kill", "control/stop", "agents", "events"))
    bundle = shlex.quote(planted_bundle(workdir, marker))
    queue = shlex.quote(str(spool / "queue" / "0001.jsonl"))
    as_user(user, "sh", "-c", f"umask 000 && mkdir -p {folders} {shlex.quote(str(workdir))}/jobs"
                              f" && printf '%s\\n' {bundle} > {queue}")
    assert workdir.stat().st_uid == user.pw_uid
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o777

"""Private folders: what megarun makes is its user's alone, and what it trusts must be too.

A spool folder another user may write is a way to run their commands as us: they drop a
bundle in spool/queue (or swap the folder) and our agent runs it. So every folder megarun
makes is 0700 whatever the umask, and a folder it is about to trust (the area's .megarun/, a
site work dir, its spool) must belong to the user running megarun and be writable by nobody
else; megarun refuses it otherwise, saying whose it is or how to fix it.

Why explicit modes and not a process-wide `umask(0o077)`: the umask is inherited by the jobs
the agent starts, so it would also make private every file a user's job writes (results
people share with their group), and it does nothing for a folder that already exists.
Files are created with os.open(..., 0o600), which a umask can only narrow.

Stdlib only, Python 3.6+: the agent uses it on the sites, the home host imports it from here.
Run as a script on a site (`python -c <this file's text> ...`, no agent needed yet) it does
the same there: `ensure DIR...` makes and checks folders, and `run AGENT.pyz ARGS...` checks
the agent's folders and file before running it, so a zipapp planted in a work dir of someone
else never runs.
"""

import errno
import os
import pwd
import shlex
import stat
import sys
from typing import Iterable, List, Optional

PRIVATE_DIR_MODE = 0o700
#: Write bits for group and others: either lets someone else replace what is inside.
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


class NotPrivate(OSError):
    """A folder or file megarun would trust belongs to someone else or others may write it."""

    def __init__(self, path: str, problem: str, hint: str) -> None:
        super().__init__(errno.EPERM, "{} ({})".format(problem, hint), path)
        self.path = path
        self.problem = problem
        self.hint = hint

    def __str__(self) -> str:
        return "{} {} ({})".format(self.path, self.problem, self.hint)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "uid {}".format(uid)


def make_private_dirs(path: str, mode: int = PRIVATE_DIR_MODE) -> None:
    """Create `path` and each missing parent, every one of them `mode` (0700) whatever the
    umask. Folders that exist already are left as they are (check_private judges them).
    """
    missing: List[str] = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory",
                                         folder) from None
            continue  # another process made it meanwhile, with its own mode
        # mkdir's mode is masked by the umask; a umask may even take the owner's bits away.
        os.chmod(folder, mode)


def private_problem(info: os.stat_result, path: str) -> Optional[NotPrivate]:
    """Why a file or folder with this stat must not be trusted; None when it may be."""
    me = os.geteuid()
    if info.st_uid != me:
        owner = user_name(info.st_uid)
        return NotPrivate(path, "belongs to user {}, not to {}".format(owner, user_name(me)),
                          "megarun uses only folders of its own user: choose another path "
                          "or have {} remove it".format(owner))
    if info.st_mode & _OTHERS_WRITE:
        return NotPrivate(path, "is writable by group or others (mode {:04o})".format(
            stat.S_IMODE(info.st_mode)), "chmod go-w " + shlex.quote(path))
    return None


def check_private(path: str) -> None:
    """Raise NotPrivate unless `path` (followed if a symlink) is ours and only ours to write."""
    problem = private_problem(os.stat(path), path)
    if problem is not None:
        raise problem


def ensure_private_dirs(root: str, folders: Iterable[str] = ()) -> None:
    """Make `root` and `folders` (0700 when made) and check that each of them is private."""
    make_private_dirs(root)
    check_private(root)
    for folder in folders:
        make_private_dirs(folder)
        check_private(folder)


def check_existing(paths: Iterable[str]) -> None:
    """check_private for each path that exists (one not made yet will be made private)."""
    for path in paths:
        try:
            check_private(path)
        except FileNotFoundError:
            continue


def _error_line(exc: OSError) -> str:
    """The one JSON line a script run tells the home host a failure with."""
    import json

    return json.dumps({"error": "{}: {}".format(exc.filename, exc.strerror or exc)}) + "\n"


def _ensure_script(folders: List[str]) -> int:
    """`ensure DIR...`: make each folder private and check it; 0, or 3 and one error line."""
    try:
        for folder in folders:
            make_private_dirs(folder)
            check_private(folder)
    except OSError as exc:
        sys.stdout.write(_error_line(exc))
        return 3
    sys.stdout.write('{"ok": true}\n')
    return 0


def _run_checked(agent: str, args: List[str]) -> int:
    """`run AGENT ARGS...`: run the agent zipapp once it and its folders are known private."""
    folder = os.path.dirname(os.path.abspath(agent))
    try:
        check_existing([os.path.dirname(folder), folder])
        check_private(agent)
    except FileNotFoundError:
        # The words the home host reads as "the agent is not installed yet" (as Python's).
        sys.stderr.write("can't open file '{}': [Errno 2] No such file or directory\n"
                         .format(agent))
        return 2
    except OSError as exc:
        sys.stdout.write(_error_line(exc))
        return 3
    import runpy

    sys.argv = [agent, *args]
    sys.path = [entry for entry in sys.path if entry not in ("", ".")]  # no module from the cwd
    runpy.run_path(agent, run_name="__main__")
    return 0


def _script(argv: List[str]) -> int:
    if len(argv) > 2 and argv[1] == "run":
        return _run_checked(argv[2], argv[3:])
    if len(argv) > 1 and argv[1] == "ensure":
        return _ensure_script(argv[2:])
    sys.stderr.write("usage: private.py run AGENT [ARGS...] | ensure DIR...\n")
    return 2


if __name__ == "__main__":
    sys.exit(_script(sys.argv))

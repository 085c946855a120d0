"""Cron lines that run `megarun sync` for an area, and their place in the user's crontab.

megarun owns one marked block per area in the crontab (`# >>> megarun sync: ROOT >>>` ...
`# <<< megarun sync: ROOT <<<`): `install` replaces that block (or appends it), `remove` takes
it out, and every other line of the user's crontab is kept as it was. The table is read with
`crontab -l` and written with `crontab -`, the only interface every cron has.
"""

from __future__ import annotations

import os
import shlex
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import megarun
from megarun.agent.private import make_private_dirs
from megarun.config.area import Area
from megarun.errors import EnvironmentProblem, UsageError

DEFAULT_EVERY = 5


@dataclass(frozen=True)
class CronChange:
    """What `install` or `remove` did to the crontab."""

    lines: list[str]
    changed: bool
    crontab: str  # the command used


def schedule(every: int) -> str:
    """The five time fields of "every `every` minutes"; cron counts minutes within an hour (and
    hours within a day), so only steps that divide them keep an even beat."""
    if 1 <= every < 60 and 60 % every == 0:
        return f"*/{every} * * * *" if every > 1 else "* * * * *"
    if every >= 60 and every % 60 == 0 and 24 % (every // 60) == 0:
        hours = every // 60
        return f"0 */{hours} * * *" if hours > 1 else "0 * * * *"
    raise UsageError(f"--every {every}: use a number of minutes that divides an hour "
                     "(1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) or a day in whole hours "
                     "(60, 120, 180, 240, 360, 480, 720, 1440)")


def begin_marker(area: Area) -> str:
    return f"# >>> megarun sync: {area.root} >>>"


def end_marker(area: Area) -> str:
    return f"# <<< megarun sync: {area.root} <<<"


def cron_lines(area: Area, every: int = DEFAULT_EVERY) -> list[str]:
    """The block for this area: markers around one line running `megarun sync` every `every`
    minutes with this interpreter and this PATH, output appended to .megarun/logs/cron.log."""
    if "\n" in str(area.root):
        raise UsageError(f"the area's path {area.root!r} holds a newline: cron cannot name it")
    log = area.logs_dir / "cron.log"
    argv = [sys.executable, "-m", "megarun", "--area", str(area.root), "sync"]
    command = " ".join(shlex.quote(part) for part in argv)
    prefix = _path_prefix() + _pythonpath_prefix()
    line = f"{schedule(every)} {prefix}{command} >> {shlex.quote(str(log))} 2>&1"
    return [begin_marker(area), _cron_escape(line), end_marker(area)]


def _path_prefix() -> str:
    """`PATH=...` as it is now: cron's own PATH is /usr/bin:/bin, and the jobs run by the agent
    a sync starts find their programs as they would from this shell."""
    path = os.environ.get("PATH", "")
    if not path or "\n" in path:
        return ""  # cron's own; a newline would cut the line in two
    return f"PATH={shlex.quote(path)} "


def _pythonpath_prefix() -> str:
    """`PYTHONPATH=...` when megarun is not installed in the interpreter's site-packages (a
    checkout run with PYTHONPATH): cron starts with an empty environment."""
    package_parent = Path(megarun.__file__).resolve().parent.parent
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if package_parent in installed:
        return ""
    return f"PYTHONPATH={shlex.quote(str(package_parent))} "


def _cron_escape(line: str) -> str:
    """cron turns an unescaped % of a command into a newline."""
    return line.replace("%", "\\%")


class CrontabMissing(EnvironmentProblem):
    """No `crontab` command on this host: the lines must go in by hand, or cron be installed."""


def crontab_command() -> str:
    """The crontab program on PATH."""
    found = shutil.which("crontab")
    if found is None:
        raise CrontabMissing(
            "no crontab command here: install cron (the package is cron on Debian and Ubuntu, "
            "cronie on RHEL, Fedora and Rocky), then run megarun cron install again",
            "or add the lines printed on stdout to your crontab by hand")
    return found


def read_crontab(command: str) -> list[str]:
    """The user's crontab lines; none when the user has no crontab yet."""
    done = subprocess.run([command, "-l"], capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return done.stdout.splitlines()
    if "no crontab" in (done.stderr + done.stdout).lower():
        return []
    raise EnvironmentProblem(f"crontab -l failed (exit code {done.returncode}): "
                             f"{done.stderr.strip() or done.stdout.strip()}")


def write_crontab(command: str, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n" if lines else ""
    done = subprocess.run([command, "-"], input=text, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EnvironmentProblem(f"crontab - failed (exit code {done.returncode}): "
                                 f"{done.stderr.strip() or done.stdout.strip()}")


def without_block(lines: list[str], area: Area) -> list[str]:
    """The crontab lines minus megarun's block for this area (other areas' blocks stay)."""
    begin, end = begin_marker(area), end_marker(area)
    kept: list[str] = []
    inside = False
    for line in lines:
        if line.strip() == begin:
            inside = True
        elif inside and line.strip() == end:
            inside = False
        elif not inside:
            kept.append(line)
    return kept


def installed(area: Area) -> bool:
    """Whether this area's block is in the user's crontab (False where there is no crontab
    command, or it cannot be read)."""
    try:
        lines = read_crontab(crontab_command())
    except EnvironmentProblem:
        return False
    return begin_marker(area) in (line.strip() for line in lines)


def install(area: Area, every: int = DEFAULT_EVERY) -> CronChange:
    """Put this area's block into the user's crontab (replacing the one there): idempotent."""
    block = cron_lines(area, every)
    command = crontab_command()
    current = read_crontab(command)
    wanted = [*without_block(current, area), *block]
    make_private_dirs(str(area.logs_dir))
    if wanted != current:
        write_crontab(command, wanted)
    return CronChange(block, wanted != current, command)


def remove(area: Area) -> CronChange:
    """Take this area's block out of the user's crontab."""
    command = crontab_command()
    current = read_crontab(command)
    wanted = without_block(current, area)
    if wanted != current:
        write_crontab(command, wanted)
    return CronChange([line for line in current if line not in wanted], wanted != current,
                      command)

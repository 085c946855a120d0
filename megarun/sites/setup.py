"""`megarun site init`: set up a site from a preset, test it, and save it only when it works.

The CLI asks the questions (or takes them from flags); this module owns the choices offered,
the checks of every answer, and the setup itself: connect (host key accepted only when the
user said so), resolve the work dir on the site, probe Python and disk, install the agent,
run the scheduler's version command, and only then save the site. Any failure before the save
leaves the area as it was.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megarun.config.area import validate_name
from megarun.config.presets import (
    Preset,
    apply_overrides,
    load_preset,
    preset_names,
    validate_preset,
)
from megarun.config.queues import describe_limits
from megarun.db.models import Site
from megarun.errors import EnvironmentProblem, UsageError
from megarun.schedulers import get_scheduler
from megarun.sites.connect import check_site, site_transport, transport_for
from megarun.sites.livecheck import LiveCheck, check_limits
from megarun.sites.registry import AreaAccess, SiteInfo, SshOptions, add_site, record_detected
from megarun.sites.spec import SiteSpec
from megarun.transport.ssh.hostspec import parse_host_spec

#: Answers to the host question that mean "this machine".
LOCAL_HOSTS = ("", "local")

# Runs on the site (Python 3.6+): expand $VARS and ~ in a path the way the user's login sees it.
_EXPAND = "import os, sys; print(os.path.expanduser(os.path.expandvars(sys.argv[1])))"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class InitRequest:
    """Every answer of the wizard (from prompts or flags)."""

    preset: str
    name: str
    host: str | None = None  # [user@]host[:port]; None, "" or "local": this machine
    workdir: str | None = None  # None: the suggestion for this preset and site
    account: str = ""
    queue: str = ""  # "": the preset's default queue
    accept_host_key: bool = False
    ssh: SshOptions = field(default_factory=SshOptions)


@dataclass(frozen=True)
class InitResult:
    """What `site init` did: the saved site and what it found there."""

    site: SiteInfo
    facts: dict[str, Any]
    scheduler_version: str
    #: The live check's words: where the preset's queues differ from the scheduler's.
    queue_problems: list[str] = field(default_factory=list)


# -- choices and checks of single answers ---------------------------------------------------------
def preset_rows(area_root: Path | None = None) -> list[dict[str, Any]]:
    """The numbered list the wizard shows: number, name, scheduler, origin, description."""
    rows = []
    for number, name in enumerate(preset_names(area_root), start=1):
        preset = load_preset(name, area_root)
        rows.append({"number": number, "name": name, "scheduler": preset.scheduler,
                     "origin": preset.origin.value, "description": preset.description})
    return rows


def pick_preset(answer: str, area_root: Path | None = None) -> Preset:
    """A preset by its number in `preset_rows()` or by its name."""
    answer = answer.strip()
    names = preset_names(area_root)
    if answer.isdigit():
        index = int(answer) - 1
        if not 0 <= index < len(names):
            raise UsageError(f"preset number {answer} is not between 1 and {len(names)}")
        answer = names[index]
    return load_preset(answer, area_root)


def check_new_site_name(ctx: AreaAccess, name: str) -> str:
    """A valid name no site of the area has yet."""
    validate_name("site", name)
    if Site.select().where(Site.name == name).exists(ctx.db):
        raise UsageError(f"site {name!r} already exists (remove it first: megarun site rm {name})")
    return name


def normalize_host(host: str | None, user: str | None = None) -> str | None:
    """None for this machine; else [user@]host[:port], checked, with `user` put in front."""
    text = (host or "").strip()
    if text in LOCAL_HOSTS:
        if user:
            raise UsageError("a user needs a host (an SSH site)")
        return None
    if user:
        if "@" in text:
            raise UsageError(f"the host {text!r} names a user already; leave the user empty")
        text = f"{user.strip()}@{text}"
    parse_host_spec(text)  # a bad spec is a one-line usage error naming what is wrong
    return text


def check_account(preset: Preset, account: str) -> str:
    """The account to charge: required by some presets; one word, no shell characters."""
    account = account.strip()
    if not account and preset.account_required:
        raise UsageError(f"the {preset.name} preset needs an account (the project to charge): "
                         "pass --account")
    if account and not all(c.isalnum() or c in "_.-" for c in account):
        raise UsageError(f"account {account!r} may only hold letters, digits, '_', '.' and '-'")
    return account


def pick_queue(preset: Preset, answer: str) -> str:
    """A queue of the preset by number or name ("" gives the preset's default); a preset
    without a queue list takes any well-formed name, or none."""
    answer = answer.strip() or preset.default_queue
    queues = preset.queues
    if not queues:
        if answer and not all(c.isalnum() or c in "_.-@" for c in answer):
            raise UsageError(f"queue {answer!r} may only hold letters, digits, '_', '.', '@', '-'")
        return answer
    names = [queue.name for queue in queues]
    if answer.isdigit() and answer not in names:
        index = int(answer) - 1
        if not 0 <= index < len(names):
            raise UsageError(f"queue number {answer} is not between 1 and {len(names)}")
        return names[index]
    if answer not in names:
        raise UsageError(f"the {preset.name} preset has no queue {answer!r}; valid queues: "
                         f"{', '.join(names)}")
    return answer


def queue_rows(preset: Preset) -> list[dict[str, Any]]:
    """The numbered queue list the wizard shows, with limits."""
    return [{"number": number, **queue.as_dict(), "limits": describe_limits(queue)}
            for number, queue in enumerate(preset.queues, start=1)]


def suggest_workdir(ctx: AreaAccess, preset: Preset, name: str, host: str | None,
                    account: str) -> str:
    """The work dir offered: the preset's (with {account} filled in) plus the site name; a
    local site of a preset without one gets the area's own folder for the site."""
    base = preset.workdir.replace("{account}", account) if account else preset.workdir
    if "{account}" in base:
        base = ""
    if base:
        return f"{base.rstrip('/')}/{name}"
    if host is None:
        return str(ctx.area.sites_dir / name)
    return f"$HOME/megarun/{name}"


# -- the setup ------------------------------------------------------------------------------------
def init_site(ctx: AreaAccess, request: InitRequest, progress: Progress | None = None) -> InitResult:
    """Check every answer, test the site (connection, Python, agent, scheduler) and save it.

    Raises UsageError/ConfigError for a bad answer (exit 2) and EnvironmentProblem when the site
    cannot be reached or its scheduler does not answer (exit 3); nothing is saved then.
    """
    say = progress or (lambda _text: None)
    preset = load_preset(request.preset, ctx.area.root)
    name = check_new_site_name(ctx, request.name)
    host = normalize_host(request.host)
    account = check_account(preset, request.account)
    queue = pick_queue(preset, request.queue)
    assignments = [f"{key}={value}" for key, value in
                   (("account", account), ("default_queue", queue)) if value]
    workdir = request.workdir or suggest_workdir(ctx, preset, name, host, account)
    probe = _probe_site(preset, name, host, workdir, assignments, request.ssh)
    say(f"connecting to {host or 'this machine'} ...")
    probe = dataclasses.replace(probe, workdir=_resolve_workdir(probe, request.accept_host_key))
    facts = check_site(probe, accept_host_key=False, install=True)
    say(f"Python {facts['python']} on {facts.get('host') or host}; work dir {probe.workdir}")
    if facts.get("agent_shipped"):
        say(f"agent installed: {facts['agent']}")
    version = check_scheduler(probe)
    say(f"scheduler {probe.scheduler}: {version}")
    problems = queue_problems(check_limits(probe))
    for line in problems:
        say(f"queue limits: {line}")
    if problems:
        say(f"to take the scheduler's limits: megarun site check {name} --fix")
    info = add_site(ctx, name, preset.name, host, probe.workdir, assignments,
                    request.ssh if host else None)
    if host:
        record_detected(ctx, name, facts)
    return InitResult(info, facts, version, problems)


def queue_problems(report: LiveCheck) -> list[str]:
    """One line per disagreement of the live check, or why it could not be done."""
    if report.error:
        return [f"not checked: {report.error}"]
    return [f"{check.name}: {problem}" for check in report.queues for problem in check.problems]


def _probe_site(preset: Preset, name: str, host: str | None, workdir: str,
                assignments: list[str], ssh: SshOptions) -> SiteInfo:
    """The site as it would be saved, not saved yet: what the checks connect to."""
    settings = apply_overrides(preset.settings, assignments)
    if host:
        settings["ssh"] = {**settings.get("ssh", {}), **_ssh_table(ssh)}
        if ssh.python:
            settings["python"] = ssh.python
    elif ssh.given():
        raise UsageError("--identity, --known-hosts and --python need --host (an SSH site)")
    settings = validate_preset(preset.name, settings, f"site {name!r} settings").settings
    spec = SiteSpec.from_settings(settings, f"site {name!r} settings")
    return SiteInfo(name, preset.name, preset.scheduler, host, workdir, spec)


def _ssh_table(ssh: SshOptions) -> dict[str, str]:
    table = {}
    if ssh.identity:
        table["identity"] = str(Path(ssh.identity).expanduser().resolve())
    if ssh.known_hosts:
        table["known_hosts"] = str(Path(ssh.known_hosts).expanduser().resolve())
    if ssh.jump:
        table["jump"] = ssh.jump
    return table


def _resolve_workdir(site: SiteInfo, accept_host_key: bool) -> str:
    """Expand $VARS and ~ as the site's login shell sees them; the result must be absolute.

    This is the first connection: an unknown host key is accepted here when the user said so.
    """
    raw = site.workdir
    if any(c in raw for c in "\0\n"):
        raise UsageError("the work dir may not hold NUL or newline characters")
    if site.host:
        expanded = _expand_remote(site, raw, accept_host_key)
    else:
        expanded = os.path.expanduser(os.path.expandvars(raw))
    if "$" in expanded:
        raise UsageError(f"work dir {raw!r}: a variable in it is not set on "
                         f"{site.host or 'this machine'} (got {expanded!r}); give --workdir")
    if not expanded.startswith("/"):
        if site.host:
            raise UsageError(f"work dir {raw!r} must be an absolute path on {site.host}")
        expanded = str(Path(expanded).resolve())
    return expanded.rstrip("/") or "/"


def _expand_remote(site: SiteInfo, raw: str, accept_host_key: bool) -> str:
    transport = site_transport(site, accept_host_key)
    try:
        # A login shell sets the centre's variables ($SCRATCH, $MEMBERWORK); the path and the
        # program reach Python as arguments, never through the shell.
        result = transport.run(["/bin/sh", "-lc", 'exec "$@"', "sh", site.spec.interpreter, "-c", _EXPAND,
                               raw], timeout=60)
    finally:
        if accept_host_key:
            transport.close()  # the key is in known_hosts now; later steps use the pooled one
    if result.code != 0:
        lines = result.stderr_text.strip().splitlines()
        reason = lines[-1] if lines else f"exit code {result.code}"
        raise EnvironmentProblem(f"site {site.name!r}: cannot run {site.spec.interpreter} on {site.host}: "
                                 f"{reason}", "set the interpreter with --python PATH")
    return result.stdout_text.strip()


def check_scheduler(site: SiteInfo) -> str:
    """Run the scheduler's version command on the site; return its first line of output."""
    argv = get_scheduler(site.scheduler).version_argv()
    if not argv:
        return "no batch scheduler"
    result = transport_for(site).run(argv, timeout=60)
    output = (result.stdout_text.strip() or result.stderr_text.strip()).splitlines()
    if result.code != 0:
        reason = "not found" if result.code == 127 else (output[-1] if output else
                                                          f"exit code {result.code}")
        raise EnvironmentProblem(f"site {site.name!r}: the {site.scheduler} scheduler does not "
                                 f"answer on {site.host or 'this machine'}: {argv[0]}: {reason}",
                                 "check the preset, or that its commands are on the PATH there")
    return output[0] if output else f"{argv[0]} found"

"""Sites: add from a preset, list, show, remove."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from peewee import SqliteDatabase

from megarun.config.area import Area, validate_name
from megarun.config.presets import (
    apply_overrides,
    load_preset,
    preset_names,
    validate_preset,
)
from megarun.core.files import private_dirs
from megarun.db.models import Job, Site
from megarun.errors import ConfigError, NotFoundError, UsageError
from megarun.sites.local_spool import LocalSpool
from megarun.sites.remote_spool import RemoteSpool
from megarun.sites.spec import SiteSpec
from megarun.transport.ssh.hostspec import parse_host_spec


class AreaAccess(Protocol):
    """What the registry reads of its caller: the area and its opened database (a command's
    megarun.homehost.context.Context, or an OpenArea the wings build from the two)."""

    @property
    def area(self) -> Area: ...

    @property
    def db(self) -> SqliteDatabase: ...


@dataclass(frozen=True)
class OpenArea:
    """An area and its opened database, given explicitly (the wings take both as arguments)."""

    area: Area
    db: SqliteDatabase

#: Preset keys that only suggest answers to `site init` (a login host, a work dir pattern such
#: as `$HOME/megarun`). A site's real host and work dir are its own fields, so these are not
#: kept in its settings: `site show` would print the suggestion beside the real value.
PRESET_SUGGESTIONS = ("host", "workdir")


@dataclass(frozen=True)
class SiteInfo:
    """A site as the CLI shows it, with its settings read into a typed spec."""

    name: str
    preset: str
    scheduler: str
    host: str | None
    workdir: str
    spec: SiteSpec
    mirror_dir: Path | None = None  # where an SSH site's spool is mirrored in the area


    @property
    def allocation(self) -> str:
        """What each batch job asks for on each node (the [pilot] table), in words."""
        if self.scheduler == "local":
            return "this host (no scheduler): the agent counts the cores it may run on"
        return self.spec.pilot.describe()

    def spool(self) -> LocalSpool:
        """The site's spool: its work dir here, or the local mirror of an SSH site's spool."""
        if self.host:
            if self.mirror_dir is None:
                raise UsageError(f"site {self.name!r} is on {self.host}: its spool needs the area")
            return RemoteSpool(self, self.mirror_dir)
        return LocalSpool(Path(self.workdir))

    @property
    def is_remote(self) -> bool:
        return bool(self.host)


def without_suggestions(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A site's settings without the preset's suggestions (sites added before they were left
    out still hold them)."""
    return {key: value for key, value in settings.items() if key not in PRESET_SUGGESTIONS}


def workdir_origin(ctx: AreaAccess, site: SiteInfo) -> str:
    """Where a site's work dir came from, for `site show`."""
    if not site.host and Path(site.workdir) == ctx.area.sites_dir / site.name:
        return "the default for a site on this machine (no --workdir given)"
    if site.host:
        return f"given when the site was added (--workdir or site init), on {site.host}"
    return "given when the site was added (--workdir or site init)"


def list_presets(area_root: Path | None = None) -> list[dict[str, str]]:
    """Name, scheduler, origin (area, user, shipped), file and description of every preset,
    with the month its limits were checked and the page they were checked against; `hides`
    names the origins of same-named presets this one replaces."""
    rows = []
    for name in preset_names(area_root):
        preset = load_preset(name, area_root)
        rows.append({"name": name, "scheduler": preset.scheduler,
                     "origin": preset.origin.value, "description": preset.description,
                     "hides": ", ".join(origin.value for origin in preset.hides),
                     "path": str(preset.path), "checked": preset.checked,
                     "source": preset.source})
    return rows


def _info(site: Site, ctx: AreaAccess | None = None) -> SiteInfo:
    mirror = ctx.area.sites_dir / site.name if ctx is not None and site.host else None
    return SiteInfo(site.name, site.preset, site.scheduler, site.host, site.workdir,
                    SiteSpec.from_stored(site.name, site.settings), mirror)


def add_site(ctx: AreaAccess, name: str, preset_name: str, host: str | None = None,
             workdir: str | None = None, assignments: list[str] | None = None,
             ssh: SshOptions | None = None,
             capabilities: dict[str, Any] | None = None) -> SiteInfo:
    """Create a site from a preset, with `--set` overrides and `capabilities` (tags matched
    against apps' requirements) applied and validated.

    With `host`, the site is reached over SSH: its work dir must be an absolute path there.
    """
    validate_name("site", name)
    preset = load_preset(preset_name, ctx.area.root)
    _refuse_suggestion_overrides(assignments or [])
    settings = without_suggestions(apply_overrides(preset.settings, assignments or []))
    if capabilities:
        settings["capabilities"] = {**(settings.get("capabilities") or {}), **capabilities}
    if host:
        host, directory = _ssh_settings(settings, host, workdir, ssh or SshOptions())
    else:
        if ssh is not None and ssh.given():
            raise UsageError("--identity, --jump and --python need --host (an SSH site)")
        directory = str(Path(workdir).expanduser().resolve() if workdir
                        else ctx.area.sites_dir / name)
    settings = validate_preset(preset_name, settings, f"site {name!r} settings").settings
    spec = SiteSpec.from_settings(settings, f"site {name!r} settings")
    if not host and Path(directory).exists():
        private_dirs(Path(directory))  # refused before it is registered (others may write it)
    db = ctx.db
    with db.atomic():
        if Site.select().where(Site.name == name).exists():
            raise UsageError(f"site {name!r} already exists (remove it first: megarun site rm {name})")
        site = Site.create(name=name, preset=preset_name, scheduler=spec.scheduler,
                           host=host, workdir=directory, settings=json.dumps(settings),
                           created=time.time())
    if not host:
        record_detected(ctx, name, local_facts())
        site = Site.get(Site.name == name)
    info = _info(site, ctx)
    if not info.host:
        info.spool().ensure()
    return info


def set_site_settings(ctx: AreaAccess, name: str, assignments: list[str]) -> SiteInfo:
    """`site set`: change settings of a saved site (dotted keys as `site add --set`), checked
    by the same rules; on any error nothing is changed."""
    if not assignments:
        raise UsageError("site set needs at least one KEY=VALUE")
    _refuse_suggestion_overrides(assignments)
    origin = f"site {name!r} settings"
    with ctx.db.atomic():
        site = _site_row(ctx, name)
        settings = apply_overrides(json.loads(site.settings or "{}"), assignments)
        settings = validate_preset(site.preset, settings, origin).settings
        spec = SiteSpec.from_settings(settings, origin)
        Site.update(settings=json.dumps(settings), scheduler=spec.scheduler).where(
            Site.id == site.id).execute()
    return _info(Site.get_by_id(site.id), ctx)


def _refuse_suggestion_overrides(assignments: list[str]) -> None:
    for assignment in assignments:
        key = assignment.partition("=")[0].strip()
        if key in PRESET_SUGGESTIONS:
            raise UsageError(f"--set {key}: the site's {key} is not a setting; give --{key}")


@dataclass(frozen=True)
class SshOptions:
    """How to reach an SSH site beyond its host (all optional; ~/.ssh/config fills the rest)."""

    identity: str | None = None
    jump: str | None = None
    python: str | None = None
    known_hosts: str | None = None

    def given(self) -> bool:
        return any((self.identity, self.jump, self.python, self.known_hosts))


def _ssh_settings(settings: dict[str, Any], host: str, workdir: str | None,
                  options: SshOptions) -> tuple[str, str]:
    """Check the SSH options and store them in the site's settings; return (host, work dir)."""
    spec = str(parse_host_spec(host))
    if not workdir or not workdir.startswith("/"):
        raise UsageError("an SSH site needs --workdir, an absolute path on the remote host "
                         f"(got {workdir!r})")
    if any(c in workdir for c in "\0\n"):
        raise UsageError("--workdir may not hold NUL or newline characters")
    table: dict[str, str] = dict(settings.get("ssh", {}))
    if options.identity:
        identity = Path(options.identity).expanduser()
        if not identity.is_file():
            raise UsageError(f"--identity {options.identity}: no such file")
        table["identity"] = str(identity.resolve())
    if options.jump:
        table["jump"] = str(parse_host_spec(options.jump))
    if options.known_hosts:
        table["known_hosts"] = str(Path(options.known_hosts).expanduser().resolve())
    if options.python:
        settings["python"] = options.python
    settings["ssh"] = table
    return spec, workdir.rstrip("/") or "/"


def local_facts() -> dict[str, str]:
    """What matching may know of this machine without asking: os, arch, python."""
    return {"os": platform.system().lower(), "arch": platform.machine(),
            "python": platform.python_version()}


def record_detected(ctx: AreaAccess, name: str, facts: dict[str, Any]) -> None:
    """Keep detected capabilities (os, arch, python) in the site's settings, under `detected`."""
    detected = {key: str(facts[key]) for key in ("os", "arch", "python") if facts.get(key)}
    with ctx.db.atomic():
        site = _site_row(ctx, name)
        settings = json.loads(site.settings)
        if settings.get("detected") == detected:
            return
        settings["detected"] = detected
        Site.update(settings=json.dumps(settings)).where(Site.id == site.id).execute()


def get_site(ctx: AreaAccess, name: str) -> SiteInfo:
    return _info(_site_row(ctx, name), ctx)


def site_id(ctx: AreaAccess, name: str) -> int:
    return int(_site_row(ctx, name).id)


def _site_row(ctx: AreaAccess, name: str) -> Site:
    site: Site | None = Site.select().where(Site.name == name).first(ctx.db)
    if site is None and name == "local" == ctx.area.config.default_site:
        ensure_default_site(ctx)  # the default local site exists as soon as it is named
        site = Site.select().where(Site.name == name).first(ctx.db)
    if site is None:
        names = [s.name for s in Site.select(Site.name).order_by(Site.name).execute(ctx.db)]
        valid = ", ".join(names) if names else "none (add one: megarun site add NAME --preset local)"
        raise NotFoundError(f"unknown site {name!r}; valid sites: {valid}")
    return site


def list_sites(ctx: AreaAccess) -> list[SiteInfo]:
    return [_info(site, ctx) for site in Site.select().order_by(Site.name).execute(ctx.db)]


def remove_site(ctx: AreaAccess, name: str) -> None:
    """Remove a site that no job refers to."""
    site = _site_row(ctx, name)
    used = Job.select().where(Job.site == site).count()
    if used:
        raise UsageError(f"site {name!r} has {used} job(s); remove them first (megarun job rm)")
    site.delete_instance()


def ensure_default_site(ctx: AreaAccess) -> SiteInfo:
    """The area's default site, created from the local preset on first use."""
    name = ctx.area.config.default_site
    site = Site.select().where(Site.name == name).first(ctx.db)
    if site is not None:
        return _info(site, ctx)
    if name != "local":
        raise ConfigError(f"default_site {name!r} in megarun.toml is not a site; add it first")
    try:
        return add_site(ctx, "local", "local")
    except UsageError:
        # Another megarun process created it between our look and our insert: use theirs.
        site = Site.get_or_none(Site.name == name)
        if site is None:
            raise
        return _info(site, ctx)

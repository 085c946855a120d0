"""`megarun site ...`: presets and sites."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.common import CSV_HELP, JSON_HELP, context, one_format
from megarun.cli.formats import print_document, render_listing
from megarun.cli.output import note, print_mapping, say
from megarun.config.requirements import parse_tag_pairs
from megarun.errors import AreaNotFound
from megarun.sites import registry as site_service

if TYPE_CHECKING:
    from megarun.sites.setup import InitResult

app = typer.Typer(help="Sites: where jobs run.", no_args_is_help=True)

_COLUMNS = ["name", "preset", "scheduler", "host", "workdir"]


@app.command("presets")
def presets(ctx: typer.Context,
            as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
            as_csv: Annotated[bool, typer.Option("--csv", help=CSV_HELP)] = False) -> None:
    """List the site presets: the area's site-presets/, your own (~/.config/megarun/presets/)
    and the shipped ones, with where each comes from; the first of a name wins."""
    one_format(as_json, as_csv)
    try:
        area_root: Path | None = context(ctx).area.root
    except AreaNotFound:  # outside an area: your own and the shipped presets
        area_root = None
    rows = site_service.list_presets(area_root)
    render_listing(rows, ["name", "scheduler", "origin", "description", "checked", "source"],
                   as_json, as_csv)
    for row in rows if not (as_json or as_csv) else ():
        if row["hides"]:
            note(f"preset {row['name']!r} ({row['origin']}, {row['path']}) replaces the "
                 f"{row['hides']} one of the same name")


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the new site.")],
    preset: Annotated[str, typer.Option(help="Preset to start from (see: site presets).")],
    host: Annotated[str | None, typer.Option(help="[user@]host[:port] of an SSH site.")] = None,
    workdir: Annotated[str | None, typer.Option(
        help="Work dir on the site (default: .megarun/sites/NAME in the area).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a preset setting: key=value (dotted keys reach into tables).",
        metavar="KEY=VALUE")] = None,
    capability: Annotated[list[str] | None, typer.Option(
        "--capability", help="Capability key=value matched against apps' requirements "
        "(repeatable), e.g. os=linux, gpu=true, python=3.11.", metavar="KEY=VALUE")] = None,
    identity: Annotated[str | None, typer.Option(
        help="Private key file for the SSH site (default: ~/.ssh/config, then ssh's defaults).")] = None,
    jump: Annotated[str | None, typer.Option(
        help="[user@]host[:port] to jump through (ProxyJump).")] = None,
    python: Annotated[str | None, typer.Option(
        help="Python 3.6+ on the SSH site that runs the agent (default: python3).")] = None,
    known_hosts: Annotated[str | None, typer.Option(
        help="known_hosts file to verify the host key with (default: ~/.ssh/known_hosts).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Add a site from a preset (with --host, one reached over SSH)."""
    options = site_service.SshOptions(identity, jump, python, known_hosts)
    capabilities = parse_tag_pairs(capability or [])
    info = site_service.add_site(context(ctx), name, preset, host, workdir, set_ or [], options,
                                 capabilities)
    if as_json:
        print_document(site_json(info))
    else:
        say(f"site {info.name!r} added ({info.scheduler}, work dir {info.workdir})")


@app.command("set")
def set_settings(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the site.")],
    assignments: Annotated[list[str], typer.Argument(
        help="Settings to change: key=value (dotted keys reach into tables), e.g. "
        "elastic.max_batch_jobs=4.", metavar="KEY=VALUE...")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Change settings of a site, checked like site add --set; nothing changes on error."""
    info = site_service.set_site_settings(context(ctx), name, assignments)
    if as_json:
        print_document(site_json(info))
    else:
        say(f"site {info.name!r} updated ({', '.join(a.partition('=')[0] for a in assignments)})")


@app.command("ls")
def ls(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help=CSV_HELP)] = False,
) -> None:
    """List the area's sites."""
    one_format(as_json, as_csv)
    rows = [site_json(s) for s in site_service.list_sites(context(ctx))]
    render_listing(rows, _COLUMNS, as_json, as_csv, empty="no sites (add one: megarun site add "
                   "NAME --preset local)")


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Site name.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show one site: its host and work dir (and where the work dir came from), and its
    settings."""
    mctx = context(ctx)
    site = site_service.get_site(mctx, name)
    info = site_json(site)
    info["workdir_from"] = site_service.workdir_origin(mctx, site)
    # What the site's queue limits were checked against, as its preset said when it was added.
    info["checked"] = str(site.spec.stored.get("checked", ""))
    info["source"] = str(site.spec.stored.get("source", ""))
    info["settings"] = info.pop("settings")  # last: the longest
    if as_json:
        print_document(info)
    else:
        print_mapping(info, title=f"site {name}")


@app.command("rm")
def rm(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Site name.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Remove a site no job refers to."""
    site_service.remove_site(context(ctx), name)
    if as_json:
        print_document({"removed": name})
    else:
        say(f"site {name!r} removed")


@app.command("check")
def check(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Site name.")],
    accept_host_key: Annotated[bool, typer.Option(
        "--accept-host-key", help="Trust the host's key and add it to known_hosts.")] = False,
    install_agent: Annotated[bool, typer.Option(
        "--install-agent", help="Ship this version of the agent to the site if it is not there.")] = False,
    fix: Annotated[bool, typer.Option(
        "--fix", help="Write the queue limits the scheduler reports into the site's settings "
                      "(the preset stays as it is).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Connect to a site; report its Python, free disk, agent and scheduler commands, and
    where its queues' limits differ from the scheduler's (exit 3 on failure)."""
    from megarun.cli.site_limits import limits_json, print_limits
    from megarun.errors import EnvironmentProblem
    from megarun.sites.connect import check_site
    from megarun.sites.livecheck import LiveCheck, check_limits, fix_limits

    mctx = context(ctx)
    site = site_service.get_site(mctx, name)
    facts = check_site(site, accept_host_key, install_agent)
    site_service.record_detected(mctx, name, facts)  # os, arch, python: used by site matching
    limits = check_limits(site) if facts["scheduler_found"] else LiveCheck(name)
    if fix:
        fix_limits(mctx, site, limits)
    if as_json:
        print_document({**facts, **limits_json(limits)})
    else:
        print_mapping(facts, title=f"site {name}: reachable")
        print_limits(limits)
    if not facts["scheduler_found"]:
        raise EnvironmentProblem(f"site {name!r}: the {facts['scheduler']} commands are not on "
                                 f"the PATH of {facts['host_spec']}")


@app.command("init")
def init(
    ctx: typer.Context,
    preset: Annotated[str | None, typer.Option(
        help="Preset to start from, by name or number (see: site presets).")] = None,
    name: Annotated[str | None, typer.Option(
        help="Name of the new site (default: the preset's name).")] = None,
    host: Annotated[str | None, typer.Option(
        help="[user@]host[:port] of an SSH site; 'local' or '' for this machine "
             "(default: the preset's login host).")] = None,
    user: Annotated[str | None, typer.Option(
        help="User on the SSH host (default: ~/.ssh/config, then your login name).")] = None,
    workdir: Annotated[str | None, typer.Option(
        help="Work dir on the site; $VARS and ~ are expanded there (default: the preset's).")] = None,
    account: Annotated[str | None, typer.Option(
        help="Account (project) jobs are charged to (default: the preset's).")] = None,
    queue: Annotated[str | None, typer.Option(
        help="Default queue, by name or number (default: the preset's).")] = None,
    identity: Annotated[str | None, typer.Option(
        help="Private key file for the SSH site (default: ~/.ssh/config, then ssh's defaults).")] = None,
    known_hosts: Annotated[str | None, typer.Option(
        help="known_hosts file to verify the host key with (default: ~/.ssh/known_hosts).")] = None,
    python: Annotated[str | None, typer.Option(
        help="Python 3.6+ on the SSH site that runs the agent (default: python3).")] = None,
    accept_host_key: Annotated[bool, typer.Option(
        "--accept-host-key", help="Trust the host's key and add it to known_hosts.")] = False,
    no_input: Annotated[bool, typer.Option(
        "--yes", "--no-input", "-y",
        help="Ask nothing: take every answer from the options and the preset's defaults.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Set up a site step by step: preset, host, account, queue, work dir; test it and save it."""
    from megarun.cli.site_wizard import Given, Wizard

    given = Given(preset, name, host, user, workdir, account, queue, accept_host_key,
                  site_service.SshOptions(identity, None, python, known_hosts))
    result = Wizard(context(ctx), interactive=not no_input).run(given)
    if as_json:
        print_document(init_json(result))
    else:
        say(f"site {result.site.name!r} saved ({result.site.scheduler}, "
            f"{result.site.host or 'this machine'}, work dir {result.site.workdir})")


def site_json(site: site_service.SiteInfo) -> dict[str, Any]:
    """A site as `site ls|show|add --json` print it (settings as stored, without the preset's
    suggestions for `site init`)."""
    return {"name": site.name, "preset": site.preset, "scheduler": site.scheduler,
            "host": site.host or "local", "workdir": site.workdir,
            "allocation": site.allocation,
            "settings": site_service.without_suggestions(site.spec.stored)}


def init_json(result: "InitResult") -> dict[str, Any]:
    """`site init --json`: the saved site and what was found there."""
    site, facts = result.site, result.facts
    return {**site_json(site), "account": site.spec.account, "queue": site.spec.default_queue,
            "python": facts.get("python"), "remote_host": facts.get("host"),
            "agent": facts.get("agent"), "agent_shipped": bool(facts.get("agent_shipped")),
            "scheduler_version": result.scheduler_version,
            "queue_problems": list(result.queue_problems)}

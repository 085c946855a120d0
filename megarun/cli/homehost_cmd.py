"""`megarun homehost ...`: which host holds the working database, and moving it."""

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from megarun.cli.common import JSON_HELP, context
from megarun.cli.formats import print_document
from megarun.cli.output import say

if TYPE_CHECKING:
    from megarun.homehost.handoff import Moved

app = typer.Typer(help="The home host: the one host that writes the working database.",
                  no_args_is_help=True)

ADDRESS_HELP = ("How other hosts reach this host over SSH: [user@]host[:port] or an ssh config "
                "alias (default: user@this host's name).")
IDENTITY_HELP = "Private key other hosts use to log in here."
KNOWN_HOSTS_HELP = "known_hosts file other hosts check this host's key against."
JUMP_HELP = "Jump host other hosts go through to reach this one."


@app.command("show")
def show(ctx: typer.Context,
         as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """The home host, where its working database is, and the mirror's age."""
    from megarun.homehost.home import this_host

    mctx = context(ctx)
    home = mctx.home
    info: dict[str, Any] = {**home.as_dict(), "this_host": this_host(),
                            "is_home": mctx.is_home, "mirror": str(mctx.area.mirror_path),
                            "mirror_age": mctx.mirror_age()}
    if as_json:
        print_document(info)
        return
    from megarun.core.quantities import format_age

    age = info["mirror_age"]
    say(f"home host   {home.host}{'  (this host)' if mctx.is_home else ''}")
    say(f"database    {home.db}")
    say(f"address     {home.address}")
    say(f"mirror      {info['mirror']} ({'none yet' if age is None else format_age(age) + ' old'})")
    if home.moving_to:
        say(f"moving to   {home.moving_to}")


@app.command("set-address")
def set_address(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help=ADDRESS_HELP, metavar="ADDRESS")],
    identity: Annotated[str | None, typer.Option(help=IDENTITY_HELP)] = None,
    known_hosts: Annotated[str | None, typer.Option("--known-hosts", help=KNOWN_HOSTS_HELP)] = None,
    jump: Annotated[str | None, typer.Option(help=JUMP_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Record how other hosts reach the home host (run it on the home host)."""
    from megarun.homehost.home import update_address

    home = update_address(context(ctx).area, address,
                          {"identity": identity or "", "known_hosts": known_hosts or "",
                           "jump": jump or ""})
    if as_json:
        print_document({"host": home.host, "address": home.address, "ssh": home.ssh})
    else:
        say(f"other hosts reach {home.host} as {home.address}")


@app.command("migrate")
def migrate(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option(
        "--force", help="Move even though jobs are queued or running, or were in the last "
        "30 min.")] = False,
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    identity: Annotated[str | None, typer.Option(help=IDENTITY_HELP)] = None,
    known_hosts: Annotated[str | None, typer.Option("--known-hosts", help=KNOWN_HOSTS_HELP)] = None,
    jump: Annotated[str | None, typer.Option(help=JUMP_HELP)] = None,
    db: Annotated[str | None, typer.Option(
        "--db", help="Where to put the working database here (default: a local disk: the "
        "area's .megarun when it is local, else $MEGARUN_DB_DIR, ~/.local/state, /var/tmp).",
        metavar="PATH")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Move the working database to this host (the area must be quiet for 30 min)."""
    from megarun.homehost.handoff import migrate_here

    moved = migrate_here(context(ctx).area, force, address,
                         {"identity": identity or "", "known_hosts": known_hosts or "",
                          "jump": jump or ""}, Path(db).expanduser().absolute() if db else None)
    if as_json:
        print_document(moved_json(moved))
    else:
        say(f"the working database moved from {moved.old_host} to {moved.new_host} "
            f"({moved.db}, {moved.size:,} bytes, {moved.seconds:.1f} s)")


@app.command("release", hidden=True)
def release(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The host taking the database.")],
    force: Annotated[bool, typer.Option("--force", help="Release a busy area too.")] = False,
) -> None:
    """The home host's half of `homehost migrate` (JSON lines on stdin and stdout)."""
    from megarun.errors import MegarunError
    from megarun.homehost.handoff import release as release_db

    def tell(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    try:
        switched = release_db(context(ctx).area, to, force, sys.stdin, tell)
    except MegarunError as exc:
        tell({"error": str(exc)})
        raise
    if not switched:
        raise typer.Exit(3)


def moved_json(moved: "Moved") -> dict[str, Any]:
    """`homehost migrate --json`."""
    return {"from": moved.old_host, "to": moved.new_host, "db": str(moved.db),
            "size": moved.size, "seconds": round(moved.seconds, 3)}

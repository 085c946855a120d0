"""`megarun app ...`: named command templates."""

from dataclasses import asdict
from typing import Annotated, Any

import typer

from megarun.campaign import app_registry as app_service
from megarun.cli.common import CSV_HELP, JSON_HELP, context, one_format
from megarun.cli.formats import print_document, render_listing
from megarun.cli.output import print_mapping, say
from megarun.config.apps import AppSpec
from megarun.config.requirements import parse_tag_pairs

app = typer.Typer(help="Apps: named command templates jobs are made from.", no_args_is_help=True)

_COLUMNS = ["name", "command", "params", "description"]


def app_json(spec: AppSpec) -> dict[str, Any]:
    """An app as `app ls --json` and `app show --json` print it: every field of its spec."""
    return asdict(spec)


def saved_json(saved: app_service.SavedApp) -> dict[str, Any]:
    """One app of `app sync --json`."""
    return {"name": saved.spec.name, "source": saved.spec.source, "result": saved.result,
            "stale": saved.stale}


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the app.")],
    command: Annotated[str, typer.Option(
        help="Jinja2 command template; {{ name }} values are shell-quoted.")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Parameter with a default (name=default) or required (name).",
        metavar="NAME[=DEFAULT]")] = None,
    description: Annotated[str, typer.Option(help="One line about the app.")] = "",
    retries: Annotated[int, typer.Option(help="Extra attempts for a failed job.", min=0)] = 0,
    require: Annotated[list[str] | None, typer.Option(
        "--require", help="Requirement key=value a site must satisfy (repeatable), e.g. "
        "os=linux, gpu=true, python='>=3.10'.", metavar="KEY=VALUE")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite an existing app.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Add an app from the command line."""
    params = app_service.parse_param_defaults(param or [])
    requirements = parse_tag_pairs(require or [], "--require")
    saved = app_service.add_app(context(ctx).db, name, command, params, description, retries,
                                replace, requirements)
    if as_json:
        print_document({"name": saved.spec.name, "result": saved.result, "stale": saved.stale,
                        "rerendered": saved.rerendered})
        return
    say(f"app {saved.spec.name!r} {'saved' if saved.result != 'unchanged' else 'unchanged'}")
    if saved.stale:
        say(f"{saved.stale} COMPLETED job(s) of the app are now STALE (see megarun job ls "
            f"--app {saved.spec.name} --state STALE; megarun job reset ID... reruns them)")


@app.command("sync")
def sync(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help=CSV_HELP)] = False,
) -> None:
    """Load every apps/*.toml of the area (all are checked before any is saved)."""
    one_format(as_json, as_csv)
    mctx = context(ctx)
    rows = [saved_json(saved) for saved in app_service.sync_apps(mctx.db, mctx.area.apps_dir)]
    render_listing(rows, ["name", "result", "stale", "source"], as_json, as_csv,
                   empty="no apps/*.toml in the area")


@app.command("ls")
def ls(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help=CSV_HELP)] = False,
) -> None:
    """List the area's apps."""
    one_format(as_json, as_csv)
    rows = [app_json(spec) for spec in app_service.list_apps(context(ctx).db)]
    render_listing(rows, _COLUMNS, as_json, as_csv, empty="no apps (add one: megarun app add, "
                   "or megarun app sync)")


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="App name.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show one app."""
    mctx = context(ctx)
    data = app_json(app_service.spec_from_row(app_service.get_app(mctx.db, name)))
    if as_json:
        print_document(data)
    else:
        print_mapping(data, title=f"app {name}")


@app.command("rm")
def rm(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="App name.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Remove an app no job refers to."""
    app_service.remove_app(context(ctx).db, name)
    if as_json:
        print_document({"removed": name})
    else:
        say(f"app {name!r} removed")

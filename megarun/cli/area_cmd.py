"""`megarun init` and `megarun demo`."""

from pathlib import Path
from typing import Annotated

import typer

from megarun.campaign.query import JobFilter, count_by_state
from megarun.cli.common import JSON_HELP
from megarun.cli.formats import print_document
from megarun.cli.launch_cmd import launch_with_progress, print_summary, summary_json
from megarun.cli.output import print_table, say
from megarun.homehost.areas import init_area


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        path: Annotated[Path, typer.Argument(help="Directory of the new area.")] = Path("."),
        keys: Annotated[str, typer.Option(
            help="Comma-separated target keys, e.g. os,arch.")] = "",
        name: Annotated[str | None, typer.Option(help="Area name (default: folder name).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    ) -> None:
        """Make a new area: megarun.toml, tests/, apps/ and .megarun/."""
        key_list = [k.strip() for k in keys.split(",") if k.strip()]
        root = init_area(path, key_list, name)
        if as_json:
            print_document({"area": str(root), "keys": key_list})
        else:
            say(f"area ready at {root}")

    @app.command("demo")
    def demo(
        path: Annotated[Path | None, typer.Option(
            help="Where to make the demo area (default: a new temporary folder).")] = None,
        jobs: Annotated[int, typer.Option(help="How many greeting jobs to run.")] = 24,
        as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    ) -> None:
        """Make a throwaway area with sample apps and jobs, run them locally, show a summary."""
        from megarun.campaign.demo import add_demo_jobs, make_demo_area
        from megarun.homehost.context import Context

        ctx = Context(area_override=str(make_demo_area(path)))
        try:
            add_demo_jobs(ctx.db, ctx.area, greetings=jobs)
            summary = launch_with_progress(ctx, "local", quiet=as_json)
            counts = [dict(row) for row in count_by_state(ctx.db, ctx.area, JobFilter())]
            if as_json:
                print_document({"area": str(ctx.area.root), "launch": summary_json(summary),
                                "jobs": counts})
            else:
                print_summary(summary)
                print_table(counts, ["state", "status", "count"], title="all jobs")
                say(f"demo area: {ctx.area.root}  (try: megarun --area "
                              f"{ctx.area.root} job ls)")
        finally:
            ctx.close()
        if summary.failed:
            raise typer.Exit(1)

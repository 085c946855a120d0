"""Small helpers shared by the command modules."""

from __future__ import annotations

import sys

import typer

from megarun.cli.commands import global_options
from megarun.core.quantities import MAX_SECONDS, parse_duration
from megarun.errors import UsageError
from megarun.homehost.context import Context
from megarun.homehost.mirror import reading_notice

JSON_HELP = "Print JSON on stdout instead of a table."
CSV_HELP = "Print CSV on stdout instead of a table."


def context(ctx: typer.Context) -> Context:
    """The megarun Context of this command line, made on first use from the global options
    (given before or after the subcommand) and closed when the command ends."""
    root = ctx.find_root()
    if not isinstance(root.obj, Context):
        options = global_options(ctx)
        root.obj = Context(area_override=options.area,
                           on_mirror=_mirror_note if options.verbose else None)
        root.call_on_close(root.obj.close)
    return root.obj


def _mirror_note(host: str, age: float | None) -> None:
    print(f"megarun: {reading_notice(host, age)}", file=sys.stderr)


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, str]:
    """`key=value` options into a dict; a malformed one is a one-line usage error."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {pair!r}: expected key=value")
        result[key] = value
    return result


def duration_option(value: str | None, option: str, bare: float,
                    longest: float = MAX_SECONDS) -> float | None:
    """Seconds of a duration option (docs/cli.md, "Durations and sizes"): `90s`, `1h30m`, or a
    bare number in the option's own unit `bare`; None when the option was not given."""
    return None if value is None else parse_duration(value, option, bare, longest=longest)


def one_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise UsageError("choose one of --json and --csv")

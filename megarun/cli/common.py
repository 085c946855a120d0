"""Small helpers shared by the command modules."""

from __future__ import annotations

import typer

from megarun.core.quantities import parse_duration
from megarun.errors import UsageError
from megarun.homehost.context import Context

JSON_HELP = "Print JSON on stdout instead of a table."
CSV_HELP = "Print CSV on stdout instead of a table."


def context(ctx: typer.Context) -> Context:
    """The megarun Context made by the root callback."""
    obj = ctx.find_root().obj
    if not isinstance(obj, Context):
        obj = Context()
        ctx.find_root().obj = obj
    return obj


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, str]:
    """`key=value` options into a dict; a malformed one is a one-line usage error."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {pair!r}: expected key=value")
        result[key] = value
    return result


def duration_option(value: str | None, option: str, bare: float) -> float | None:
    """Seconds of a duration option (docs/cli.md, "Durations and sizes"): `90s`, `1h30m`, or a
    bare number in the option's own unit `bare`; None when the option was not given."""
    return None if value is None else parse_duration(value, option, bare)


def one_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise UsageError("choose one of --json and --csv")

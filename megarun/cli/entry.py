"""The `megarun` executable: a fast path for --version, then the Typer app."""

from __future__ import annotations

import sys

from megarun import __version__


def main(argv: list[str] | None = None) -> int:
    """Run megarun with `argv` (default: the process arguments); return the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-V"]):
        # Answer without importing typer, rich or the database layer.
        print(f"megarun {__version__}")
        return 0
    from megarun.cli.app import run

    return run(args)


def console_main() -> None:
    sys.exit(main())

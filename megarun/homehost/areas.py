"""Making areas: `megarun init` and the demo's throwaway area."""

from __future__ import annotations

import json
from pathlib import Path

from megarun.config.area import AREA_FILE, AREA_TEMPLATE, STATE_DIR, validate_name
from megarun.core.files import private_dirs
from megarun.errors import UsageError

EXAMPLE_APP = """\
# An app is a named command. Parameters in {{ }} are shell-quoted when a job is created.
description = "Print a greeting"
command = "echo Hello, {{ who }}"

[params]
who = "world"
"""


def init_area(path: Path, keys: list[str], name: str | None = None) -> Path:
    """Create an area at `path`; refuses to overwrite an existing megarun.toml."""
    root = path.expanduser().resolve()
    config = root / AREA_FILE
    if config.exists():
        raise UsageError(f"{config} already exists: this is an area already")
    for key in keys:
        validate_name("key", key)
    area_name = validate_name("area", name or _safe_name(root.name))
    root.mkdir(parents=True, exist_ok=True)
    for folder in ("tests", "apps"):
        (root / folder).mkdir(exist_ok=True)
    private_dirs(root / STATE_DIR)
    example = root / "apps" / "hello.toml"
    if not example.exists():
        example.write_text(EXAMPLE_APP, encoding="utf-8")
    config.write_text(AREA_TEMPLATE.format(name=area_name, keys=json.dumps(keys)),
                      encoding="utf-8")
    return root


def _safe_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in text).strip("-.")
    return cleaned[:64] or "area"

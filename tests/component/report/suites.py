"""Small test suites for the report's tests: an area with a few tests run on the local site."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import megarun_process

CONFIG = ('name = "report"\nkeys = ["os"]\ndefault_site = "local"\n\n'
          "[launcher]\nretries = 0\nkill_grace = 1\nidle_exit = 3\n")


def write_test(area: Path, name: str, text: str) -> None:
    folder = area / "tests" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.toml").write_text(text)


def new_suite(area: Path, tests: dict[str, str], extra_config: str = "") -> Path:
    """An area at `area` (keys: os) with these tests (name -> test.toml)."""
    (area / "tests").mkdir(parents=True)
    (area / "megarun.toml").write_text(CONFIG + extra_config)
    for name, text in tests.items():
        write_test(area, name, text)
    return area


def ok(area: Path, *args: str, codes: tuple[int, ...] = (0,)) -> Any:
    """Run megarun; its JSON when --json was given, else the finished process."""
    result = megarun_process(area, *args, timeout=180)
    assert result.returncode in codes, result.stderr
    return json.loads(result.stdout) if "--json" in args else result

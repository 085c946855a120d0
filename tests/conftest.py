"""Shared fixtures: a real area in a temp dir, and ways to run the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from megarun.cli.entry import main
from megarun.homehost.areas import init_area
from megarun.homehost.context import Context

REPO = Path(__file__).resolve().parents[1]

# A suite started in the background by a shell without job control (`pytest &` in a script)
# inherits SIGINT ignored, and so would every process the tests start: the tests of Ctrl-C
# need it delivered. A Python handler here becomes the default again in each child.
signal.signal(signal.SIGINT, signal.default_int_handler)

# The suite has three floors, one folder each, marked so `pytest -m unit` (or component, or
# system) runs one: unit tests are pure (no database, no process), component tests use real
# SQLite files, fakes and subprocesses on this machine, system tests use the real services that
# scripts/system-services installs (sshd, Slurm, a network namespace, cron).
FLOORS = ("unit", "component", "system")


def floor_of(path: Path) -> str:
    top = path.relative_to(REPO / "tests").parts[0]
    if top not in FLOORS:
        raise pytest.UsageError(f"{path}: a test file lives under tests/unit, tests/component "
                                "or tests/system")
    return top


# Tests that share one machine-wide service run on one pytest-xdist worker, in order: the real
# Slurm (one /etc/slurm per machine; its restart test needs no other user) and the user's real
# crontab. The browser tests (their own Chromium each) form a group of their own. The other
# system tests form a further group: each worker starts its own sshd (free
# port, own network namespaces), so the two groups run side by side.
def shared_service_group(path: Path) -> str | None:
    parts = path.relative_to(REPO / "tests").parts
    if parts[0] != "system":
        return None
    if parts[-1] == "test_cron.py":
        return "crontab"
    if parts[-1].startswith("test_report_browser"):
        return "browser"
    return "slurm" if parts[-1].startswith("test_slurm") else "sshd"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups off the items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        item.add_marker(getattr(pytest.mark, floor_of(path)))
        group = shared_service_group(path)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True, scope="session")
def own_config_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """An empty XDG_CONFIG_HOME for the session (its CLI subprocesses too): the presets of
    whoever runs the tests (~/.config/megarun/presets/) never reach them."""
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def area(tmp_path: Path) -> Path:
    root = tmp_path / "area"
    init_area(root, keys=["os", "arch"])
    return root


@pytest.fixture
def ctx(area: Path) -> Iterator[Context]:
    context = Context(area_override=str(area))
    yield context
    context.close()


@pytest.fixture
def cli(area: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the CLI in this process against the test area."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(["--area", str(area), *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def megarun_process(area: Path, *args: str, timeout: float = 120,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a separate process (for concurrency, signals and real exits)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "megarun", "--area", str(area), *args],
                          capture_output=True, text=True, timeout=timeout, env=full_env,
                          check=False)


def spawn_megarun(area: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "megarun", "--area", str(area), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

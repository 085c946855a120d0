"""Every agent test runs twice: under this Python and under the oldest supported one (3.6)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.component.agent.harness import OLDEST, Site, find_oldest_python


@pytest.fixture(params=["current", "oldest"])
def python(request: pytest.FixtureRequest) -> str:
    if request.param == "current":
        return sys.executable
    oldest = find_oldest_python()
    if oldest is None:
        pytest.skip(f"AGENT ON PYTHON {OLDEST} NOT TESTED: no python{OLDEST} on this machine "
                    "(install it, e.g. with pyenv, to check the agent's oldest supported Python)")
    return oldest


@pytest.fixture
def site(tmp_path: Path, python: str) -> Iterator[Site]:
    made = Site(tmp_path / "site", python)
    yield made
    made.cleanup()

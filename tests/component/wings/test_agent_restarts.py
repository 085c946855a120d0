"""The launcher's bound on agent restarts: a growing wait, then a one-line environment error."""

from __future__ import annotations

import time

import pytest

from megarun.engine.agent_starts import (
    MAX_RESTARTS,
    RESTART_BACKOFF,
    RESTART_BACKOFF_MAX,
    AgentRestarts,
)
from megarun.errors import EnvironmentProblem


def test_each_death_doubles_the_wait_then_one_too_many_ends_the_launch() -> None:
    restarts = AgentRestarts("local")
    assert restarts.may_start()
    waits = []
    for n in range(MAX_RESTARTS):
        before = time.monotonic()
        restarts.died(f"a{n}", "boom", "/w/logs/agent-a.log")
        waits.append(restarts.not_before - before)
        assert not restarts.may_start()
    expected = [min(RESTART_BACKOFF_MAX, RESTART_BACKOFF * 2 ** n) for n in range(MAX_RESTARTS)]
    assert waits == pytest.approx(expected, abs=0.05)
    with pytest.raises(EnvironmentProblem) as failed:
        restarts.died("a9", "ValueError: no good", "/w/logs/agent-a9.log")
    message = str(failed.value)
    assert f"the agent died {MAX_RESTARTS + 1} times" in message
    assert "ValueError: no good" in message and "/w/logs/agent-a9.log" in message
    assert "\n" not in message


def test_deaths_older_than_the_window_are_forgotten() -> None:
    restarts = AgentRestarts("local")
    restarts.deaths = [time.monotonic() - 3600.0] * (MAX_RESTARTS + 3)  # an hour ago
    restarts.died("a1", "", "/w/logs/agent-a1.log")  # does not raise
    assert len(restarts.deaths) == 1

"""Crash injection for tests: `MEGARUN_FAULT=<step>` makes the process kill itself (SIGKILL)
when it reaches that step, so that tests prove a crash there loses nothing."""

from __future__ import annotations

import os
import signal

FAULT_ENV = "MEGARUN_FAULT"


def fault_point(name: str) -> None:
    """Die on the spot, like `kill -9`, when $MEGARUN_FAULT names this step."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)

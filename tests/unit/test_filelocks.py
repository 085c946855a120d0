"""The one "only one at a time" lock: held, or refused with the caller's own error."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest

from megarun.core.filelocks import hold_lock, hold_or_refuse
from megarun.errors import AlreadyRunning


def _held_elsewhere(path: Path) -> int:
    """Lock `path` through another open file, as another megarun would."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_hold_or_refuse_holds_a_free_lock_user_private(tmp_path: Path) -> None:
    path = tmp_path / "site.lock"
    old = os.umask(0)
    try:
        with hold_or_refuse(path, AlreadyRunning("busy")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            with hold_lock(path) as again:  # the lock is really taken meanwhile
                assert not again
    finally:
        os.umask(old)
    with hold_lock(path) as after:  # and released on the way out
        assert after


def test_hold_or_refuse_raises_the_callers_error_when_busy(tmp_path: Path) -> None:
    path = tmp_path / "site.lock"
    fd = _held_elsewhere(path)
    try:
        with pytest.raises(AlreadyRunning, match="a launcher is already running") as caught, \
                hold_or_refuse(path, AlreadyRunning("a launcher is already running", "wait")):
            pytest.fail("the body must not run without the lock")
        assert caught.value.hint == "wait"
    finally:
        os.close(fd)


def test_hold_or_refuse_releases_when_the_body_fails(tmp_path: Path) -> None:
    path = tmp_path / "site.lock"
    with pytest.raises(RuntimeError), hold_or_refuse(path, AlreadyRunning("busy")):
        raise RuntimeError("inside")
    with hold_lock(path) as held:
        assert held

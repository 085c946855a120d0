"""One open transport per key (a site) per process, closed at interpreter exit.

An SSH connection costs a handshake and an authentication; the engine asks for a site's
transport many times a cycle, so each process keeps one per site. Nothing here is SSH-specific:
any Transport (its `close()` must not raise its own transport errors) can be pooled.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Callable, Hashable
from typing import TypeVar, cast

from megarun.errors import EnvironmentProblem
from megarun.transport.base import Transport

TransportT = TypeVar("TransportT", bound=Transport)
_POOL: dict[Hashable, Transport] = {}
_POOL_LOCK = threading.Lock()


def get_transport(key: Hashable, factory: Callable[[], TransportT]) -> TransportT:
    """The pooled transport for `key` (e.g. "site:<name>"), made by `factory` on first use."""
    with _POOL_LOCK:
        found = _POOL.get(key)
        if found is None:
            found = factory()
            _POOL[key] = found
        return cast(TransportT, found)


def close_all() -> None:
    """Close every pooled transport (also run at interpreter exit)."""
    with _POOL_LOCK:
        transports = list(_POOL.values())
        _POOL.clear()
    for transport in transports:
        # A connection that already died cannot be closed cleanly: that is no error at exit.
        with contextlib.suppress(OSError, EOFError, EnvironmentProblem):
            transport.close()


atexit.register(close_all)

"""Commands over an SSH channel: feeding stdin, reading stdout and stderr, the exit status,
and a deadline; shared by SshTransport's run, stream and command_channel."""

from __future__ import annotations

import contextlib
import select
import threading
import time
from typing import BinaryIO

import paramiko

#: Bytes read from a channel or file at once.
CHUNK = 1 << 20
# Failures worth another try: refused, reset, timeout, DNS, a dropped handshake.
TRANSIENT = (OSError, EOFError, paramiko.SSHException)


class Expired(Exception):
    """The command's deadline passed."""


def collect_output(channel: paramiko.Channel, stdin: bytes | None,
                    deadline: float | None) -> tuple[bytes, bytes]:
    """Feed stdin (in a thread: the command may not read it) and read stdout and stderr."""
    _start_stdin(channel, stdin)
    out, err = bytearray(), bytearray()
    while True:
        while channel.recv_ready():
            out += channel.recv(CHUNK)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(CHUNK)
        if _drained(channel):
            return bytes(out), bytes(err)
        select.select([channel], [], [], min(_remaining(deadline), 1.0))


def copy_output(channel: paramiko.Channel, stdout: BinaryIO, stderr: BinaryIO) -> None:
    """Copy the command's output to `stdout`/`stderr` as it comes, until its end."""
    while True:
        _pump(channel, stdout, stderr)
        if _drained(channel):
            return
        select.select([channel], [], [], 1.0)


def _pump(channel: paramiko.Channel, stdout: BinaryIO, stderr: BinaryIO) -> None:
    """Copy what output has arrived, and flush it (a forwarded command reads as if local)."""
    moved = False
    while channel.recv_ready():
        stdout.write(channel.recv(CHUNK))
        moved = True
    while channel.recv_stderr_ready():
        stderr.write(channel.recv_stderr(CHUNK))
        moved = True
    if moved:
        stdout.flush()
        stderr.flush()


def _drained(channel: paramiko.Channel) -> bool:
    finished = bool(channel.eof_received or channel.closed)
    return finished and not channel.recv_ready() and not channel.recv_stderr_ready()


def exit_status(channel: paramiko.Channel, deadline: float | None) -> int | None:
    """The exit code; 255 if the command died without one (a signal); None if the link died."""
    while not channel.status_event.wait(min(_remaining(deadline), 1.0)):
        pass
    if channel.exit_status >= 0:
        return channel.exit_status
    transport = channel.get_transport()
    return 255 if transport.is_active() else None


def _remaining(deadline: float | None) -> float:
    if deadline is None:
        return 1.0
    left = deadline - time.monotonic()
    if left <= 0:
        raise Expired
    return left


def _start_stdin(channel: paramiko.Channel, stdin: bytes | None) -> None:
    if not stdin:
        channel.shutdown_write()
        return
    threading.Thread(target=_feed_stdin, args=(channel, stdin), daemon=True,
                     name="megarun-ssh-stdin").start()


def _feed_stdin(channel: paramiko.Channel, data: bytes) -> None:
    # The command may exit without reading its stdin: a failed send is not an error.
    with contextlib.suppress(*TRANSIENT):
        channel.sendall(data)
        channel.shutdown_write()


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).replace("[Errno None] ", "").split()) or type(exc).__name__
    return text[:200]

# ruff: noqa: UP006, UP032, UP035, UP045 - Python 3.6 runs this file on SSH sites
"""Reading a slice of a job's log in constant memory: the whole file, its first or last N lines,
or a bounded excerpt, copied in chunks (a 400 MB log never sits in memory).

Stdlib only and valid Python 3.6: `job logs` of a job on an SSH site sends this very source to
the site with the command (`python3 -c SOURCE ...`), so both sides slice a log the same way.
On the site, `main()` answers one of two requests:

    stream FOLDER HEAD TAIL [ORDER ONLY]          every step log's selected bytes (HEAD/TAIL:
                                                  lines, -1 for none), each after a header line
                                                  [name, path, size, length]
    excerpts FOLDER HEAD TAIL LIMIT [ORDER ONLY]  JSON: [[name, path, size, truncated, text], ...]

    tails PATHS LINES LIMIT                       JSON: the last LINES lines (LIMIT bytes at
                                                  most) of each file of PATHS (a JSON list),
                                                  null for a missing one

ORDER is a JSON list of the job's step names (their logs come first, in that order), ONLY is 1
for those steps' logs alone (`job logs --step`).
"""

import glob
import json
import os
import sys
from typing import BinaryIO, List, Optional, Tuple

CHUNK = 1 << 16
NEWLINE = b"\n"


def step_logs(folder: str, order: Optional[List[str]] = None,
              only: bool = False) -> List[Tuple[str, str, int]]:
    """(name, path, size) of a job dir's step logs: each step of `order` in turn (its .out,
    then its .err), then any other .out and .err (sorted); with `only`, the steps of `order`
    alone. Without `order`: every .out, then every .err, sorted."""
    found = []
    seen = set()
    for step in order or []:
        for suffix in (".out", ".err"):
            path = os.path.join(folder, step + suffix)
            seen.add(path)
            if os.path.isfile(path):
                found.append((step + suffix, path, os.path.getsize(path)))
    if only:
        return found
    for pattern in ("*.out", "*.err"):
        for path in sorted(glob.glob(os.path.join(glob.escape(folder), pattern))):
            if path not in seen and os.path.isfile(path):
                found.append((os.path.basename(path), path, os.path.getsize(path)))
    return found


def head_end(handle: BinaryIO, lines: int, size: int) -> int:
    """The offset just after the `lines`-th newline (the file's end when it has fewer)."""
    if lines <= 0:
        return 0
    handle.seek(0)
    offset, seen = 0, 0
    while True:
        chunk = handle.read(CHUNK)
        if not chunk:
            return min(offset, size)
        start = 0
        while True:
            found = chunk.find(NEWLINE, start)
            if found < 0:
                break
            seen += 1
            if seen == lines:
                return offset + found + 1
            start = found + 1
        offset += len(chunk)


def tail_start(handle: BinaryIO, lines: int, size: int) -> int:
    """The offset where the last `lines` lines begin (a last line without a newline counts)."""
    if lines <= 0:
        return size
    end = size
    if size:
        handle.seek(size - 1)
        if handle.read(1) == NEWLINE:
            end = size - 1  # the final newline ends the last line; it does not start one
    seen = 0
    position = end
    while position > 0:
        step = min(CHUNK, position)
        position -= step
        handle.seek(position)
        chunk = handle.read(step)
        cut = len(chunk)
        while True:
            found = chunk.rfind(NEWLINE, 0, cut)
            if found < 0:
                break
            seen += 1
            if seen == lines:
                return position + found + 1
            cut = found
    return 0


def select(handle: BinaryIO, size: int, head: Optional[int],
           tail: Optional[int]) -> Tuple[int, int]:
    """The byte range [start, end) that --head and/or --tail pick (both: the last lines of
    the first ones)."""
    end = head_end(handle, head, size) if head is not None else size
    start = tail_start(handle, tail, end) if tail is not None else 0
    return start, end


def copy_range(handle: BinaryIO, out: BinaryIO, start: int, end: int) -> int:
    """Copy bytes [start, end) in chunks; return how many could be read (fewer when the file
    was cut meanwhile)."""
    handle.seek(start)
    left = end - start
    while left > 0:
        chunk = handle.read(min(CHUNK, left))
        if not chunk:
            break
        out.write(chunk)
        left -= len(chunk)
    return end - start - left


def stream(folder: str, out: BinaryIO, head: Optional[int], tail: Optional[int],
           order: Optional[List[str]] = None, only: bool = False) -> None:
    """Every step log's selected bytes (step_logs decides which, in which order), each after
    a JSON header line [name, path, size, length] (the site's answer to `job logs`: one round
    trip for all the logs)."""
    for name, path, size in step_logs(folder, order, only):
        with open(path, "rb") as handle:
            start, end = select(handle, size, head, tail)
            header = json.dumps([name, path, size, end - start]) + "\n"
            out.write(header.encode("utf-8"))
            copied = copy_range(handle, out, start, end)
        out.write(NEWLINE * (end - start - copied))  # a log cut while read: keep the framing


def excerpt(handle: BinaryIO, size: int, head: Optional[int], tail: Optional[int],
            limit: int) -> Tuple[bool, str]:
    """(truncated, text) of the selected range, cut to its last `limit` bytes (its first ones
    for --head alone); undecodable bytes become U+FFFD."""
    start, end = select(handle, size, head, tail)
    keep_start = head is not None and tail is None
    cut = end - start > limit
    if cut and keep_start:
        end = start + limit
    elif cut:
        start = end - limit
    handle.seek(start)
    data = handle.read(end - start)
    if cut and keep_start and data.rfind(NEWLINE) >= 0:
        end = start + data.rfind(NEWLINE) + 1  # whole lines only, when there are any
        data = data[:end - start]
    elif cut and data.find(NEWLINE) >= 0:
        start += data.find(NEWLINE) + 1
        data = data[data.find(NEWLINE) + 1:]
    return (start > 0 or end < size), data.decode("utf-8", "replace")


def excerpts(folder: str, head: Optional[int], tail: Optional[int], limit: int,
             order: Optional[List[str]] = None,
             only: bool = False) -> List[Tuple[str, str, int, bool, str]]:
    """(name, path, size, truncated, text) of a job dir's step logs (see step_logs)."""
    found = []
    for name, path, size in step_logs(folder, order, only):
        with open(path, "rb") as handle:
            cut, text = excerpt(handle, size, head, tail, limit)
        found.append((name, path, size, cut, text))
    return found


def tails(paths: List[str], lines: int, limit: int) -> List[Optional[str]]:
    """The last `lines` lines (at most `limit` bytes) of each file, None for a file that is
    not there: what the JUnit export shows of a failing step's logs."""
    found = []  # type: List[Optional[str]]
    for path in paths:
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                found.append(excerpt(handle, size, None, lines, limit)[1])
        except OSError:
            found.append(None)
    return found


def _lines(arg: str) -> Optional[int]:
    value = int(arg)
    return None if value < 0 else value


def _order(args: List[str]) -> Tuple[Optional[List[str]], bool]:
    """The optional ORDER (a JSON list of step names) and ONLY (1: those steps alone)."""
    if not args:
        return None, False
    return [str(name) for name in json.loads(args[0])], len(args) > 1 and args[1] == "1"


def main() -> int:
    """The site's half: one request from sys.argv (see the module docstring)."""
    kind, args = sys.argv[1], sys.argv[2:]
    out = sys.stdout.buffer
    if kind == "stream":
        order, only = _order(args[3:])
        stream(args[0], out, _lines(args[1]), _lines(args[2]), order, only)
    elif kind == "excerpts":
        order, only = _order(args[4:])
        found = excerpts(args[0], _lines(args[1]), _lines(args[2]), int(args[3]), order, only)
        out.write(json.dumps(found).encode("utf-8"))
    elif kind == "tails":
        found_tails = tails(json.loads(args[0]), int(args[1]), int(args[2]))
        out.write(json.dumps(found_tails).encode("utf-8"))
    else:
        sys.stderr.write("unknown request {!r}\n".format(kind))
        return 2
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

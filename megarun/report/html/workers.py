"""Many pages rendered and written by worker processes, one per CPU (a run's item pages).

A run of 10,000 items has 10,000 item pages; rendering them is CPU work that splits cleanly.
The items are cut into one contiguous share per worker; each worker is a fork of the build
(the templates, the last manifest and the items are already in its memory), closes what it
inherited but the database's own files, opens its own read-only connection to the database
(never the parent's; no fork happens while the build is in a transaction, whose locks would be
copied as held), renders its share, writes each page
whose HTML changed (`site.put_page`: the same rule as the build's own) and reports one line
per page on a pipe. The build records the pages as they come; it alone writes the manifest,
last, so a build killed at any point leaves the last complete manifest and no half page.

Workers are used only when they pay (at least WORKERS_MIN_PAGES pages each), never when the
process runs threads that are not fork-safe (a fork copies only the calling thread: an SSH
transport's locks would be left held; the mirror keeper's thread is safe, see
homehost/mirror.py), and never more than MAX_WORKERS.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import unquote

from peewee import SqliteDatabase

from megarun.errors import EnvironmentProblem, MegarunError
from megarun.homehost.mirror import KEEPER_THREAD
from megarun.report.html.page import Page
from megarun.report.html.site import Manifest, Written, put_page

#: A worker is started for every this many pages (one process does fewer on its own).
WORKERS_MIN_PAGES = 1000
#: At most this many workers, whatever the number of CPUs.
MAX_WORKERS = 4

T = TypeVar("T")

#: Render the pages of a share of the items, reading through the given database.
Produce = Callable[[SqliteDatabase, Sequence[T]], Iterator[Page]]


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fork_safe() -> bool:
    """True when every other thread of this process is one a fork may copy."""
    main = threading.main_thread()
    return all(thread is main or thread.name == KEEPER_THREAD
               for thread in threading.enumerate())


def worker_count(pages: int, db: SqliteDatabase | None = None) -> int:
    """How many workers `pages` pages get: 1 means none (the build renders them itself). None
    while `db` is in a transaction (its locks would be copied into the workers as held)."""
    if threading.current_thread() is not threading.main_thread() or not fork_safe():
        return 1
    if db is not None and db.in_transaction():
        return 1
    return max(1, min(MAX_WORKERS, usable_cpus(), pages // WORKERS_MIN_PAGES))


def shares(items: Sequence[T], count: int) -> list[Sequence[T]]:
    """`items` cut into `count` contiguous shares of (nearly) equal size."""
    size, extra = divmod(len(items), count)
    cuts = [0]
    for k in range(count):
        cuts.append(cuts[-1] + size + (1 if k < extra else 0))
    return [items[cuts[k]:cuts[k + 1]] for k in range(count)]


def pages_by_workers(db: SqliteDatabase, items: Sequence[T], produce: Produce[T], out: Path,
                     old: Manifest, count: int) -> Iterator[Written]:
    """The pages `produce` makes of `items`, rendered and written by `count` workers."""
    running: dict[int, int] = {}  # read end -> pid of a worker not reaped yet
    try:
        for share in shares(items, count):
            read_end, pid = _start(db, share, produce, out, old)
            running[read_end] = pid
        yield from _results(running)
    finally:
        for read_end, pid in running.items():
            _stop(pid)
            os.close(read_end)


def _start(db: SqliteDatabase, share: Sequence[T], produce: Produce[T], out: Path,
           old: Manifest) -> tuple[int, int]:
    try:
        read_end, write_end = os.pipe()
    except OSError as exc:
        raise EnvironmentProblem(f"cannot start a report worker: {os.strerror(exc.errno or 0)}"
                                 ) from None
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns of a fork beside threads: see above
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        raise EnvironmentProblem(f"cannot start a report worker: {os.strerror(exc.errno or 0)}"
                                 ) from None
    if pid == 0:  # the worker: whatever happens, it leaves here and never returns
        try:
            _close_inherited(write_end, _database_file(db))
            _work(db, share, produce, out, old, write_end)
        finally:
            os._exit(1)
    os.close(write_end)
    return read_end, pid


def _database_file(db: SqliteDatabase) -> str:
    """The path of the file `db` opened (a `file:` URI's path for a snapshot)."""
    name = str(db.database)
    if name.startswith("file:"):
        name = unquote(name[len("file:"):].split("?", 1)[0])
    return os.path.realpath(name)


def _close_inherited(pipe: int, database: str) -> None:
    """Close what the worker inherited but its pipe, the standard streams and the database's
    own files: no copy of the build's lock files stays open in it (a lock would outlive a build
    killed before its workers ended). The database's descriptors stay: SQLite's bookkeeping,
    copied with the process, refers to them. Where /proc is missing, nothing is closed."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    keep = {database, f"{database}-wal", f"{database}-shm", f"{database}-journal"}
    for name in names:
        fd = int(name)
        if fd < 3 or fd == pipe:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed already
        if target not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _work(db: SqliteDatabase, share: Sequence[T], produce: Produce[T], out: Path, old: Manifest,
          write_end: int) -> None:
    code = 1
    try:
        with os.fdopen(write_end, "w", encoding="utf-8", errors="surrogateescape") as pipe:
            code = _render_share(_reopen(db), share, produce, out, old, pipe)
    finally:
        # No cleanup of the parent's objects (its database connection above all): leave now.
        os._exit(code)


def _render_share(db: SqliteDatabase, share: Sequence[T], produce: Produce[T], out: Path,
                  old: Manifest, pipe: IO[str]) -> int:
    made: set[Path] = set()
    try:
        for page in produce(db, share):
            done = put_page(out, page, old, made)
            pipe.write(f"W\t{done.digest}\t{int(done.changed)}\t{done.path}\n")
        pipe.write("D\n")
        pipe.flush()
        return 0
    except MegarunError as exc:
        pipe.write(f"E\t{_one_line(exc.message)}\n")
    except Exception:  # noqa: BLE001 - a bug: its last line reaches the build, which fails with it
        pipe.write(f"B\t{_one_line(traceback.format_exc().strip().splitlines()[-1])}\n")
    pipe.flush()
    return 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reopen(db: SqliteDatabase) -> SqliteDatabase:
    """A read-only connection of this process to the database `db` is open on."""
    params: dict[str, Any] = dict(db.connect_params)
    fresh = SqliteDatabase(db.database, pragmas=(("query_only", 1),), **params)
    fresh.connect()
    return fresh


def _results(running: dict[int, int]) -> Iterator[Written]:
    """Each page the workers report, as they report it; raises the first worker's failure.
    A worker that ended is reaped, closed and taken out of `running`."""
    with selectors.DefaultSelector() as selector:
        left: dict[int, bytes] = {}  # a line's start read so far
        done: set[int] = set()  # the workers that said they were done
        for read_end in running:
            selector.register(read_end, selectors.EVENT_READ)
            left[read_end] = b""
        while running:
            for key, _ in selector.select():
                read_end = int(key.fd)
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    selector.unregister(read_end)
                    pid = running.pop(read_end)
                    os.close(read_end)
                    _check_ended(pid, read_end in done and not left[read_end])
                    continue
                lines = (left[read_end] + chunk).split(b"\n")
                left[read_end] = lines.pop()
                for line in lines:
                    page = _parse(line)
                    if page is None:
                        done.add(read_end)
                    else:
                        yield page


def _parse(line: bytes) -> Written | None:
    """One line of a worker: a page it put (W), done (D: None), or its failure (E, B)."""
    text = line.decode("utf-8", "surrogateescape")
    kind, _, rest = text.partition("\t")
    if kind == "W":
        digest, changed, path = rest.split("\t", 2)
        return Written(path, digest, changed == "1")
    if kind == "D":
        return None
    if kind == "E":
        raise EnvironmentProblem(rest)
    raise RuntimeError(f"a report worker failed: {rest}")


def _check_ended(pid: int, said_done: bool) -> None:
    """A worker closed its pipe: it must have said it was done, and exit 0."""
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if said_done and code == 0:
        return
    how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    raise EnvironmentProblem(f"a report worker stopped before its pages were written ({how})",
                             "run megarun report again; pages already written are kept")


def _stop(pid: int) -> None:
    """Make sure a worker is gone (the build failed or was interrupted): stop it, reap it."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        return

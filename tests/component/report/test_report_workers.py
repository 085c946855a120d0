"""A run's item pages rendered by forked workers: the same pages as one process makes, a
worker's failure (an error, a kill) fails the build with one line and leaves the last
manifest, and no fork beside a thread that is not fork-safe."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from megarun.errors import EnvironmentProblem
from megarun.homehost.context import Context
from megarun.report.html import workers
from megarun.report.html.site import MANIFEST, load_manifest
from tests.component.report.suites import build_in_process, items_run

ITEMS = 12


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return items_run(tmp_path_factory.mktemp("workers") / "area", ITEMS,
                     "echo item $N; echo oops >&2")


@pytest.fixture
def forking(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Workers for every 4 pages (3 for the run), fork-safe here; the pids of those started."""
    monkeypatch.setattr(workers, "WORKERS_MIN_PAGES", 4)
    monkeypatch.setattr(workers, "fork_safe", lambda: True)  # pytest's own threads are idle
    monkeypatch.setattr(workers, "usable_cpus", lambda: 8)
    started: list[int] = []
    real = workers._start

    def start(*args: Any) -> tuple[int, int]:
        read_end, pid = real(*args)
        started.append(pid)
        return read_end, pid

    monkeypatch.setattr(workers, "_start", start)
    return started


def build(area: Path, out: Path) -> Any:
    return build_in_process(area, out)


def pages_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.html")}


def test_workers_write_the_pages_one_process_writes(area: Path, tmp_path: Path,
                                                     forking: list[int]) -> None:
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(workers, "MAX_WORKERS", 1)
        build(area, alone)
    assert forking == []
    result = build(area, shared)
    assert len(forking) == 3
    assert len(result.written) == len(pages_of(shared)) > ITEMS
    alone_pages = pages_of(alone)
    # the same HTML, but for the log links: relative to each report's own folder
    assert {path: html.replace(b"/alone/", b"/") for path, html in alone_pages.items()} == {
        path: html.replace(b"/shared/", b"/") for path, html in pages_of(shared).items()}
    again = build(area, shared)
    assert again.written == [] and len(forking) == 3  # kept unread: no worker needed


def test_a_worker_s_error_fails_the_build_and_keeps_the_last_manifest(
        area: Path, tmp_path: Path, forking: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report"
    build(area, out)
    before = (out / MANIFEST).read_bytes()
    real = workers.put_page

    def full_disk(out_: Path, page: Any, *args: Any) -> Any:  # run by the workers alone
        if page.path.endswith("/7.html"):
            raise EnvironmentProblem(f"cannot write the report's page {page.path}: disk full")
        return real(out_, page, *args)

    monkeypatch.setattr(workers, "put_page", full_disk)
    with pytest.raises(EnvironmentProblem, match=r"^cannot write the report's page runs/.*: "
                                                 r"disk full$"):
        build(area, tmp_path / "other")
    assert (out / MANIFEST).read_bytes() == before
    assert load_manifest(tmp_path / "other") is None  # no manifest: nothing claimed written
    assert not _alive(forking)


def test_a_killed_worker_fails_the_build_with_one_line(
        area: Path, tmp_path: Path, forking: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    real = workers._render_share

    def killed(*args: Any) -> int:  # run by the workers alone
        os.kill(os.getpid(), signal.SIGKILL)
        return real(*args)

    monkeypatch.setattr(workers, "_render_share", killed)
    with pytest.raises(EnvironmentProblem, match=r"stopped before its pages were written "
                                                 r"\(killed by signal 9\)"):
        build(area, tmp_path / "report")
    assert load_manifest(tmp_path / "report") is None
    assert not _alive(forking)


def _alive(pids: list[int]) -> list[int]:
    """The pids that are still our children (a reaped worker is not)."""
    alive = []
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
            alive.append(pid)
        except ChildProcessError:
            continue
    return alive


def test_no_fork_beside_a_thread_that_is_not_fork_safe() -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait, name="paramiko-transport")
    other.start()
    try:
        assert not workers.fork_safe()
        assert workers.worker_count(100_000) == 1
    finally:
        release.set()
        other.join()
    assert workers.fork_safe()
    assert workers.worker_count(100_000) == min(workers.MAX_WORKERS, workers.usable_cpus())


def test_shares_are_contiguous_and_cover_every_item() -> None:
    parts = workers.shares(list(range(10)), 3)
    assert [list(p) for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_a_worker_holds_none_of_the_build_s_descriptors(
        area: Path, tmp_path: Path, forking: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "some.lock"
    seen = tmp_path / "seen"
    real = workers._render_share

    def looking(*args: Any) -> int:  # run by the workers alone
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own descriptor is gone
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        (seen / str(os.getpid())).write_text("\n".join(targets))
        return real(*args)

    monkeypatch.setattr(workers, "_render_share", looking)
    seen.mkdir()
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        build(area, tmp_path / "report")
    found = [(seen / name).read_text().splitlines() for name in os.listdir(seen)]
    assert len(found) == 3
    for targets in found:
        assert str(lock) not in targets
        assert any(t.startswith("pipe:") for t in targets)


def test_no_fork_inside_a_transaction(area: Path, forking: list[int]) -> None:
    ctx = Context(area_override=str(area))
    try:
        assert workers.worker_count(100, ctx.db) > 1
        with ctx.db.atomic():
            ctx.db.execute_sql("SELECT count(*) FROM job").fetchone()
            assert workers.worker_count(100, ctx.db) == 1
    finally:
        ctx.close()


def test_a_worker_that_cannot_start_is_one_line(area: Path, tmp_path: Path, forking: list[int],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(workers.os, "fork", no_fork)
    with pytest.raises(EnvironmentProblem, match=r"^cannot start a report worker: Resource "
                                                 r"temporarily unavailable$"):
        build(area, tmp_path / "report")
    assert load_manifest(tmp_path / "report") is None

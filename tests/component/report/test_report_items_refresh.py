"""Item pages drawn again only when their own data changed: one job's new event draws its page
alone (not the run's other item pages), and a running step's growing log draws its page at the
next refresh, with no event in between."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from megarun.core.states import JobState
from megarun.report.html import runs, urls
from tests.component.report.suites import build_in_process, items_run

ITEMS = 6


@pytest.fixture
def area(tmp_path: Path) -> Path:
    return items_run(tmp_path / "area", ITEMS, "echo item $N")


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the pages the run producer draws."""
    paths: list[str] = []
    real = runs.render

    def counted(path: str, *args: Any, **kwargs: Any) -> Any:
        paths.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runs, "render", counted)
    return paths


def build(area: Path) -> Any:
    return build_in_process(area, area / "report")


def database(area: Path) -> sqlite3.Connection:
    return sqlite3.connect(area / ".megarun" / "work.db")


def test_a_new_event_of_one_job_draws_its_item_page_alone(area: Path,
                                                           drawn: list[str]) -> None:
    build(area)
    assert len(drawn) == 1 + ITEMS
    drawn.clear()
    assert build(area).written == [] and drawn == []
    with database(area) as db:
        job = db.execute("SELECT id FROM job ORDER BY id LIMIT 1 OFFSET 2").fetchone()[0]
        db.execute("UPDATE job SET message = 'looked at again' WHERE id = ?", (job,))
        db.execute("INSERT INTO event (job, time, from_state, to_state, status, attempt, "
                   "message) SELECT id, ended + 1, state, state, status, attempt, "
                   "'looked at again' FROM job WHERE id = ?", (job,))
    result = build(area)
    assert drawn == [urls.run_page(1), urls.item_page(1, job)]
    assert urls.item_page(1, job) in result.written
    assert "looked at again" in (area / "report" / urls.item_page(1, job)).read_text()


def test_a_running_step_s_growing_log_is_shown_at_the_next_refresh(area: Path,
                                                                    drawn: list[str]) -> None:
    with database(area) as db:
        job, workdir = db.execute("SELECT id, workdir FROM job ORDER BY id LIMIT 1").fetchone()
        db.execute("UPDATE job SET state = ?, ended = NULL WHERE id = ?",
                   (JobState.RUNNING.value, job))
    log = Path(workdir) / "step1.out"
    log.write_text("first line\n")
    build(area)
    page = area / "report" / urls.item_page(1, job)
    assert "first line" in page.read_text()
    drawn.clear()
    assert build(area).written == [] and drawn == []  # nothing grew: nothing drawn
    with log.open("a") as out:
        out.write("a second line, written with no event\n")
    result = build(area)
    assert urls.item_page(1, job) in result.written
    assert drawn == [urls.run_page(1), urls.item_page(1, job)]
    assert "a second line, written with no event" in page.read_text()

"""The report kept fresh: a second build with nothing new writes nothing, one changed job
rewrites only its run's pages it shows (and the index and history), an unchanged run's pages
are kept without being read, and `sync` refreshes a report that is there (and makes none)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from megarun.report.html import urls
from megarun.report.html.site import load_manifest
from tests.component.report.suites import broken_links, new_suite, ok, text_of
from tests.component.workflows.test_run_semantics import hold_until, wait_for
from tests.conftest import megarun_process, spawn_megarun

TARGET = ("--target", "linux")


@pytest.fixture
def two_runs(tmp_path: Path) -> Path:
    area = new_suite(tmp_path / "area", {"unit": (
        "steps = [\"sh -c 'echo $N; test $N != 2'\"]\n[items]\nN = [1, 2, 3]\n")})
    for runname in ("r1", "r2"):
        ok(area, "run", *TARGET, "--runname", runname, "--quiet", codes=(1,))
    return area


def ids(area: Path, runname: str) -> dict[str, int]:
    data = ok(area, "status", *TARGET, "--runname", runname, "--json", codes=(1,))
    return {i["item"]: i["id"] for i in data["items"]}


def test_nothing_new_writes_nothing_and_one_changed_job_rewrites_only_what_shows_it(
        two_runs: Path) -> None:
    first = ok(two_runs, "report", "--json")
    # the index, 2 run pages, 2 x 3 item pages, the history, the campaign and batch views
    assert len(first["written"]) == 1 + 2 + 2 * 3 + 1 + 2
    again = ok(two_runs, "report", "--json")
    assert again["written"] == [] and again["removed"] == []
    r2 = ids(two_runs, "r2")
    ok(two_runs, "rerun", *TARGET, "--runname", "r2", "--quiet", codes=(1,))  # unit/2 again
    changed = ok(two_runs, "report", "--json")
    assert sorted(changed["written"]) == sorted(
        ["index.html", urls.history_page("linux"), urls.run_page(2), urls.item_page(2, r2["2"])])
    manifest = load_manifest(two_runs / "report")
    assert manifest is not None and {"run:1", "run:2", "index"} <= set(manifest.fingerprints)
    assert changed["removed"] == []


def test_pages_of_an_unchanged_run_are_kept_unread_and_a_lost_one_is_written_again(
        two_runs: Path) -> None:
    ok(two_runs, "report", "--json")
    run1_item = two_runs / "report" / urls.item_page(1, ids(two_runs, "r1")["1"])
    run1_item.write_text("tampered")  # kept: its run's data did not change, it is not read
    assert ok(two_runs, "report", "--json")["written"] == []
    assert run1_item.read_text() == "tampered"
    run1_item.unlink()  # a page gone by hand is written again with its run's other pages
    again = ok(two_runs, "report", "--json")
    assert urls.item_page(1, ids(two_runs, "r1")["1"]) in again["written"]
    assert run1_item.read_text().startswith("<!DOCTYPE html>")


def test_sync_refreshes_a_report_that_is_there_and_makes_none(two_runs: Path) -> None:
    rows = ok(two_runs, "sync", "--json")
    assert all("report" not in row for row in rows) and not (two_runs / "report").exists()
    ok(two_runs, "report", "--history", "1", "--json")
    quiet = ok(two_runs, "sync", "--json")
    assert quiet[-1]["report"]["written"] == [] and quiet[-1]["site"] is None
    ok(two_runs, "rerun", *TARGET, "--runname", "r1", "--quiet", codes=(1,))
    refreshed = ok(two_runs, "sync", "--json")[-1]["report"]
    assert urls.run_page(1) in refreshed["written"]
    # refreshed with the options it was made with: the history of one run is still that
    history = (two_runs / "report" / urls.history_page("linux")).read_text()
    assert "The last 1 run(s)" in history
    text = ok(two_runs, "sync")
    assert "report: 0 page(s) written" in text.stderr


def test_a_report_that_cannot_be_written_does_not_fail_the_sync(two_runs: Path) -> None:
    ok(two_runs, "report", "--json")
    ok(two_runs, "rerun", *TARGET, "--runname", "r1", "--quiet", codes=(1,))
    page = two_runs / "report" / urls.run_page(1)
    page.unlink()
    page.mkdir()  # the page's place is taken: it cannot be written
    synced = ok(two_runs, "sync", "--json")
    assert [row["site"] for row in synced] == ["local"] and synced[0]["ok"]
    again = ok(two_runs, "sync")
    assert "report not refreshed: cannot write the report's page" in again.stderr
    assert "runs/1/index.html: Is a directory" in again.stderr
    failed = megarun_process(two_runs, "report")
    assert failed.returncode == 3 and len(failed.stderr.strip().splitlines()) == 1


def test_runs_moved_to_another_area_keep_the_site_whole(two_runs: Path) -> None:
    with sqlite3.connect(two_runs / ".megarun" / "work.db") as db:
        db.execute("UPDATE run SET moved_to = '/elsewhere/area'")
        db.execute("DELETE FROM job")  # a moved run's jobs live in its new area
    ok(two_runs, "report", "--json")
    site = two_runs / "report"
    assert "moved to /elsewhere/area" in text_of((site / "index.html").read_text())
    assert (site / urls.history_page("linux")).is_file()
    assert broken_links(site) == []


def test_a_run_still_going_reads_running_and_its_end_is_written_at_the_next_refresh(
        tmp_path: Path) -> None:
    flag = tmp_path / "go"
    area = new_suite(tmp_path / "area", {
        "quick": 'steps = ["true"]\n',
        "slow": f'steps = ["{hold_until(flag)}"]\n'})
    process = spawn_megarun(area, "run", *TARGET, "--runname", "r1", "--quiet")
    try:
        wait_for(lambda: "RUNNING" in megarun_process(
            area, "status", *TARGET, "--runname", "r1", "--json").stdout, "slow running")
        ok(area, "report", "--json")
        index = text_of((area / "report" / "index.html").read_text())
        assert "r1 ● RUNNING" in index and "✓ PASS" not in index.split("r1 ● RUNNING")[1][:20]
        run_page = text_of((area / "report" / urls.run_page(1)).read_text())
        assert "● RUNNING" in run_page and "✓ PASS" in run_page  # quick ended, slow not
    finally:
        flag.touch()
        process.communicate(timeout=120)
    after = ok(area, "report", "--json")
    assert {"index.html", urls.run_page(1)} <= set(after["written"])
    assert "r1 ✓ PASS" in text_of((area / "report" / "index.html").read_text())

"""The completed-runs archive on real database files: reduce, restore, selection, conflicts,
recovery of interrupted moves, --full-db views and the auto-reduce rule."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from bench.archive import populate
from megarun.archive import completed as archive
from megarun.archive.completed import apply_rule, recover, reduce_runs, restore_runs
from megarun.archive.runselect import RunSelection
from megarun.cli.archive_cmd import run_store
from megarun.config.area import load_area_config
from megarun.db.connection import prepare_database_file
from megarun.db.fulldb import attach_full
from megarun.errors import ConfigError
from megarun.homehost.context import Context
from megarun.homehost.home import working_db_path

OLD = time.time() - 40 * 86400
EVERY = RunSelection(older_than=0)


# -- helpers shared with the fault tests ------------------------------------------------------
def db_files(area: Path) -> list[Path]:
    """The working db and the archive (when there is one) of the area at `area`."""
    from megarun.config.area import locate_area

    found = locate_area(str(area))
    return [p for p in (working_db_path(found), found.completed_db_path) if p.exists()]


def _rows(db: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cursor = db.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def contents(path: Path) -> dict[int, dict[str, Any]]:
    """Every run in the database file with all it owns, ids of events and run tests left out
    (they are fresh in the destination) but their order kept."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    runs: dict[int, dict[str, Any]] = {}
    for run in _rows(db, "SELECT * FROM run"):
        jobs = {j["id"]: j for j in _rows(db, "SELECT * FROM job WHERE run_id = ?", (run["id"],))}
        marks = ",".join(str(i) for i in jobs) or "NULL"
        events = [{k: v for k, v in e.items() if k != "id"} for e in _rows(
            db, f"SELECT * FROM event WHERE job IN ({marks}) ORDER BY id")]
        runs[run["id"]] = {
            "run": run, "jobs": jobs, "events": events,
            "tags": sorted(db.execute(f"SELECT job_id, key, value FROM job_tag WHERE job_id IN "
                                      f"({marks})").fetchall()),
            "deps": sorted(db.execute(f"SELECT parent_id, child_id, mode FROM job_dependency "
                                      f"WHERE child_id IN ({marks})").fetchall()),
            "tests": sorted(db.execute("SELECT test, definition_hash, definition FROM run_test "
                                       "WHERE run_id = ?", (run["id"],)).fetchall()),
        }
    db.close()
    return runs


def placement(area: Path) -> tuple[dict[int, dict[str, Any]], dict[str, set[int]]]:
    """All runs of both databases, and which file holds which; a run in both fails."""
    merged: dict[int, dict[str, Any]] = {}
    where: dict[str, set[int]] = {}
    for path in db_files(area):
        found = contents(path)
        both = set(found) & set(merged)
        assert not both, f"runs {sorted(both)} are in both databases"
        merged.update(found)
        where["archive" if path.name == "completed-runs.db" else "work"] = set(found)
    return merged, where


def assert_intact(area: Path) -> None:
    """integrity_check on every database file, and no move intent left over."""
    for path in db_files(area):
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",), path
        assert db.execute("PRAGMA foreign_key_check").fetchall() == [], path
        if path.name != "completed-runs.db":
            assert db.execute("SELECT * FROM run_move").fetchall() == []
        db.close()


def working(ctx: Context) -> Path:
    return working_db_path(ctx.area)


# -- reduce and restore -----------------------------------------------------------------------
def test_reduce_then_restore_keeps_every_row(ctx: Context, area: Path) -> None:
    ctx.db  # noqa: B018 - creates the working db
    ids = populate(working(ctx), 4, 6, OLD, deps_every=2)
    before, _ = placement(area)
    result = reduce_runs(run_store(ctx), EVERY)
    assert [r.id for r in result.moved] == ids and result.jobs == 24 and not result.refused
    after, where = placement(area)
    assert after == before and where == {"work": set(), "archive": set(ids)}
    assert_intact(area)
    # the site, app and batch job the jobs use are in both files
    arc = sqlite3.connect(ctx.area.completed_db_path)
    for table in ("site", "app", "batch_job"):
        assert arc.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)
        assert ctx.db.execute_sql(f"SELECT count(*) FROM {table}").fetchone() == (1,)
    arc.close()
    back = restore_runs(run_store(ctx), RunSelection())
    assert [r.id for r in back.moved] == ids
    again, where = placement(area)
    assert again == before and where == {"work": set(ids), "archive": set()}
    assert_intact(area)


def test_selection_by_age_glob_and_finished(ctx: Context, area: Path) -> None:
    ctx.db  # noqa: B018
    old = populate(working(ctx), 3, 2, OLD)  # targets linux/x0, x1, x2
    recent = populate(working(ctx), 1, 2, time.time() - 3600, prefix="new")
    busy = populate(working(ctx), 1, 2, OLD, prefix="busy")
    ctx.db.execute_sql("UPDATE job SET state = 'RUNNING' WHERE run_id = ?", (busy[0],))
    assert [r.id for r in reduce_runs(run_store(ctx), RunSelection(target="linux/x[01]",
                                                        older_than=30 * 86400)).moved] == old[:2]
    assert [r.id for r in reduce_runs(run_store(ctx), RunSelection(older_than=30 * 86400)).moved] == old[2:]
    dry = reduce_runs(run_store(ctx), RunSelection(older_than=0), dry_run=True)
    assert [r.id for r in dry.moved] == recent and dry.dry_run
    _, where = placement(area)
    assert where["work"] == {*recent, *busy}  # the dry run moved nothing
    assert [r.id for r in restore_runs(run_store(ctx), RunSelection(runname="r1")).moved] == [old[0]]


def test_batches_of_runs(ctx: Context, area: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "BATCH_RUNS", 2)
    ctx.db  # noqa: B018
    ids = populate(working(ctx), 5, 3, OLD)
    before, _ = placement(area)
    assert [r.id for r in reduce_runs(run_store(ctx), EVERY).moved] == ids
    assert [r.id for r in restore_runs(run_store(ctx), RunSelection()).moved] == ids
    assert placement(area)[0] == before


def test_dry_run_without_archive_creates_nothing(ctx: Context) -> None:
    ctx.db  # noqa: B018
    ids = populate(working(ctx), 2, 2, OLD)
    assert [r.id for r in reduce_runs(run_store(ctx), EVERY, dry_run=True).moved] == ids
    assert not ctx.area.completed_db_path.exists()
    assert restore_runs(run_store(ctx), RunSelection()).moved == []


def test_ids_are_kept_and_never_reused(ctx: Context, area: Path) -> None:
    ctx.db  # noqa: B018
    ids = populate(working(ctx), 2, 3, OLD)
    top_job = ctx.db.execute_sql("SELECT max(id) FROM job").fetchone()[0]
    reduce_runs(run_store(ctx), EVERY)
    newer = populate(working(ctx), 1, 1, OLD, prefix="later")
    assert newer[0] > ids[-1]
    assert ctx.db.execute_sql("SELECT min(id) FROM job").fetchone()[0] > top_job
    restore_runs(run_store(ctx), RunSelection())
    _, where = placement(area)
    assert where["work"] == {*ids, *newer}


def test_same_name_in_the_destination_is_refused(ctx: Context, area: Path) -> None:
    ctx.db  # noqa: B018
    first = populate(working(ctx), 2, 2, OLD)
    reduce_runs(run_store(ctx), EVERY)
    # new runs under the names of the archived ones
    again = populate(working(ctx), 2, 2, OLD)
    ctx.db.execute_sql("UPDATE run SET runname = 'r' || (id - 2) WHERE id > 2")
    result = reduce_runs(run_store(ctx), EVERY)
    assert [r.id for r in result.moved] == [] and len(result.refused) == 2
    assert "completed-runs.db already has a run of that name" in result.refused[0]
    back = restore_runs(run_store(ctx), RunSelection())
    assert back.moved == [] and "the working database already has" in back.refused[0]
    _, where = placement(area)
    assert where == {"work": set(again), "archive": set(first)}
    assert_intact(area)


def test_migrated_column_order_is_copied_by_name(ctx: Context, area: Path) -> None:
    """An archive whose tables list their columns in another order (an area that grew through
    schema steps) receives every value in its own column."""
    ctx.db  # noqa: B018
    path = ctx.area.completed_db_path
    prepare_database_file(path, journal="delete")
    db = sqlite3.connect(path, isolation_level=None)
    for table in ("event", "run_test", "job_tag"):
        info = db.execute(f"PRAGMA table_info({table})").fetchall()[::-1]
        cols = ", ".join(f'"{c[1]}" {c[2]}' + (" PRIMARY KEY" if c[5] else "") for c in info)
        db.execute(f"DROP TABLE {table}")
        db.execute(f"CREATE TABLE {table} ({cols})")
    db.close()
    populate(working(ctx), 2, 3, OLD)
    before, _ = placement(area)
    reduce_runs(run_store(ctx), EVERY)
    assert placement(area)[0] == before
    restore_runs(run_store(ctx), RunSelection())
    assert placement(area)[0] == before


# -- recovery ---------------------------------------------------------------------------------
def _intent(ctx: Context, run_id: int, direction: str) -> None:
    ctx.db.execute_sql("INSERT INTO run_move (run_id, direction, started) VALUES (?, ?, ?)",
                       (run_id, direction, time.time()))


def test_recover_finishes_a_verified_copy_and_undoes_a_short_one(ctx: Context,
                                                                 area: Path) -> None:
    ctx.db  # noqa: B018
    ids = populate(working(ctx), 3, 4, OLD)
    before, _ = placement(area)
    reduce_runs(run_store(ctx), EVERY)
    # as a crash after the copy would leave things: each run in both places, with an intent
    shutil.copy(ctx.area.completed_db_path, area / "copy.db")
    restore_runs(run_store(ctx), RunSelection())
    shutil.copy(area / "copy.db", ctx.area.completed_db_path)
    for run_id in ids:
        _intent(ctx, run_id, "reduce")
    arc = sqlite3.connect(ctx.area.completed_db_path)  # run 2's copy lost one event
    arc.execute("DELETE FROM event WHERE id = (SELECT min(e.id) FROM event e JOIN job j "
                "ON j.id = e.job WHERE j.run_id = ?)", (ids[1],))
    arc.commit()
    arc.close()
    notes = recover(run_store(ctx))
    assert sorted(notes) == sorted([f"run {ids[0]}: reduce finished after an interruption",
                                    f"run {ids[2]}: reduce finished after an interruption",
                                    f"run {ids[1]}: reduce undone after an interruption"])
    after, where = placement(area)
    assert after == before and where == {"work": {ids[1]}, "archive": {ids[0], ids[2]}}
    assert_intact(area)


def test_recover_drops_intents_of_moves_that_never_copied(ctx: Context, area: Path) -> None:
    ctx.db  # noqa: B018
    ids = populate(working(ctx), 2, 2, OLD)
    _intent(ctx, ids[0], "reduce")
    assert recover(run_store(ctx)) == [f"run {ids[0]}: move undone after an interruption (no archive file)"]
    assert not ctx.area.completed_db_path.exists()
    assert_intact(area)
    reduce_runs(run_store(ctx), RunSelection(runname="r2", older_than=0))
    _intent(ctx, ids[1], "restore")  # a restore stopped after its intent: still archived
    assert recover(run_store(ctx)) == [f"run {ids[1]}: restore undone after an interruption"]
    assert placement(area)[1] == {"work": {ids[0]}, "archive": {ids[1]}}
    assert_intact(area)


def test_recover_leaves_migration_intents_alone(ctx: Context) -> None:
    ctx.db  # noqa: B018
    ids = populate(working(ctx), 1, 2, OLD)
    _intent(ctx, ids[0], "migrate")
    assert recover(run_store(ctx)) == []
    result = reduce_runs(run_store(ctx), EVERY)
    assert result.moved == [] and "another move of this run is in progress" in result.refused[0]
    assert ctx.db.execute_sql("SELECT direction FROM run_move").fetchall() == [("migrate",)]


def test_run_in_both_places_without_intent_keeps_the_working_copy(ctx: Context,
                                                                  area: Path) -> None:
    ctx.db  # noqa: B018
    ids = populate(working(ctx), 2, 3, OLD)
    reduce_runs(run_store(ctx), EVERY)
    shutil.copy(ctx.area.completed_db_path, area / "copy.db")
    restore_runs(run_store(ctx), RunSelection(runname="r1"))
    ctx.db.execute_sql(f"UPDATE job SET message = 'changed since' WHERE run_id = {ids[0]}")
    shutil.copy(area / "copy.db", ctx.area.completed_db_path)
    assert recover(run_store(ctx)) == [f"run {ids[0]}: was in both databases; the archive's copy was removed"]
    merged, where = placement(area)
    assert where == {"work": {ids[0]}, "archive": {ids[1]}}
    assert {j["message"] for j in merged[ids[0]]["jobs"].values()} == {"changed since"}
    assert_intact(area)


# -- --full-db --------------------------------------------------------------------------------
def test_full_db_views_read_both_databases(ctx: Context, area: Path) -> None:
    from megarun.campaign.query import JobFilter, count_by_state, get_job, list_jobs
    from megarun.suites.run_prepare import get_run
    from megarun.suites.run_report import list_runs, run_items

    ctx.db  # noqa: B018
    assert attach_full(ctx) is False  # no archive yet: nothing attached
    ids = populate(working(ctx), 2, 3, OLD)
    reduce_runs(run_store(ctx), RunSelection(runname="r1", older_than=0))
    job = min(contents(ctx.area.completed_db_path)[ids[0]]["jobs"])
    assert [r["runname"] for r in list_runs(ctx.db)] == ["r2"]
    assert attach_full(ctx) is True
    assert [r["runname"] for r in list_runs(ctx.db)] == ["r1", "r2"]
    assert len(list_jobs(ctx.db, ctx.area, JobFilter())) == 6
    assert sum(c["count"] for c in count_by_state(ctx.db, ctx.area, JobFilter(tags={"k": "v0"}))) > 0
    shown = get_job(ctx.db, job)
    assert shown["site"] == "bench-site" and shown["app"] == "bench-app"
    assert [e["to"] for e in shown["events"]] == ["READY", "QUEUED", "RUNNING", "COMPLETED"]
    assert len(run_items(ctx.db, int(get_run(ctx.db, "linux/x0", "r1").id))) == 3


# -- the auto-reduce rule ---------------------------------------------------------------------
def test_apply_rule_uses_the_area_setting(ctx: Context, area: Path) -> None:
    ctx.db  # noqa: B018
    old = populate(working(ctx), 1, 2, OLD)
    populate(working(ctx), 1, 2, time.time() - 86400, prefix="recent")
    assert apply_rule(run_store(ctx)) is None
    config = area / "megarun.toml"
    config.write_text(config.read_text() + '\n[archive]\nauto-reduce = "30d"\n')
    fresh = Context(area_override=str(area))
    try:
        result = apply_rule(run_store(fresh))
        assert result is not None and [r.id for r in result.moved] == old
    finally:
        fresh.close()


def test_auto_reduce_setting_is_validated(area: Path) -> None:
    config = area / "megarun.toml"
    base = config.read_text()
    config.write_text(base + '\n[archive]\nauto-reduce = "12h"\n')
    assert load_area_config(config).archive_auto_reduce == 12 * 3600
    config.write_text(base + '\n[archive]\nauto-reduce = "soon"\n')
    with pytest.raises(ConfigError, match=r"archive\.auto-reduce"):
        load_area_config(config)
    config.write_text(base + '\n[archive]\nauto-reduse = "3d"\n')
    with pytest.raises(ConfigError, match="auto-reduse"):
        load_area_config(config)
    config.write_text(base)
    assert load_area_config(config).archive_auto_reduce is None

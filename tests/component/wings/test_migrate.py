"""Migration between areas: new ids in the destination, MOVED tombstones here, refusals,
recovery, the area's rules, and kill -9 at every step of a real `megarun migrate`."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from megarun.archive.automation import apply_rules, rules_failed
from megarun.archive.migrate import (
    MIGRATE_FAULTS,
    apply_auto_migrate,
    migrate_runs,
    recover_migrations,
)
from megarun.archive.runselect import RunSelection
from megarun.cli.archive_cmd import run_store
from megarun.config.area import locate_area
from megarun.db.connection import prepare_database_file
from megarun.db.models import App, BatchJob, Event, Job, JobDependency, JobTag, Run, RunTest, Site
from megarun.errors import ConfigError, UsageError
from megarun.homehost import home as homehost
from megarun.homehost.areas import init_area
from megarun.homehost.context import Context
from megarun.suites.run_prepare import get_run
from tests.conftest import megarun_process, spawn_megarun

DAY = 86400.0


# -- building real data ------------------------------------------------------------------------
def _site(name: str, workdir: str) -> Site:
    site = Site.get_or_none(Site.name == name)
    return site or Site.create(name=name, preset="local", workdir=workdir, created=1.0)


def add_run(ctx: Context, target: str, runname: str, jobs: int = 3, age_days: float = 40,
            state: str = "COMPLETED", site: str = "local") -> int:
    """A run with jobs, 2 tags and 2 events per job, a chain of dependencies, 2 run tests, an
    app and a batch job: every table a migration touches."""
    ctx.db  # noqa: B018 - binds the models to this area's database
    ended = time.time() - age_days * DAY
    place = _site(site, str(ctx.area.root / "work" / site))
    app = App.get_or_none(App.name == "echoer") or App.create(
        name="echoer", command="echo {{ x }}", created=1.0)
    batch = BatchJob.create(site=place, created=1.0)
    run = Run.create(target=target, runname=runname, created=ended - 60, state="open")
    for test in ("t1", "t2"):
        RunTest.create(run=run, test=test, definition_hash=f"h-{test}", definition="{}")
    previous = None
    for n in range(jobs):
        job = Job.create(name=f"t1/{n}", run=run, test="t1", item=str(n), site=place, app=app,
                         batch_job=batch, command=f"echo {n}", state=state, status="PASS",
                         created=ended - 50, started=ended - 40, ended=ended if state ==
                         "COMPLETED" else None, workdir=f"/runs/{target}/{runname}/{n}")
        JobTag.create(job=job, key="n", value=str(n))
        JobTag.create(job=job, key="kind", value="test")
        Event.create(job=job.id, time=ended - 50, from_state="CREATED", to_state="READY",
                     status="n/a")
        Event.create(job=job.id, time=ended, from_state="RUNNING", to_state=state,
                     status="PASS", message=f"done {n}")
        if previous is not None:
            JobDependency.create(parent=previous, child=job)
        previous = job
    return int(run.id)


def dest_area(tmp_path: Path, name: str = "dest") -> Path:
    return init_area(tmp_path / name, keys=["os", "arch"])


def work_db(root: Path) -> Path:
    """The working database of the area at `root` (this host is its home)."""
    return homehost.working_db_path(locate_area(str(root)))


def query(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql, params).fetchall()


def integrity(path: Path) -> str:
    return str(query(path, "PRAGMA integrity_check")[0][0])


def run_rows(path: Path, target: str, runname: str) -> dict[str, object] | None:
    """What a database holds of one run: its state and its rows' counts and contents."""
    found = query(path, "SELECT id, state, moved_to FROM run WHERE target = ? AND runname = ?",
                  (target, runname))
    if not found:
        return None
    run_id, state, moved_to = found[0]
    jobs = query(path, "SELECT id, item, command, status, site_id, app_id, batch_job_id FROM job "
                 "WHERE run_id = ? ORDER BY item", (run_id,))
    ids = [j[0] for j in jobs]
    marks = ",".join("?" * len(ids))
    return {
        "id": run_id, "state": state, "moved_to": moved_to, "jobs": jobs,
        "events": query(path, f"SELECT job, from_state, to_state, message FROM event "
                        f"WHERE job IN ({marks}) ORDER BY id", tuple(ids)),
        "tags": query(path, f"SELECT job_id, key, value FROM job_tag WHERE job_id IN ({marks}) "
                      "ORDER BY job_id, key", tuple(ids)),
        "deps": query(path, f"SELECT parent_id, child_id FROM job_dependency "
                      f"WHERE child_id IN ({marks}) ORDER BY child_id", tuple(ids)),
        "tests": query(path, "SELECT test, definition_hash FROM run_test WHERE run_id = ? "
                       "ORDER BY test", (run_id,)),
    }


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return dest_area(tmp_path)


# -- the move ----------------------------------------------------------------------------------
def test_copies_runs_with_new_ids_and_leaves_moved_tombstones(ctx: Context, dest: Path) -> None:
    # The destination already has rows, so that every id there differs from the ids here.
    prepared = work_db(dest)
    prepare_database_file(prepared)
    with sqlite3.connect(prepared) as db:
        db.execute("INSERT INTO site (name, preset, scheduler, workdir, settings, created) "
                   "VALUES ('other', 'local', 'local', '/x', '{}', 1), "
                   "('local', 'local', 'local', '/y', '{}', 1)")
        db.execute("INSERT INTO run (target, runname, created, config_hash, state) "
                   "VALUES ('x/y', 'old', 1, '', 'open'), ('x/y', 'older', 1, '', 'open')")
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('job', 100)")
    here = add_run(ctx, "linux/x86", "nightly", jobs=3)
    stays = add_run(ctx, "mac/arm", "nightly", jobs=2)
    before = run_rows(work_db(ctx.area.root), "linux/x86", "nightly")
    assert before is not None

    result = migrate_runs(run_store(ctx), dest, RunSelection(target="linux/*"))

    assert [m["run"] for m in result.moved] == [here] and result.refused == []
    there = run_rows(prepared, "linux/x86", "nightly")
    assert there is not None and there["state"] == "open" and there["moved_to"] is None
    assert there["id"] == 3  # after the destination's own two runs
    new_ids = [j[0] for j in there["jobs"]]  # type: ignore[index]
    assert new_ids == [101, 102, 103]  # never a job id the destination used
    old_ids = [j[0] for j in before["jobs"]]  # type: ignore[index]
    mapping = dict(zip(old_ids, new_ids, strict=True))
    local_there = query(prepared, "SELECT id FROM site WHERE name = 'local'")[0][0]
    app_there = query(prepared, "SELECT id FROM app WHERE name = 'echoer'")[0][0]
    assert [j[1:] for j in there["jobs"]] == [  # type: ignore[index]
        (str(n), f"echo {n}", "PASS", local_there, app_there, None) for n in range(3)]
    assert there["events"] == [(mapping[e[0]], *e[1:]) for e in before["events"]]  # type: ignore[index,union-attr]
    assert there["tags"] == [(mapping[t[0]], *t[1:]) for t in before["tags"]]  # type: ignore[index,union-attr]
    assert there["deps"] == [(mapping[p], mapping[c]) for p, c in before["deps"]]  # type: ignore[misc,union-attr]
    assert there["tests"] == before["tests"]

    tomb = Run.get_by_id(here)
    assert (tomb.state, tomb.moved_to) == ("MOVED", str(dest))
    assert Job.select().where(Job.run == here).count() == 0
    assert Event.select().where(Event.job.in_(old_ids)).count() == 0
    assert JobTag.select().where(JobTag.job.in_(old_ids)).count() == 0
    assert RunTest.select().where(RunTest.run == here).count() == 0
    assert Job.select().where(Job.run == stays).count() == 2  # not selected: untouched
    assert ctx.db.execute_sql("SELECT count(*) FROM run_move").fetchone()[0] == 0
    assert integrity(prepared) == "ok"


def test_site_missing_there_is_not_copied(ctx: Context, dest: Path) -> None:
    add_run(ctx, "linux/x86", "r1", site="cluster")
    migrate_runs(run_store(ctx), dest, RunSelection())
    there = run_rows(work_db(dest), "linux/x86", "r1")
    assert there is not None
    assert {j[4] for j in there["jobs"]} == {None}  # type: ignore[index]
    assert query(work_db(dest), "SELECT name FROM site") == []


def test_refuses_runs_the_destination_has_and_moves_the_others(ctx: Context, dest: Path) -> None:
    add_run(ctx, "linux/x86", "r1")
    first = migrate_runs(run_store(ctx), dest, RunSelection())
    assert len(first.moved) == 1
    # A new run of the same name here, and one more: the first is refused, the second goes.
    ctx.db.execute_sql("UPDATE run SET runname = 'r1-gone' WHERE runname = 'r1'")
    again = add_run(ctx, "linux/x86", "r1")
    other = add_run(ctx, "linux/x86", "r2")
    result = migrate_runs(run_store(ctx), dest, RunSelection())
    assert [m["run"] for m in result.moved] == [other]
    assert [(r["run"], r["reason"]) for r in result.refused] == [
        (again, "the destination already has a run linux/x86/r1")]
    assert Job.select().where(Job.run == again).count() == 3
    assert Run.get_by_id(again).state == "open"


def test_only_finished_runs_old_enough(ctx: Context, dest: Path) -> None:
    add_run(ctx, "linux/x86", "running", state="RUNNING")
    add_run(ctx, "linux/x86", "recent", age_days=1)
    old = add_run(ctx, "linux/x86", "old", age_days=40)
    result = migrate_runs(run_store(ctx), dest, RunSelection(older_than=30 * DAY))
    assert [m["run"] for m in result.moved] == [old]
    assert query(work_db(dest), "SELECT runname FROM run") == [("old",)]


def test_dry_run_changes_nothing(ctx: Context, tmp_path: Path) -> None:
    dest = dest_area(tmp_path, "fresh")
    run_id = add_run(ctx, "linux/x86", "r1")
    result = migrate_runs(run_store(ctx), dest, RunSelection(), dry_run=True)
    assert [m["run"] for m in result.moved] == [run_id] and result.dry_run
    assert not (dest / ".megarun" / "work.db").exists()
    assert Run.get_by_id(run_id).state == "open"
    assert Job.select().where(Job.run == run_id).count() == 3


def test_destination_must_be_another_area(ctx: Context, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="this area itself"):
        migrate_runs(run_store(ctx), ctx.area.root, RunSelection())
    with pytest.raises(Exception, match="not a megarun area"):
        migrate_runs(run_store(ctx), tmp_path, RunSelection())


def test_moved_run_gets_one_clear_error(ctx: Context, dest: Path) -> None:
    add_run(ctx, "linux/x86", "r1")
    migrate_runs(run_store(ctx), dest, RunSelection())
    with pytest.raises(UsageError, match=f"moved to the area {dest}"):
        get_run(ctx.db, "linux/x86", "r1")


# -- recovery ----------------------------------------------------------------------------------
def test_recovery_undoes_an_intent_without_copy_and_finishes_a_complete_one(
        ctx: Context, dest: Path) -> None:
    lost = add_run(ctx, "linux/x86", "lost")
    copied = add_run(ctx, "linux/x86", "copied")
    migrate_runs(run_store(ctx), dest, RunSelection(runname="copied"))
    # As if a crash came after the copy but before the delete: the run back here, an intent.
    ctx.db.execute_sql("UPDATE run SET state = 'open', moved_to = NULL WHERE id = ?", (copied,))
    now = time.time()
    ctx.db.execute_sql("INSERT INTO run_move VALUES (?, 'migrate', ?, ?), "
                       "(?, 'migrate', ?, ?)", (lost, str(dest), now, copied, str(dest), now))
    notes = recover_migrations(run_store(ctx))
    assert notes == [f"interrupted moves to {dest}: 1 finished, 1 undone (the runs stay here)"]
    assert Run.get_by_id(lost).state == "open"
    assert Run.get_by_id(copied).state == "MOVED"
    assert ctx.db.execute_sql("SELECT count(*) FROM run_move").fetchone()[0] == 0
    assert query(work_db(dest), "SELECT runname FROM run") == [("copied",)]


def test_unreadable_destination_keeps_the_intent_and_the_run(ctx: Context, tmp_path: Path) -> None:
    run_id = add_run(ctx, "linux/x86", "r1")
    gone = tmp_path / "gone"
    ctx.db.execute_sql("INSERT INTO run_move VALUES (?, 'migrate', ?, ?)",
                       (run_id, str(gone), time.time()))
    [note] = recover_migrations(run_store(ctx))
    assert "left pending" in note and str(gone) in note
    assert ctx.db.execute_sql("SELECT count(*) FROM run_move").fetchone()[0] == 1
    other = dest_area(tmp_path, "other")
    assert migrate_runs(run_store(ctx), other, RunSelection()).moved == []  # pending: not picked again


# -- the area's rules --------------------------------------------------------------------------
def _write_rules(area: Path, text: str) -> None:
    config = area / "megarun.toml"
    config.write_text(config.read_text() + "\n" + text)


def test_auto_migrate_rules_and_a_failing_one(area: Path, tmp_path: Path) -> None:
    dest = dest_area(tmp_path)
    _write_rules(area, f'[[auto-migrate]]\ndestination = "{tmp_path / "missing"}"\n\n'
                       f'[[auto-migrate]]\ndestination = "../dest"\ntarget = "linux/*"\n'
                       'older-than = "30d"\n')
    ctx = Context(area_override=str(area))
    try:
        add_run(ctx, "linux/x86", "old", age_days=40)
        add_run(ctx, "linux/x86", "new", age_days=2)
        add_run(ctx, "mac/arm", "old", age_days=40)
        assert ctx.area.config.auto_migrate[1].destination == dest
        broken, good = apply_auto_migrate(run_store(ctx))
        assert "not a megarun area" in broken.error
        assert [m["runname"] for m in good.moved] == ["old"] and not good.error
        lines = apply_rules(run_store(ctx))
        assert rules_failed(lines)
        assert [line for line in lines if not line.startswith("failed: ")] == []
    finally:
        ctx.close()
    assert query(work_db(dest), "SELECT target, runname FROM run") == [("linux/x86", "old")]


@pytest.mark.parametrize(("text", "message"), [
    ('[[auto-migrate]]\ntarget = "x"\n', "needs a 'destination'"),
    ('[[auto-migrate]]\ndestination = "/d"\nolder-than = "soon"\n', "expected a duration"),
    ('[[auto-migrate]]\ndestination = "/d"\nwhen = "now"\n', "unknown key 'when'"),
    ('[[auto-migrate]]\ndestination = "."\n', "this area itself"),
    ('allow-runs = "no"\n', "must be true or false"),
])
def test_rules_are_validated(tmp_path: Path, text: str, message: str) -> None:
    root = init_area(tmp_path / "a", keys=[])
    config = root / "megarun.toml"
    old = config.read_text()  # a table goes last, a top-level key before the first table
    config.write_text(old + "\n" + text if text.startswith("[[") else text + old)
    with pytest.raises(ConfigError, match=message):
        locate_area(str(root))


def test_allow_runs_false_refuses_new_runs_only(tmp_path: Path) -> None:
    root = init_area(tmp_path / "a", keys=["os"])
    (root / "tests" / "t1").mkdir()
    (root / "tests" / "t1" / "test.toml").write_text('steps = ["true"]\n')
    config = root / "megarun.toml"
    first = megarun_process(root, "run", "--target", "linux", "--runname", "r1", "-q")
    assert first.returncode == 0, first.stderr
    config.write_text("allow-runs = false\n" + config.read_text())
    refused = megarun_process(root, "run", "--target", "linux", "--runname", "r2")
    assert refused.returncode == 2
    assert "takes no new runs (allow-runs = false" in refused.stderr
    again = megarun_process(root, "run", "--target", "linux", "--runname", "r1", "-q")
    assert again.returncode == 0, again.stderr  # an existing run goes on
    rerun = megarun_process(root, "rerun", "--target", "linux", "--runname", "r1", "--status",
                            "PASS", "-q")
    assert rerun.returncode == 0, rerun.stderr


# -- kill -9 at every step of a real migrate ---------------------------------------------------
#: Where each crash leaves the moved run after the next command: here, or there.
FAULT_OUTCOME = {"migrate:after-intent": "here", "migrate:during-copy": "here",
                 "migrate:after-copy": "there", "migrate:after-verify": "there",
                 "migrate:after-delete": "there"}


def test_every_fault_point_is_tested() -> None:
    assert set(FAULT_OUTCOME) == set(MIGRATE_FAULTS)


@pytest.fixture
def source(area: Path) -> Iterator[tuple[Path, dict[str, dict[str, object]]]]:
    ctx = Context(area_override=str(area))
    try:
        for n in range(3):
            add_run(ctx, "linux/x86", f"r{n}", jobs=4)
        db = homehost.working_db_path(ctx.area)
    finally:
        ctx.close()
    originals = {f"r{n}": run_rows(db, "linux/x86", f"r{n}") for n in range(3)}
    yield area, originals  # type: ignore[misc]


def _check_each_run_in_one_place(area: Path, dest: Path,
                                 originals: dict[str, dict[str, object]]) -> dict[str, str]:
    """Every run whole in exactly one area (a MOVED tombstone here when there); where each is."""
    here_db, there_db = work_db(area), work_db(dest)
    assert integrity(here_db) == "ok"
    assert integrity(there_db) == "ok" if there_db.exists() else True
    places = {}
    for name, original in originals.items():
        here = run_rows(here_db, "linux/x86", name)
        there = run_rows(there_db, "linux/x86", name) if there_db.exists() else None
        assert here is not None
        if here["state"] == "MOVED":
            assert here["jobs"] == [] and here["events"] == [] and here["tests"] == []
            assert there is not None, f"{name} lost"
            for key in ("events", "tags", "deps", "tests"):
                assert len(there[key]) == len(original[key]), (name, key)  # type: ignore[arg-type]
            assert [j[1:4] for j in there["jobs"]] == [j[1:4] for j in original["jobs"]]  # type: ignore[attr-defined,index]
            places[name] = "there"
        else:
            assert there is None, f"{name} is in both areas"
            assert here == original
            places[name] = "here"
    assert query(here_db, "SELECT count(*) FROM run_move")[0][0] == 0
    return places


@pytest.mark.parametrize("fault", MIGRATE_FAULTS)
def test_kill_9_at_each_step_loses_nothing(
        source: tuple[Path, dict[str, dict[str, object]]], tmp_path: Path, fault: str) -> None:
    area, originals = source
    dest = dest_area(tmp_path)
    crashed = megarun_process(area, "migrate", "--destination", str(dest), "--runname", "r1",
                              env={"MEGARUN_FAULT": fault})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    # The next command (it selects nothing) recovers: each run whole in exactly one place.
    after = megarun_process(area, "migrate", "--destination", str(dest), "--runname", "none",
                            "--json")
    assert after.returncode == 0, after.stderr
    places = _check_each_run_in_one_place(area, dest, originals)
    assert places == {"r0": "here", "r1": FAULT_OUTCOME[fault], "r2": "here"}
    # And a migration afterwards moves everything, once.
    done = megarun_process(area, "migrate", "--destination", str(dest))
    assert done.returncode == 0, done.stderr
    assert set(_check_each_run_in_one_place(area, dest, originals).values()) == {"there"}
    assert query(work_db(dest), "SELECT count(*) FROM run")[0][0] == 3


def test_two_migrations_at_once_move_each_run_once(
        source: tuple[Path, dict[str, dict[str, object]]], tmp_path: Path) -> None:
    area, originals = source
    dest = dest_area(tmp_path)
    procs = [spawn_megarun(area, "migrate", "--destination", str(dest), "--json")
             for _ in range(2)]
    answers = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        answers.append(json.loads(out))
    moved = sorted(m["runname"] for a in answers for m in a["moved"])
    assert moved == ["r0", "r1", "r2"]  # one process moved them, the other found none left
    assert set(_check_each_run_in_one_place(area, dest, originals).values()) == {"there"}
    assert query(work_db(dest), "SELECT count(*) FROM run")[0][0] == 3

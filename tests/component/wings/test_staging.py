"""Stage-in and stage-out on the local site: real agent, real files, real SQLite."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from megarun.campaign import app_registry as app_service
from megarun.campaign.create import JobRequest, create_jobs
from megarun.config.apps import validate_app
from megarun.db.models import Event, Job, StageOutDue
from megarun.engine import staging
from megarun.engine.dispatch import dispatch_ready_jobs
from megarun.engine.ingest import ingest_site_events
from megarun.engine.staging import StageItem, StagingError, stage_out_due
from megarun.errors import ConfigError
from megarun.homehost.context import Context
from megarun.sites.registry import SiteInfo, ensure_default_site, site_id
from megarun.transport.local import LocalTransport
from tests.conftest import megarun_process

SIM = """
command = "cat input.dat conf/a.txt > result.txt && mkdir -p outdir && echo {{ case }} > outdir/x.txt"
stage_in = [{src = "data/{{ case }}.dat", dest = "input.dat"},
            {src = "data/conf", dest = "conf"}]
stage_out = [{src = "result.txt", dest = "results/{{ case }}.txt"},
             {src = "outdir", dest = "results/{{ case }}-dir"}]
"""


def write_app(area: Path, name: str, text: str) -> None:
    (area / "apps" / f"{name}.toml").write_text(text)


def run_ok(area: Path, *args: str) -> str:
    result = megarun_process(area, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def job_json(area: Path, job_id: int) -> dict[str, Any]:
    return dict(json.loads(run_ok(area, "job", "show", str(job_id), "--json")))


@pytest.fixture
def data(area: Path) -> Path:
    folder = area / "data"
    (folder / "conf").mkdir(parents=True)
    (folder / "one.dat").write_text("one\n")
    (folder / "conf" / "a.txt").write_text("conf a\n")
    return folder


# -- end to end ------------------------------------------------------------------------------
def test_files_go_in_and_results_come_back(area: Path, data: Path, ctx: Context) -> None:
    write_app(area, "sim", SIM)
    run_ok(area, "app", "sync")
    shown = json.loads(run_ok(area, "app", "show", "sim", "--json"))
    assert shown["stage_in"][0] == {"src": "data/{{ case }}.dat", "dest": "input.dat"}
    assert shown["params"] == {"case": None}  # used only by staging: still a required parameter
    run_ok(area, "job", "create", "--app", "sim", "-p", "case=one")
    summary = json.loads(run_ok(area, "launch", "--site", "local", "--json"))
    assert summary["by_status"] == {"PASS": 1}, summary
    job = job_json(area, 1)
    workdir = Path(job["workdir"])
    assert (workdir / "input.dat").read_text() == "one\n"
    assert (workdir / "conf" / "a.txt").read_text() == "conf a\n"
    assert (workdir / "result.txt").read_text() == "one\nconf a\n"
    # The launcher copied the results home itself.
    assert (area / "results" / "one.txt").read_text() == "one\nconf a\n"
    assert (area / "results" / "one-dir" / "x.txt").read_text() == "one\n"
    assert ctx.db.execute_sql("SELECT count(*) FROM stage_out_due").fetchone() == (0,)
    again = stage_out_due(ctx.db, ensure_default_site(ctx), ctx.area.root)
    assert (again.copied, again.failed) == (0, 0)  # exactly once
    assert (job["state"], job["status"]) == ("COMPLETED", "PASS")


def test_missing_stage_in_file_fails_only_that_job(area: Path, data: Path) -> None:
    write_app(area, "sim", SIM + "retries = 1\n")
    run_ok(area, "app", "sync")
    run_ok(area, "app", "add", "echo", "--command", "echo hi")
    run_ok(area, "job", "create", "--app", "sim", "-p", "case=missing")
    run_ok(area, "job", "create", "--app", "sim", "-p", "case=one")
    run_ok(area, "job", "create", "--app", "echo", "--count", "3")
    launched = megarun_process(area, "launch", "--site", "local", "--json")
    assert launched.returncode == 1, launched.stderr  # a job failed for good
    assert json.loads(launched.stdout)["by_status"] == {"PASS": 4, "FAIL": 1}
    rows = {row["id"]: row for row in json.loads(run_ok(area, "job", "ls", "--json"))}
    expected = f"stage-in failed: {area / 'data' / 'missing.dat'}: no such file"
    assert (rows[1]["state"], rows[1]["status"], rows[1]["message"]) == (
        "COMPLETED", "FAIL", expected)
    assert rows[1]["attempt"] == 2  # retried once (retries = 1), then failed for good
    assert {(rows[i]["state"], rows[i]["status"]) for i in (2, 3, 4, 5)} == {("COMPLETED", "PASS")}
    failures = [e for e in job_json(area, 1)["events"] if e["to"] == "COMPLETED"]
    assert [e["message"] for e in failures] == [expected, expected]
    assert not (Path(job_json(area, 1)["workdir"]) / "input.dat").exists()


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(("table", "message"), [
    ({"stage_in": "data/x"}, "'stage_in' must be"),
    ({"stage_in": ["data/x"]}, "stage_in[0] must be a table"),
    ({"stage_in": [{"src": "a"}]}, "stage_in[0] is missing 'dest'"),
    ({"stage_in": [{"src": "a", "dest": "b", "mode": "x"}]}, "mode"),
    ({"stage_in": [{"src": "a", "dest": ""}]}, "must be a non-empty path"),
    ({"stage_out": [{"src": "a", "dest": 3}]}, "stage_out[0].dest"),
    ({"stage_in": [{"src": "{{ oops", "dest": "b"}]}, "bad path template in stage_in[0].src"),
])
def test_bad_staging_config_is_refused(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_app({"command": "true", **table}, "apps/x.toml", default_name="x")
    assert message in str(raised.value) and "apps/x.toml" in str(raised.value)


@pytest.mark.parametrize(("key", "entry", "message"), [
    ("stage_in", {"src": "a", "dest": "../up.dat"}, "must not contain '..'"),
    ("stage_in", {"src": "a", "dest": "sub/../../up.dat"}, "must not contain '..'"),
    ("stage_in", {"src": "a", "dest": "/etc/passwd"}, "not absolute"),
    ("stage_in", {"src": "a", "dest": "./"}, "must name a file or folder"),
    ("stage_out", {"src": "../../secret", "dest": "b"}, "must not contain '..'"),
    ("stage_out", {"src": "/etc/shadow", "dest": "b"}, "not absolute"),
])
def test_paths_leaving_the_run_dir_are_refused(key: str, entry: dict[str, str],
                                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_app({"command": "true", key: [entry]}, "apps/x.toml", default_name="x")


def test_app_sync_refuses_a_bad_file_and_saves_nothing(area: Path, data: Path) -> None:
    write_app(area, "good", SIM)
    write_app(area, "bad", 'command = "true"\nstage_in = [{src = "a", dest = "../b"}]\n')
    result = megarun_process(area, "app", "sync")
    assert result.returncode == 2
    assert "bad.toml" in result.stderr and "stage_in[0].dest" in result.stderr
    assert "good" not in run_ok(area, "app", "ls")


def test_a_parameter_cannot_lead_a_path_out_of_the_run_dir(ctx: Context, area: Path,
                                                           data: Path) -> None:
    write_app(area, "esc", 'command = "true"\n'
                           'stage_in = [{src = "data/one.dat", dest = "{{ sub }}/in.dat"}]\n')
    app_service.sync_apps(ctx.db, ctx.area.apps_dir)
    create_jobs(ctx.db, ctx.area, [JobRequest(app="esc", params={"sub": "../.."})])
    site, sid = local_site(ctx)
    assert dispatch_ready_jobs(ctx.db, sid, site) == 0
    job = Job.get_by_id(1)
    assert (job.state, job.status) == ("COMPLETED", "FAIL")
    assert job.message == "stage-in failed: '../../in.dat' must not contain '..' (it has to " \
                          "stay inside the job's run dir)"
    assert not list(Path(site.workdir).rglob("in.dat"))
    with pytest.raises(StagingError, match=r"stage-out: '\.\./x' must not contain"):
        staging.render_items([{"src": "{{ p }}", "dest": "d"}], {"p": "../x"}, area, "stage-out")


# -- stage-out after ingest ------------------------------------------------------------------
PRODUCE = 'command = "true"\nstage_out = [{src = "result.txt", dest = "results/r.txt"}]\n'


def local_site(ctx: Context) -> tuple[SiteInfo, int]:
    site = ensure_default_site(ctx)
    site.spool().ensure()
    return site, site_id(ctx, site.name)


def finish_job(ctx: Context, site: SiteInfo, sid: int, job: int, seq: int = 1) -> None:
    """Feed the agent events of a job that ran and exited 0, and ingest them."""
    events = [{"seq": seq, "t": 1.0, "ev": "started", "job": job, "attempt": 1, "pid": 1,
               "host": "h"},
              {"seq": seq + 1, "t": 2.0, "ev": "finished", "job": job, "attempt": 1,
               "reason": "exit", "rc": 0, "signal": None, "message": "", "runtime": 1.0}]
    log = Path(site.workdir) / "spool" / "events" / "a1.jsonl"
    with open(log, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(event) + "\n" for event in events)
    ingest_site_events(ctx.db, sid, site.spool())


@pytest.fixture
def produced(ctx: Context, area: Path) -> tuple[SiteInfo, int]:
    """Job 1 (app `produce`, owes a stage-out) is QUEUED; job 2 waits on it."""
    write_app(area, "produce", PRODUCE)
    app_service.sync_apps(ctx.db, ctx.area.apps_dir)
    app_service.add_app(ctx.db, "noop", "true", {})
    create_jobs(ctx.db, ctx.area, [JobRequest(app="produce")])
    create_jobs(ctx.db, ctx.area, [JobRequest(app="noop", after=[1])])
    site, sid = local_site(ctx)
    assert dispatch_ready_jobs(ctx.db, sid, site) == 1
    assert [(due.job_id, due.attempt) for due in StageOutDue.select()] == [(1, 1)]
    return site, sid


def test_failed_stage_out_fails_the_job_and_its_children(ctx: Context, area: Path,
                                                         produced: tuple[SiteInfo, int]) -> None:
    site, sid = produced
    finish_job(ctx, site, sid, 1)
    assert (Job.get_by_id(1).status, Job.get_by_id(2).state) == ("PASS", "READY")
    result = stage_out_due(ctx.db, site, ctx.area.root)
    job = Job.get_by_id(1)
    assert (job.state, job.status) == ("COMPLETED", "FAIL")
    assert job.message == f"stage-out failed: {job.workdir}/result.txt: no such file"
    assert (Job.get_by_id(2).state, Job.get_by_id(2).status) == ("COMPLETED", "PREQ_FAIL")
    assert (result.copied, result.failed, result.rejudged) == (0, 1, [("PASS", "FAIL")])
    counts = {"PASS": 1}
    assert result.adjust(counts) == 0 and counts == {"FAIL": 1}
    trail = [(e.from_state, e.to_state, e.status) for e in
             Event.select().where(Event.job == 1).order_by(Event.id)]
    assert trail[-1] == ("COMPLETED", "COMPLETED", "FAIL")
    assert StageOutDue.select().count() == 0
    assert not (area / "results").exists()


def test_failed_stage_out_is_retried_while_attempts_remain(ctx: Context, area: Path) -> None:
    write_app(area, "produce", PRODUCE + "retries = 1\n")
    app_service.sync_apps(ctx.db, ctx.area.apps_dir)
    create_jobs(ctx.db, ctx.area, [JobRequest(app="produce")])
    site, sid = local_site(ctx)
    dispatch_ready_jobs(ctx.db, sid, site)
    finish_job(ctx, site, sid, 1)
    result = stage_out_due(ctx.db, site, ctx.area.root)
    job = Job.get_by_id(1)
    assert (job.state, job.attempt) == ("READY", 1)
    assert result.rejudged == [("PASS", "n/a")]
    counts = {"PASS": 3}
    assert result.adjust(counts) == -1 and counts == {"PASS": 2}


def test_stage_out_after_a_crash_copies_again_then_never(ctx: Context, area: Path,
                                                         produced: tuple[SiteInfo, int],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    site, sid = produced
    finish_job(ctx, site, sid, 1)
    workdir = Path(Job.get_by_id(1).workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "result.txt").write_text("42\n")
    real_record = staging._record_stage_out

    def crash(*args: Any) -> None:
        raise KeyboardInterrupt  # the process dies after copying, before marking

    monkeypatch.setattr(staging, "_record_stage_out", crash)
    with pytest.raises(KeyboardInterrupt):
        stage_out_due(ctx.db, site, ctx.area.root)
    assert (area / "results" / "r.txt").read_text() == "42\n"
    assert StageOutDue.select().count() == 1  # still owed
    monkeypatch.setattr(staging, "_record_stage_out", real_record)
    (area / "results" / "r.txt").write_text("half-written\n")
    assert stage_out_due(ctx.db, site, ctx.area.root).copied == 1
    assert (area / "results" / "r.txt").read_text() == "42\n"
    assert StageOutDue.select().count() == 0
    assert stage_out_due(ctx.db, site, ctx.area.root).copied == 0
    assert (Job.get_by_id(1).status, Job.get_by_id(2).state) == ("PASS", "READY")


def test_nothing_owed_costs_one_query_that_starts_at_the_due_table(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    app_service.add_app(ctx.db, "noop", "true", {})
    create_jobs(ctx.db, ctx.area, [JobRequest(app="noop", count=500)])
    site, sid = local_site(ctx)
    dispatch_ready_jobs(ctx.db, sid, site)
    statements: list[str] = []
    real = ctx.db.execute_sql
    monkeypatch.setattr(ctx.db, "execute_sql",
                        lambda sql, *a, **k: statements.append(sql) or real(sql, *a, **k))
    assert stage_out_due(ctx.db, site, ctx.area.root).copied == 0
    assert len(statements) == 1
    plan = real(f"EXPLAIN QUERY PLAN {staging._DUE_SQL}", ("local",)).fetchall()
    assert plan[0][-1] == "SCAN d", plan  # d: the due table; job and site by primary key


# -- dispatch --------------------------------------------------------------------------------
class LockCheckingTransport(LocalTransport):
    """A LocalTransport that, on every copy, checks that nobody holds the database's write lock."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.checked = 0

    def check(self) -> None:
        other = sqlite3.connect(self.db_path, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # fails at once if a write transaction is open
            other.rollback()
        finally:
            other.close()
        self.checked += 1

    def put(self, local_path: Any, remote_path: Any) -> None:
        self.check()
        super().put(local_path, remote_path)

    def put_tree(self, local_dir: Any, remote_dir: Any) -> str:
        self.check()
        return super().put_tree(local_dir, remote_dir)


def test_stage_in_holds_no_transaction_and_plain_jobs_go_in_their_own_bundle(
        ctx: Context, area: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_app(area, "sim", SIM)
    app_service.sync_apps(ctx.db, ctx.area.apps_dir)
    app_service.add_app(ctx.db, "noop", "true", {})
    create_jobs(ctx.db, ctx.area, [JobRequest(app="noop", count=3),
                                  JobRequest(app="sim", params={"case": "one"})])
    transport = LockCheckingTransport(ctx.area.db_path)
    monkeypatch.setattr(staging, "site_transport_for", lambda site: transport)
    site, sid = local_site(ctx)
    assert dispatch_ready_jobs(ctx.db, sid, site) == 4
    assert transport.checked == 2  # input.dat, and the folder conf
    bundles = sorted((Path(site.workdir) / "spool" / "queue").glob("*.jsonl"))
    ids = [[json.loads(line)["id"] for line in path.read_text().splitlines()] for path in bundles]
    assert ids == [[1, 2, 3], [4]]
    assert (Path(Job.get_by_id(4).workdir) / "input.dat").read_text() == "one\n"
    assert [due.job_id for due in StageOutDue.select()] == [4]


def test_jobs_without_staging_never_reach_the_staging_code(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    app_service.add_app(ctx.db, "noop", "true", {})
    create_jobs(ctx.db, ctx.area, [JobRequest(app="noop", count=5000)])

    def refuse(*args: Any) -> None:
        raise AssertionError("staging code called for jobs that stage nothing")

    monkeypatch.setattr("megarun.engine.dispatch.stage_in_ready", refuse)
    monkeypatch.setattr(staging, "site_transport_for", refuse)
    site, sid = local_site(ctx)
    assert dispatch_ready_jobs(ctx.db, sid, site) == 2000
    assert dispatch_ready_jobs(ctx.db, sid, site, limit=5000) == 3000
    assert StageOutDue.select().count() == 0


def test_stage_in_and_out_of_a_folder_merge_into_what_is_there(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "deep" / "er").mkdir(parents=True)
    (source / "deep" / "er" / "f.txt").write_text("f")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o750)
    (source / "link").symlink_to("deep/er/f.txt")
    job_dir = tmp_path / "job"
    (job_dir / "tree").mkdir(parents=True)
    (job_dir / "tree" / "keep.txt").write_text("kept")
    transport = LocalTransport()
    staging.stage_in(transport, str(job_dir), [StageItem(str(source), "tree")])
    assert (job_dir / "tree" / "deep" / "er" / "f.txt").read_text() == "f"
    assert (job_dir / "tree" / "keep.txt").read_text() == "kept"
    assert (job_dir / "tree" / "run.sh").stat().st_mode & 0o777 == 0o750
    assert (job_dir / "tree" / "link").readlink() == Path("deep/er/f.txt")
    home = tmp_path / "home" / "out"
    staging.stage_out(transport, str(job_dir), [StageItem("tree", str(home))])
    assert (home / "deep" / "er" / "f.txt").read_text() == "f"
    with pytest.raises(StagingError, match=r"stage-in: .*: cannot copy a folder into itself"):
        staging.stage_in(transport, str(source), [StageItem(str(source), "inner")])

"""Batch jobs on a real Slurm reached over the real sshd: pilot and direct modes, cancel,
failures, a request that can never run, a batch job missing from the queue."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from tests.slurmd import SlurmCluster
from tests.sshd import SshServer
from tests.system.test_remote_jobs import cli, db_rows, jobs, new_area, ok, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def slurm_area(tmp_path: Path, sshd: SshServer, home: Path, known_hosts: Path,
               slurm: SlurmCluster) -> Path:
    """An area with a Slurm site `hpc` reached over the loopback sshd, and a few apps."""
    root = new_area(tmp_path)
    ok(root, home, "site", "add", "hpc", "--preset", "generic-slurm", "--host", sshd.spec,
       "--workdir", str(tmp_path / "hpc-work"), "--identity", str(sshd.client_key.path),
       "--known-hosts", str(known_hosts))
    ok(root, home, "app", "add", "where", "--command",
       'printf "%s %s\\n" "$SLURM_JOB_ID" "$(hostname -s)" > where.txt')
    ok(root, home, "app", "add", "nap", "--command", "sleep {{ s }}", "--param", "s=300")
    ok(root, home, "app", "add", "fail", "--command", "echo broken >&2; exit 3")
    return root


def batch_rows(area: Path, home: Path) -> list[dict[str, object]]:
    return list(json.loads(ok(area, home, "queue", "ls", "--history", "--json").stdout))


def submit(area: Path, home: Path, *args: str) -> list[dict[str, object]]:
    rows = json.loads(ok(area, home, "queue", "submit", "--site", "hpc", *args, "--json").stdout)
    assert rows and all(r["state"] == "queued" for r in rows), rows
    return list(rows)


def where_of(area: Path, home: Path, job_id: object) -> tuple[str, str]:
    shown = json.loads(ok(area, home, "job", "show", str(job_id), "--json").stdout)
    slurm_id, host = Path(str(shown["workdir"]), "where.txt").read_text().split()
    return slurm_id, host


def count_is(table: str, where: str, count: int) -> str:
    """SQL giving one row once exactly `count` rows of `table` match `where`."""
    return f"SELECT 1 FROM (SELECT count(*) AS n FROM {table} WHERE {where}) WHERE n = {count}"


def sync_until(area: Path, home: Path, done: str, limit: float = 120) -> list[dict[str, object]]:
    """Sync cycles until `done` (SQL giving one row when finished) holds."""
    cycles = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        result = cli(area, home, "sync", "--json")
        row = json.loads(result.stdout)[0]
        cycles.append(row)
        if db_rows(area, done):
            return cycles
        time.sleep(0.5)
    pytest.fail(f"not done after {limit} s of sync cycles: {done}; last: {cycles[-1:]}")


def test_a_pilot_runs_many_jobs_in_one_allocation(slurm_area: Path, home: Path,
                                                   slurm: SlurmCluster) -> None:
    ok(slurm_area, home, "job", "create", "--app", "where", "--site", "hpc", "--count", "40")
    # The idle exit leaves room for a loaded machine's launch to start before the pilot gives up
    # (with 2 s it sometimes left before the first job reached it).
    [pilot] = submit(slurm_area, home, "--nodes", "1", "--walltime", "5", "--idle-exit", "8")
    summary = json.loads(ok(slurm_area, home, "launch", "--site", "hpc", "--json").stdout)
    assert summary["by_status"] == {"PASS": 40}, summary
    seen = {where_of(slurm_area, home, row["id"]) for row in jobs(slurm_area, home)}
    assert seen == {(str(pilot["scheduler_id"]), slurm.hostname)}  # all inside the one pilot
    # The pilot leaves when idle; a later poll finds it finished with exit code 0.
    sync_until(slurm_area, home, "SELECT 1 FROM batch_job WHERE state = 'finished'")
    [row] = batch_rows(slurm_area, home)
    assert row["exit_code"] == 0 and row["message"] == "", row


def test_direct_mode_submits_one_batch_job_per_job(slurm_area: Path, home: Path,
                                                   slurm: SlurmCluster) -> None:
    ok(slurm_area, home, "job", "create", "--app", "where", "--site", "hpc", "--count", "3",
       "--walltime", "1")
    ok(slurm_area, home, "job", "create", "--app", "fail", "--site", "hpc", "-t", "kind=bad",
       "--walltime", "1")
    rows = submit(slurm_area, home, "--mode", "direct")
    assert len(rows) == 4 and {r["mode"] for r in rows} == {"direct"}
    cycles = sync_until(slurm_area, home, count_is("job", "state = 'COMPLETED'", 4))
    # One scheduler status command per sync cycle, whatever the number of batch jobs.
    assert {c["status_commands"] for c in cycles if c["ok"]} <= {0, 1}
    assert any(c["status_commands"] == 1 for c in cycles)
    by_job = {int(str(j["id"])): j for j in jobs(slurm_area, home)}
    statuses = sorted(str(j["status"]) for j in by_job.values())
    assert statuses == ["FAIL", "PASS", "PASS", "PASS"]
    slurm_ids = set()
    for job_id, job in by_job.items():
        if job["status"] == "PASS":
            slurm_id, host = where_of(slurm_area, home, job_id)
            assert host == slurm.hostname
            slurm_ids.add(slurm_id)
    submitted = {str(r["scheduler_id"]) for r in rows}
    assert len(slurm_ids) == 3 and slurm_ids <= submitted  # each job in its own allocation
    failed = next(j for j in by_job.values() if j["status"] == "FAIL")
    assert "exit code 3" in str(failed["message"]) and "broken" in str(failed["message"])
    sync_until(slurm_area, home, count_is("batch_job", "state = 'finished'", 4))
    assert {r["exit_code"] for r in batch_rows(slurm_area, home)} == {0}


def test_direct_mode_runs_a_two_level_suite_level_by_level(slurm_area: Path, home: Path,
                                                            slurm: SlurmCluster) -> None:
    """Issue 14, item 10: one `queue submit --mode direct` for the first level; the launcher
    submits the second level as it becomes READY, one Slurm job per job."""
    where = 'printf "%s\\n" "$SLURM_JOB_ID" > "$MEGARUN_RUN_DIR/slurm-id"'
    for test, head in (("build", ""), ("unit", 'waiton = ["build"]\n[items]\nN = [1, 2]\n')):
        folder = slurm_area / "tests" / test
        folder.mkdir(parents=True)
        (folder / "test.toml").write_text(
            f"steps = [{{ name = \"where\", cmd = {json.dumps(where)} }}]\n" + head)
    run = ("--target", "linux", "--runname", "direct")
    first = cli(slurm_area, home, "run", *run, "--site", "hpc", "--quiet")
    assert first.returncode == 3 and "no batch job is open" in first.stderr, first.stderr
    [build] = submit(slurm_area, home, "--mode", "direct", "--walltime", "2")
    summary = json.loads(ok(slurm_area, home, "launch", "--site", "hpc", "--json").stdout)
    assert summary["by_status"] == {"PASS": 3}, summary
    ran = db_rows(slurm_area, "SELECT j.test, j.workdir, b.scheduler_id, b.mode FROM job j "
                              "JOIN batch_job b ON b.id = j.batch_job_id ORDER BY j.id")
    assert [(test, mode) for test, _, _, mode in ran] == [
        ("build", "direct"), ("unit", "direct"), ("unit", "direct")]
    assert ran[0][2] == build["scheduler_id"]
    seen = [Path(str(workdir), "slurm-id").read_text().strip() for _, workdir, _, _ in ran]
    assert seen == [str(sid) for _, _, sid, _ in ran]  # each job inside its own allocation
    assert len(set(seen)) == 3
    assert len(batch_rows(slurm_area, home)) == 3  # nothing submitted twice


def test_queue_rm_cancels_a_running_pilot_and_its_jobs_end(slurm_area: Path, home: Path,
                                                           slurm: SlurmCluster) -> None:
    ok(slurm_area, home, "job", "create", "--app", "nap", "--site", "hpc")
    [pilot] = submit(slurm_area, home, "--nodes", "1", "--walltime", "5")
    sync_until(slurm_area, home, "SELECT 1 FROM job WHERE state = 'RUNNING'")
    assert batch_rows(slurm_area, home)[0]["state"] == "running"
    rm = json.loads(ok(slurm_area, home, "queue", "rm", str(pilot["id"]), "--json").stdout)
    assert rm["state"] == "cancelled"
    sync_until(slurm_area, home, "SELECT 1 FROM job WHERE state NOT IN "
               "('RUNNING','QUEUED','LAUNCHED','KILLREQ')")
    [job] = jobs(slurm_area, home)
    assert job["state"] in ("KILLED", "DEAD"), job  # never left running, never PASS
    assert slurm.job(str(pilot["scheduler_id"])).get("JobState", "CANCELLED") == "CANCELLED"
    again = cli(slurm_area, home, "queue", "rm", str(pilot["id"]))
    assert again.returncode == 2 and "nothing to cancel" in again.stderr


def test_job_kill_inside_a_pilot(slurm_area: Path, home: Path, slurm: SlurmCluster) -> None:
    ok(slurm_area, home, "job", "create", "--app", "nap", "--site", "hpc")
    ok(slurm_area, home, "job", "create", "--app", "where", "--site", "hpc")
    submit(slurm_area, home, "--nodes", "1", "--walltime", "5", "--idle-exit", "2")
    sync_until(slurm_area, home, "SELECT 1 FROM job WHERE state = 'RUNNING' AND app_id = "
               "(SELECT id FROM app WHERE name = 'nap')")
    nap = next(j for j in jobs(slurm_area, home) if j["app"] == "nap")
    ok(slurm_area, home, "job", "kill", str(nap["id"]))
    sync_until(slurm_area, home, count_is("job", "state IN ('COMPLETED', 'KILLED')", 2))
    states = {str(j["app"]): (j["state"], j["status"]) for j in jobs(slurm_area, home)}
    assert states == {"nap": ("KILLED", "ABORT"), "where": ("COMPLETED", "PASS")}


def test_a_request_that_can_never_run_is_reported(slurm_area: Path, home: Path,
                                                   slurm: SlurmCluster) -> None:
    too_many = str(slurm.cpus * 32)
    [pilot] = submit(slurm_area, home, "--nodes", "1", "--walltime", "5", "--set",
                     f"ntasks={too_many}")
    try:
        def reported() -> bool:
            cli(slurm_area, home, "sync")
            return "can never run" in str(batch_rows(slurm_area, home)[0]["message"])
        wait_for(reported, "the never-runnable request to be reported", limit=60)
        [row] = batch_rows(slurm_area, home)
        assert row["state"] == "queued" and "PartitionConfig" in str(row["message"])
    finally:
        ok(slurm_area, home, "queue", "rm", str(pilot["id"]))


def test_a_batch_job_missing_from_the_queue_is_judged_by_its_exit_file(
        slurm_area: Path, home: Path, slurm: SlurmCluster) -> None:
    submit(slurm_area, home, "--nodes", "1", "--walltime", "5", "--idle-exit", "1")
    sync_until(slurm_area, home, "SELECT 1 FROM batch_job WHERE state = 'finished'")
    [row] = batch_rows(slurm_area, home)
    assert row["exit_code"] == 0  # it wrote its exit code: finished cleanly
    # A second pilot that vanishes from the queue without an exit-code file: never a success.
    # Its row names a scheduler id Slurm never had, so no script of it can write an exit file
    # (a real pilot renamed after submission could finish first and write one).
    with sqlite3.connect(slurm_area / ".megarun" / "work.db") as db:
        lost = db.execute(
            "INSERT INTO batch_job (site_id, scheduler_id, state, mode, nodes, walltime, queue, "
            "account, tags, message, created, native, extras, submitted) "
            "SELECT site_id, '999999', 'queued', mode, nodes, walltime, queue, account, tags, "
            "'', created, '', extras, submitted FROM batch_job WHERE id = ?",
            (row["id"],)).lastrowid
    sync_until(slurm_area, home, f"SELECT 1 FROM batch_job WHERE id = {lost} AND "
               "state = 'finished'")
    row = next(r for r in batch_rows(slurm_area, home) if r["id"] == lost)
    assert row["exit_code"] is None
    assert "gone from the queue" in str(row["message"]) and "no exit code" in str(row["message"])


def test_submit_refused_by_the_scheduler_keeps_the_reason(slurm_area: Path, home: Path,
                                                          slurm: SlurmCluster) -> None:
    result = cli(slurm_area, home, "queue", "submit", "--site", "hpc", "--nodes", "1",
                 "--walltime", "5", "--queue", "no-such-partition", "--json")
    assert result.returncode == 3, result.stderr
    [row] = json.loads(result.stdout)
    assert row["state"] == "submit_failed" and "partition" in str(row["message"]).lower()
    assert "Traceback" not in result.stderr


def test_batch_scripts_are_private_and_quote_values(slurm_area: Path, home: Path,
                                                     tmp_path: Path, slurm: SlurmCluster) -> None:
    [pilot] = submit(slurm_area, home, "--nodes", "1", "--walltime", "5", "--idle-exit", "1",
                     "--set", "comment=nightly run;1")
    script = tmp_path / "hpc-work" / "batch" / f"{pilot['id']}.sh"
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o700
    text = script.read_text()
    assert '#SBATCH --comment="nightly run;1"' in text and "--walltime-end" in text
    sync_until(slurm_area, home, "SELECT 1 FROM batch_job WHERE state = 'finished'")

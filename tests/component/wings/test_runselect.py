"""Picking finished runs by target, runname and age."""

from __future__ import annotations

import time

from megarun.archive.runselect import RunSelection, select_finished_runs
from megarun.homehost.context import Context

JOB_SQL = ("INSERT INTO job (run_id, command, state, status, created, ended, name, params, tags,"
           " env, nodes, ranks_per_node, threads_per_rank, gpus_per_rank, node_packing_count,"
           " priority, attempt, runs, max_attempts, message) VALUES (?, 'true', ?, 'PASS', ?, ?,"
           " '', '{}', '{}', '{}', 1, 1, 1, 0, 0, 0, 1, 1, 1, '')")


def _run(ctx: Context, target: str, runname: str, ended: float | None, state: str = "COMPLETED",
         run_state: str = "open") -> int:
    cursor = ctx.db.execute_sql(
        "INSERT INTO run (target, runname, created, config_hash, state) VALUES (?, ?, ?, '', ?)",
        (target, runname, 1000.0, run_state))
    run_id = int(cursor.lastrowid)
    ctx.db.execute_sql(JOB_SQL, (run_id, state, 1000.0, ended))
    return run_id


def test_selects_finished_runs_by_glob_and_age(ctx: Context) -> None:
    now = time.time()
    old = _run(ctx, "linux/x86", "nightly-1", now - 40 * 86400)
    recent = _run(ctx, "linux/x86", "nightly-2", now - 3600)
    other = _run(ctx, "mac/arm", "nightly-1", now - 40 * 86400)
    _run(ctx, "linux/x86", "running", None, state="RUNNING")
    _run(ctx, "linux/x86", "moved", now - 50 * 86400, run_state="MOVED")
    assert select_finished_runs(ctx.db, RunSelection()) == [old, other, recent]
    assert select_finished_runs(ctx.db, RunSelection(older_than=30 * 86400)) == [old, other]
    assert select_finished_runs(ctx.db, RunSelection(target="linux/*")) == [old, recent]
    assert select_finished_runs(ctx.db, RunSelection(runname="nightly-[2-9]")) == [recent]
    assert select_finished_runs(ctx.db, RunSelection(target="mac/arm", runname="nightly-1"),
                                now=now) == [other]
    assert len(select_finished_runs(ctx.db, RunSelection(), include_moved=True)) == 4


def test_run_without_jobs_ages_from_creation(ctx: Context) -> None:
    cursor = ctx.db.execute_sql("INSERT INTO run (target, runname, created, config_hash, state) "
                                "VALUES ('t', 'empty', ?, '', 'open')", (time.time() - 7200,))
    assert select_finished_runs(ctx.db, RunSelection(older_than=3600)) == [cursor.lastrowid]
    assert select_finished_runs(ctx.db, RunSelection(older_than=3 * 3600)) == []

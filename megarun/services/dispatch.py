"""Dispatch: move READY jobs of a site into its spool queue as bundles (READY -> QUEUED)."""

from __future__ import annotations

import json
from typing import Any

from peewee import SqliteDatabase

from megarun.core.lifecycle import Chain
from megarun.core.states import JobState
from megarun.db.connection import write_transaction
from megarun.db.jobstore import JobRow, load_rows, save_rows
from megarun.executors.spool import LocalSpool
from megarun.services.lifecycle import apply_chain
from megarun.services.sites import SiteInfo

BUNDLE_SIZE = 2_000

_SELECT = (
    "SELECT id, command, env, nodes, ranks_per_node, threads_per_rank, gpus_per_rank, walltime, "
    "workdir, steps, rules, jobgroup FROM job WHERE site_id = ? AND state = 'READY' {run}{groups} "
    "ORDER BY priority DESC, id LIMIT ?"
)


def job_spec(values: tuple[Any, ...], attempt: int, workdir: str) -> dict[str, Any]:
    """The spool spec of one job (docs/spool-protocol.md)."""
    (job_id, command, env, nodes, ranks, threads, gpus_per_rank, walltime, _workdir, steps,
     rules) = values[:11]
    spec = {
        "id": job_id,
        "attempt": attempt,
        "workdir": workdir,
        "steps": json.loads(steps) if steps else [{"name": "job", "cmd": command}],
        "env": json.loads(env),
        "nodes": nodes,
        "cpus": ranks * threads,
        "gpus": ranks * gpus_per_rank,
        "threads": threads,
        "timeout": walltime * 60.0 if walltime else None,
    }
    if rules:
        spec["rules"] = json.loads(rules)
    return spec


def dispatch_ready_jobs(db: SqliteDatabase, site_id: int, site: SiteInfo,
                        limit: int = BUNDLE_SIZE, run_id: int | None = None,
                        group_budget: dict[str, int] | None = None) -> int:
    """Queue up to `limit` READY jobs of the site in one bundle; return how many.

    `group_budget` caps how many jobs of each named jobgroup may go (launch gates).
    The bundle is written under a hidden name first, the jobs become QUEUED in one
    transaction, and only then is the bundle renamed into the queue: a crash before the
    commit leaves a hidden file (removed at the next start), a crash after it leaves QUEUED
    jobs that the next launcher finds in no bundle and sends back to READY.
    """
    if limit <= 0:
        return 0
    spool = site.spool()
    with write_transaction(db):
        selected = _select_ready(db, site_id, limit, run_id, group_budget or {})
        if not selected:
            return 0
        rows = load_rows(db, [values[0] for values in selected])
        specs = [_queue(rows[values[0]], values, spool) for values in selected]
        staged = spool.stage_bundle(specs)
        try:
            save_rows(db, rows.values())
        except BaseException:
            spool.discard(staged)
            raise
    spool.publish(staged)
    return len(specs)


def _select_ready(db: SqliteDatabase, site_id: int, limit: int, run_id: int | None,
                  group_budget: dict[str, int]) -> list[tuple[Any, ...]]:
    """READY jobs by priority; jobgroups with no budget left are skipped, others trimmed."""
    full = [group for group, left in group_budget.items() if left <= 0]
    params: list[Any] = [site_id]
    run = ""
    if run_id is not None:
        run, params = "AND run_id = ? ", [*params, run_id]
    groups = ""
    if full:
        groups = f"AND (jobgroup IS NULL OR jobgroup NOT IN ({','.join('?' * len(full))})) "
        params += full
    selected = db.execute_sql(_SELECT.format(run=run, groups=groups), (*params, limit)).fetchall()
    if not group_budget:
        return list(selected)
    left = dict(group_budget)
    kept = []
    for values in selected:
        group = values[11]
        if group in left:
            if left[group] <= 0:
                continue
            left[group] -= 1
        kept.append(values)
    return kept


def _queue(row: JobRow, values: tuple[Any, ...], spool: LocalSpool) -> dict[str, Any]:
    apply_chain(row, Chain(row.snapshot).to(JobState.QUEUED))
    row.workdir = values[8] or spool.job_dir(row.id)
    row.agent = None
    row.exit_code = None
    row.message = ""
    return job_spec(values, row.snapshot.attempt, row.workdir)

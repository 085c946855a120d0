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
    "workdir, steps, rules FROM job WHERE site_id = ? AND state = 'READY' {run} "
    "ORDER BY priority DESC, id LIMIT ?"
)


def job_spec(values: tuple[Any, ...], attempt: int, workdir: str) -> dict[str, Any]:
    """The spool spec of one job (docs/spool-protocol.md)."""
    (job_id, command, env, nodes, ranks, threads, gpus_per_rank, walltime, _workdir, steps,
     rules) = values
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
                        limit: int = BUNDLE_SIZE, run_id: int | None = None) -> int:
    """Queue up to `limit` READY jobs of the site in one bundle; return how many.

    The bundle is written under a hidden name first, the jobs become QUEUED in one
    transaction, and only then is the bundle renamed into the queue: a crash before the
    commit leaves a hidden file (removed at the next start), a crash after it leaves QUEUED
    jobs that the next launcher finds in no bundle and sends back to READY.
    """
    spool = site.spool()
    with write_transaction(db):
        if run_id is None:
            selected = db.execute_sql(_SELECT.format(run=""), (site_id, limit)).fetchall()
        else:
            selected = db.execute_sql(_SELECT.format(run="AND run_id = ?"),
                                      (site_id, run_id, limit)).fetchall()
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


def _queue(row: JobRow, values: tuple[Any, ...], spool: LocalSpool) -> dict[str, Any]:
    apply_chain(row, Chain(row.snapshot).to(JobState.QUEUED))
    row.workdir = values[8] or spool.job_dir(row.id)
    row.agent = None
    row.exit_code = None
    row.message = ""
    return job_spec(values, row.snapshot.attempt, row.workdir)

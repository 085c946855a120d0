"""Dispatch: move READY jobs of a site into its spool queue as bundles (READY -> QUEUED)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.campaign.rerun_step import spec_steps
from megarun.core.lifecycle import Chain, finish
from megarun.core.states import FINAL_STATES, JobState
from megarun.db.connection import write_transaction
from megarun.db.jobstore import JobRow, load_rows, save_rows
from megarun.db.transitions import apply_chain, ended_ids, settle_children
from megarun.engine.staging import (
    AppStaging,
    area_of,
    owe_stage_out,
    stage_in_ready,
    staging_apps,
)
from megarun.sites.local_spool import LocalSpool, StagedBundle
from megarun.sites.registry import SiteInfo

BUNDLE_SIZE = 2_000


@dataclass(frozen=True)
class PoolTarget:
    """Where dispatched jobs go on a batch site: one batch job's pool of the spool queue.

    `pool` None is the site's shared queue (pilots without tags take from it). `tags` keeps
    only READY jobs carrying all of them; `job_ids` exactly those jobs (direct mode).
    """

    pool: str | None
    batch_job: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    job_ids: tuple[int, ...] = ()

    def where(self) -> tuple[str, list[Any]]:
        """Extra SQL conditions (with their parameters) selecting this target's jobs."""
        sql = ""
        params: list[Any] = []
        if self.job_ids:
            sql += f"AND id IN ({','.join('?' * len(self.job_ids))}) "
            params += list(self.job_ids)
        for key, value in sorted(self.tags.items()):
            sql += "AND id IN (SELECT job_id FROM job_tag WHERE key = ? AND value = ?) "
            params += [key, value]
        return sql, params

_SELECT = (
    "SELECT id, command, env, nodes, ranks_per_node, threads_per_rank, gpus_per_rank, walltime, "  # noqa: S608
    "workdir, steps, rules, jobgroup, app_id, node_packing_count FROM job "
    f"WHERE site_id = ? AND state = '{JobState.READY.value}' {{run}}{{groups}}{{only}} "
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
        "steps": [{"name": "job", "cmd": command}],
        "env": json.loads(env),
        "nodes": nodes,
        "cpus": ranks * threads,
        "gpus": ranks * gpus_per_rank,
        "threads": threads,
        "ranks_per_node": ranks,
        "gpus_per_rank": gpus_per_rank,
        "timeout": walltime * 60.0 if walltime else None,
    }
    if steps:  # `rerun --step`: the steps kept from an earlier attempt are named, not run
        spec["steps"], kept = spec_steps(json.loads(steps))
        if kept:
            spec["kept_steps"] = kept
    packing = values[13] if len(values) > 13 else 0
    if packing:
        spec["packing"] = packing
    if rules:
        spec["rules"] = json.loads(rules)
    return spec


def dispatch_ready_jobs(db: SqliteDatabase, site_id: int, site: SiteInfo,
                        limit: int = BUNDLE_SIZE, run_id: int | None = None,
                        group_budget: dict[str, int] | None = None,
                        area_root: Path | None = None,
                        ended: dict[str, int] | None = None,
                        target: PoolTarget | None = None) -> int:
    """Queue up to `limit` READY jobs of the site in one bundle; return how many.

    `group_budget` caps how many jobs of each named jobgroup may go (launch gates).
    The bundle is written under a hidden name first, the jobs become QUEUED in one
    transaction, and only then is the bundle renamed into the queue: a crash before the
    commit leaves a hidden file (removed at the next start), a crash after it leaves QUEUED
    jobs that the next launcher finds in no bundle and sends back to READY.

    Jobs whose app has stage_in go afterwards, in a second bundle: their files are copied into
    their run dirs first, with no transaction open (megarun/engine/staging.py). A job whose
    stage-in failed ends FAIL (retried while attempts remain); `ended` (status -> count), when
    given, counts those that ended for good. `area_root` anchors relative home-host paths
    (default: the area of the database). `target` sends the jobs to one batch job's pool
    (only its tagged jobs, or exactly the listed ones) instead of the site's shared queue.
    """
    if limit <= 0:
        return 0
    spool = site.spool()
    apps = staging_apps(db)
    with write_transaction(db):
        selected = _select_ready(db, site_id, limit, run_id, group_budget or {}, target)
        if not selected:
            return 0
        later = [values for values in selected if _stages(apps, values, "in")]
        now = [values for values in selected if not _stages(apps, values, "in")]
        staged = None
        if now:
            rows = load_rows(db, [values[0] for values in now])
            staged = _queue_into_bundle(db, spool, rows, now, apps, target)
    if staged is not None:
        spool.publish(staged)
    if not later:
        return len(now)
    home = area_root or area_of(db)
    return len(now) + _dispatch_after_stage_in(db, site, spool, later, apps, home, ended, target)


def _stages(apps: dict[int, AppStaging], values: tuple[Any, ...], direction: str) -> bool:
    staging = apps.get(values[12]) if apps else None
    if staging is None:
        return False
    return bool(staging.stage_in if direction == "in" else staging.stage_out)


def _queue_into_bundle(db: SqliteDatabase, spool: LocalSpool, rows: dict[int, JobRow],
                       selected: list[tuple[Any, ...]], apps: dict[int, AppStaging],
                       target: PoolTarget | None) -> StagedBundle | None:
    """Queue `selected` (their rows loaded in `rows`), stage their bundle, save every changed
    row of `rows` and record the stage-outs the new attempts owe; call inside a transaction."""
    specs = [_queue(rows[values[0]], values, spool) for values in selected]
    pool = target.pool if target is not None else None
    staged = spool.stage_bundle(specs, pool) if specs else None
    try:
        save_rows(db, rows.values())
        if target is not None and target.batch_job is not None and specs:
            ids = [values[0] for values in selected]
            db.execute_sql(f"UPDATE job SET batch_job_id = ? WHERE id IN ({','.join('?' * len(ids))})",  # noqa: S608
                           (target.batch_job, *ids))
        owe_stage_out(db, [rows[values[0]] for values in selected
                           if _stages(apps, values, "out")])
    except BaseException:
        if staged is not None:
            spool.discard(staged)
        raise
    return staged


def _dispatch_after_stage_in(db: SqliteDatabase, site: SiteInfo, spool: LocalSpool,
                             selected: list[tuple[Any, ...]], apps: dict[int, AppStaging],
                             home: Path, ended: dict[str, int] | None,
                             target: PoolTarget | None) -> int:
    """Stage in, then queue the jobs whose files arrived and fail the others."""
    workdirs = {values[0]: values[8] or spool.job_dir(values[0]) for values in selected}
    outcome = stage_in_ready(db, site, workdirs, apps, home)
    if not outcome:
        return 0
    with write_transaction(db):
        rows = load_rows(db, outcome)
        ready = {job_id for job_id, row in rows.items() if row.snapshot.state is JobState.READY}
        staged_ok = [values for values in selected
                     if values[0] in ready and outcome.get(values[0], "") is None]
        for job_id in sorted(ready):
            reason = outcome[job_id]
            if reason is not None:
                _fail_stage_in(rows[job_id], workdirs[job_id], reason, ended)
        settle_children(db, rows, ended_ids(rows.values()))
        staged = _queue_into_bundle(db, spool, rows, staged_ok, apps, target)
    if staged is not None:
        spool.publish(staged)
    return len(staged_ok)


def _fail_stage_in(row: JobRow, workdir: str, reason: str, ended: dict[str, int] | None) -> None:
    """The attempt is used up as by a job that could not start: FAIL, retried if allowed."""
    message = f"stage-in failed: {reason}"
    apply_chain(row, Chain(row.snapshot).to(JobState.QUEUED, message="stage-in"))
    apply_chain(row, finish(row.snapshot, "error", None, message))
    row.workdir = workdir
    row.agent = None
    row.exit_code = None
    row.message = message
    row.ended = time.time()
    if ended is not None and row.snapshot.state in FINAL_STATES:
        status = row.snapshot.status.value
        ended[status] = ended.get(status, 0) + 1


def _select_ready(db: SqliteDatabase, site_id: int, limit: int, run_id: int | None,
                  group_budget: dict[str, int],
                  target: PoolTarget | None = None) -> list[tuple[Any, ...]]:
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
    only, only_params = target.where() if target is not None else ("", [])
    params += only_params
    sql = _SELECT.format(run=run, groups=groups, only=only)
    selected = db.execute_sql(sql, (*params, limit)).fetchall()
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

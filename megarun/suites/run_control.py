"""Test-suite runs, their control: rerun chosen jobs, clean run paths, kill a run's jobs."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.campaign.control import KillResult, kill_jobs, remove_jobs, reset_jobs
from megarun.campaign.joblogs import CLEANED
from megarun.config.area import Area
from megarun.core.lifecycle import Chain, parents_outcome
from megarun.core.states import (
    ACTIVE_STATES,
    ENDED_STATES,
    SITE_LOAD_STATES,
    JobState,
    JobStatus,
)
from megarun.db.connection import write_transaction
from megarun.db.jobstore import children_of, insert_events, load_rows, parents_of, save_rows
from megarun.db.models import Run
from megarun.db.transitions import apply_chain, preq_fail_message, settle_children
from megarun.errors import UsageError
from megarun.sites.connect import remove_remote_run_paths
from megarun.sites.registry import OpenArea, get_site
from megarun.suites.run_prepare import run_root
from megarun.suites.run_report import run_items


@dataclass(frozen=True)
class CleanResult:
    """What `clean` did to a run (or some of its tests)."""

    jobs: int  # the jobs chosen
    paths_removed: int
    records_removed: int


#: What `rerun` picks by default: every outcome that is not good.
DEFAULT_RERUN = tuple(s.value for s in (JobStatus.FAIL, JobStatus.TIMEOUT, JobStatus.ABORT,
                                         JobStatus.DEAD, JobStatus.PREQ_FAIL, JobStatus.CHECK))


def select_for_rerun(db: SqliteDatabase, run_id: int, statuses: Sequence[str], stale: bool,
                     downstream: bool, testpatt: str | None = None) -> list[int]:
    """Ended jobs of the run with one of `statuses` (or STALE ones), plus their descendants."""
    wanted = {s.upper() for s in statuses}
    chosen = set()
    for item in run_items(db, run_id, testpatt):
        ended = item.state in ENDED_STATES
        if (ended and item.status in wanted) or (stale and item.state == JobState.STALE.value):
            chosen.add(item.id)
    if downstream and chosen:
        frontier = set(chosen)
        while frontier:
            children = children_of(db, frontier) - chosen
            chosen |= children
            frontier = children
    return sorted(chosen)


def rerun_jobs(db: SqliteDatabase, area: Area, job_ids: list[int], clean: bool,
               from_step: str | None = None, from_step_jobs: Sequence[int] = ()) -> int:
    """Reset the jobs (fresh attempts, the area's retries); those whose parents are not done
    wait for them again.

    `from_step` (rerun --step) makes `from_step_jobs` start at that step in their existing run
    path; the other jobs run every step.
    """
    if not job_ids:
        return 0
    if clean:
        clean_paths(db, area, job_ids)
    retries = area.config.launcher.retries
    stepped = set(from_step_jobs) if from_step is not None else set()
    if stepped:
        reset_jobs(db, sorted(stepped), retries, from_step)
    whole = [job_id for job_id in job_ids if job_id not in stepped]
    if whole:
        reset_jobs(db, whole, retries)
    _rewait(db, job_ids)
    return len(job_ids)


def _rewait(db: SqliteDatabase, job_ids: list[int]) -> None:
    """Reset jobs whose parents are not done wait again; those a parent still fails end
    PREQ_FAIL at once (naming it), with whatever waits on them: nothing waits forever."""
    with write_transaction(db):
        links = parents_of(db, job_ids)
        rows = load_rows(db, set(job_ids) | {p for ps in links.values() for p, _ in ps})
        failed: set[int] = set()
        for child, parents in links.items():
            row = rows[child]
            known = [(p, rows[p].snapshot.state, rows[p].snapshot.status, m) for p, m in parents]
            outcome = parents_outcome([(s, st) for _, s, st, _ in known], [m for *_, m in known])
            if row.snapshot.state is not JobState.READY or outcome == "ready":
                continue
            chain = Chain(row.snapshot).to(JobState.AWAITING_PARENTS,
                                           message="waits for its prerequisites")
            if outcome == "failed":
                row.message = preq_fail_message(db, known)
                chain.to(JobState.COMPLETED, JobStatus.PREQ_FAIL, row.message)
                failed.add(child)
            apply_chain(row, chain)
        settle_children(db, rows, failed)
        save_rows(db, rows.values())


def clean_paths(db: SqliteDatabase, area: Area, job_ids: list[int],
                preview: list[str] | None = None) -> int:
    """Remove the run paths of finished or waiting jobs (never of a running one).

    Only paths under a run root are removed: the area's, or `<work dir>/runs` of an SSH site
    (removed there, in one round trip per site). With `preview` nothing is removed: the paths
    that would be are appended to it (an SSH site's as SITE:PATH, whether they exist or not).
    """
    root = run_root(area).resolve()
    removed = 0
    remote: dict[int, list[str]] = {}
    remote_sites = {int(i): n for i, n in db.execute_sql(
        "SELECT id, name FROM site WHERE host IS NOT NULL").fetchall()}
    cleaned: list[tuple[Any, ...]] = []
    for part in _chunks(job_ids):
        marks = ",".join("?" * len(part))
        sql = ("SELECT id, state, workdir, site_id, status, attempt FROM job "  # noqa: S608
               f"WHERE id IN ({marks})")
        rows = db.execute_sql(sql, tuple(part)).fetchall()
        for job_id, state, workdir, sid, status, attempt in rows:
            if state in ACTIVE_STATES:
                raise UsageError(f"job {job_id} is {state}; kill it first (megarun kill)")
            if sid in remote_sites:
                if workdir:
                    remote.setdefault(sid, []).append(str(workdir))
                    cleaned.append((job_id, state, status, attempt, workdir))
                continue
            path = Path(workdir).resolve() if workdir else None
            if path is None or root not in path.parents:
                continue  # never delete outside the run root
            if preview is not None:  # a dry run: nothing goes, not even the empty folders above
                if path.exists():
                    preview.append(str(path))
                continue
            if path.exists():
                shutil.rmtree(path)
                removed += 1
                cleaned.append((job_id, state, status, attempt, workdir))
            remove_empty_parents(path, root)
    if preview is not None:
        preview.extend(f"{remote_sites[sid]}:{where}" for sid, paths in remote.items()
                       for where in paths)
        return 0
    for sid, paths in remote.items():
        site = get_site(OpenArea(area, db), remote_sites[sid])
        removed += remove_remote_run_paths(site, f"{site.workdir}/runs", paths)
    _record_cleaned(db, cleaned)
    return removed


def _record_cleaned(db: SqliteDatabase, cleaned: list[tuple[Any, ...]]) -> None:
    """One event per job whose run path was removed (its state unchanged): `job logs` then
    says the logs were removed, not that they do not exist yet."""
    if not cleaned:
        return
    now = time.time()
    with write_transaction(db):
        insert_events(db, [(job_id, now, state, state, status, attempt, CLEANED,
                            json.dumps({"cleaned": workdir}))
                           for job_id, state, status, attempt, workdir in cleaned])


def remove_empty_parents(path: Path, root: Path) -> None:
    """Remove the folders above `path` that are now empty, up to `root` (kept): a cleaned run
    leaves no empty <target>/<runname>/<test> folders, and a folder holding anything stays."""
    for folder in path.parents:
        if folder == root or root not in folder.parents:
            return
        try:
            folder.rmdir()  # fails on a folder that is not empty: it stays, and so do those above
        except FileNotFoundError:
            continue  # removed by an earlier clean
        except OSError:
            return


def _chunks(ids: Sequence[int], size: int = 500) -> list[Sequence[int]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def clean_run(db: SqliteDatabase, area: Area, run: Run, testpatt: str | None,
              keep_records: bool) -> CleanResult:
    ids = [i.id for i in run_items(db, int(run.id), testpatt)]
    files = clean_paths(db, area, ids)
    records = 0
    if not keep_records and ids:
        records = len(remove_jobs(db, ids))
        with write_transaction(db):
            left = db.execute_sql("SELECT count(*) FROM job WHERE run_id = ?",
                                  (run.id,)).fetchone()[0]
            if left == 0:
                db.execute_sql("DELETE FROM run_test WHERE run_id = ?", (run.id,))
                db.execute_sql("DELETE FROM run WHERE id = ?", (run.id,))
    return CleanResult(len(ids), files, records)


@dataclass(frozen=True)
class CleanPreview:
    """What `clean` would remove: run paths, job records, and the run's own record."""

    jobs: int
    paths: list[str]
    records: list[int]
    run_record: bool


def preview_clean(db: SqliteDatabase, area: Area, run: Run, testpatt: str | None,
                  keep_records: bool) -> CleanPreview:
    """`clean_run` without removing anything (a running job is refused as by clean_run)."""
    ids = [i.id for i in run_items(db, int(run.id), testpatt)]
    paths: list[str] = []
    clean_paths(db, area, ids, paths)
    records = [] if keep_records else ids
    total = db.execute_sql("SELECT count(*) FROM job WHERE run_id = ?", (run.id,)).fetchone()[0]
    return CleanPreview(len(ids), paths, records, bool(records) and total == len(ids))


#: The jobs `kill` of a run stops: waiting to run (not yet CREATED ones) or held by an agent.
_KILLABLE = SITE_LOAD_STATES | {JobState.AWAITING_PARENTS}


def kill_run(db: SqliteDatabase, area: Area, run: Run, testpatt: str | None) -> KillResult:
    ids = [i.id for i in run_items(db, int(run.id), testpatt) if i.state in _KILLABLE]
    return kill_jobs(db, area, ids) if ids else KillResult()

"""Test-suite runs: expand (target, runname, tests x items) into jobs, continue, judge, report.

A run is one (target, runname). `prepare_run` creates the jobs a run lacks (never a second job
for the same test item), marks COMPLETED jobs STALE when their test's definition changed, and
returns what it did; the launcher then runs the READY jobs like any others.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.campaign.jobs import kill_jobs, known_runs, next_job_id, remove_jobs, reset_jobs
from megarun.core.lifecycle import Chain, parents_outcome
from megarun.core.rollup import count_items, rollup_status
from megarun.core.states import (
    ACTIVE_STATES,
    ENDED_STATES,
    FAILING_STATUSES,
    SITE_LOAD_STATES,
    JobState,
    JobStatus,
    sql_list,
)
from megarun.db.connection import execute_many, write_transaction
from megarun.db.jobstore import (
    children_of,
    chunks,
    insert_events,
    load_rows,
    load_rows_where,
    parents_of,
    save_rows,
)
from megarun.db.models import Run
from megarun.db.transitions import apply_chain, preq_fail_message, settle_children
from megarun.errors import NotFoundError, UsageError
from megarun.homehost.context import Context
from megarun.sites.registry import SiteInfo, get_site, site_id
from megarun.suites.definition import TestDef, load_tests
from megarun.suites.expand import ItemJob, Plan, expand, select_tests
from megarun.suites.stale import (
    Definition,
    changed_tests,
    current_definitions,
    stored_definitions,
)
from megarun.suites.targets import parse_target, pattern_matches, target_variables

#: Default folder (under the area) of run paths: <runroot>/<target>/<runname>/<test>/<item>.
DEFAULT_RUNROOT = "runs"


@dataclass
class RunSetup:
    """What `prepare_run` did."""

    run_id: int
    target: str
    runname: str
    site: str
    tests: list[str]
    jobs: int = 0
    created: int = 0
    stale: int = 0
    skipped: int = 0
    states: dict[str, int] = field(default_factory=dict)
    run_base: str = ""  # where run paths go: the run root, or <work dir>/runs on an SSH site

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run_id, "target": self.target, "runname": self.runname,
                "site": self.site, "tests": self.tests, "jobs": self.jobs,
                "created": self.created, "stale": self.stale, "skipped": self.skipped}


def run_root(ctx: Context) -> Path:
    configured = ctx.area.config.raw.get("runroot", DEFAULT_RUNROOT)
    root = Path(str(configured)).expanduser()
    return root if root.is_absolute() else ctx.area.root / root


def run_base(ctx: Context, site: SiteInfo) -> str:
    """Where a site's run paths go: the area's run root, or `<work dir>/runs` on an SSH site."""
    return f"{site.workdir}/runs" if site.is_remote else str(run_root(ctx))


def runpath(base: str, target: str, runname: str, test: str, itempath: str) -> str:
    path = f"{base}/{target}/{runname}/{test}"
    return f"{path}/{itempath}" if itempath else path


def check_runname(runname: str) -> str:
    if not runname or "/" in runname or runname in (".", "..") or not all(
        c.isalnum() or c in "_.+-" for c in runname
    ):
        raise UsageError(f"invalid runname {runname!r}: use letters, digits, '_', '.', '+' or '-'")
    return runname


def load_plan(ctx: Context, testpatt: str | None) -> tuple[dict[str, TestDef], Plan]:
    tests = load_tests(ctx.area.tests_dir)
    if not tests:
        raise UsageError(f"no tests in {ctx.area.tests_dir} (add tests/<name>/test.toml)")
    return tests, expand(tests, select_tests(tests, testpatt))


def prepare_run(ctx: Context, target: str, runname: str, testpatt: str | None,
                site: SiteInfo, create: bool = True) -> RunSetup:
    """Bring a run up to date with the test definitions, in one transaction.

    Jobs of tests whose definition changed are refreshed (COMPLETED ones become STALE, waiting
    ones simply take the new definition); with `create`, the jobs the run lacks are created.
    """
    keys = parse_target(target, ctx.area.config.keys)
    check_runname(runname)
    tests, plan = load_plan(ctx, testpatt)
    variables = target_variables(ctx.area.config.raw, target, str(ctx.area.root / "megarun.toml"))
    base_env = {**variables, **keys, "MEGARUN_TARGET": target, "MEGARUN_RUNNAME": runname}
    db = ctx.db
    sid = site_id(ctx, site.name)
    setup = RunSetup(0, target, runname, site.name, list(plan.tests),
                     run_base=run_base(ctx, site))
    with write_transaction(db):
        run = _get_or_create_run(ctx, target, runname)
        setup.run_id = int(run.id)
        existing = _existing_jobs(db, setup.run_id)
        current = current_definitions({t: tests[t] for t in plan.tests}, variables, keys)
        changed = _changed_tests(db, setup.run_id, current)
        if changed:
            setup.stale = _mark_stale(db, setup.run_id, changed)
            _refresh(ctx, db, plan, tests, existing, list(changed), base_env, setup)
        new = [i for i, job in enumerate(plan.jobs) if (job.test, job.itempath) not in existing]
        if new and create:
            _insert_jobs(ctx, db, plan, new, existing, tests, base_env, setup, sid)
        setup.jobs = len(plan.jobs)
    return setup


def _get_or_create_run(ctx: Context, target: str, runname: str) -> Run:
    """The run, made when new; a MOVED run, or a new one where `allow-runs = false`, refused."""
    run = Run.get_or_none((Run.target == target) & (Run.runname == runname))
    if run is not None and run.state == "MOVED":
        from megarun.archive.migrate import moved_message

        raise UsageError(moved_message(target, runname, run.moved_to))
    if run is None and not ctx.area.config.allow_runs:
        raise UsageError(f"this area takes no new runs (allow-runs = false in "
                         f"{ctx.area.root / 'megarun.toml'}); existing runs can still be rerun")
    if run is None:
        run = Run.create(target=target, runname=runname, created=time.time(), state="open")
    return run


def _existing_jobs(db: SqliteDatabase, run_id: int) -> dict[tuple[str, str], int]:
    rows = db.execute_sql("SELECT test, item, id FROM job WHERE run_id = ?", (run_id,))
    return {(test, item or ""): job_id for test, item, job_id in rows}


def _stored_source(text: str) -> str:
    """The test.toml digest a run_test definition was stored with ('' before they were)."""
    stored = json.loads(text)
    return str(stored.get("source", "")) if isinstance(stored, dict) else ""


def _changed_tests(db: SqliteDatabase, run_id: int, current: dict[str, Definition]
                   ) -> dict[str, str]:
    """Store each test's definition for the run; return the tests whose definition changed,
    each with why (megarun.suites.stale)."""
    stored = stored_definitions(db, run_id)
    changed = changed_tests({t: v for t, v in stored.items() if t in current}, current)
    execute_many(db, "INSERT INTO run_test (run_id, test, definition_hash, definition) "
                 "VALUES (?, ?, ?, ?) ON CONFLICT (run_id, test) DO UPDATE SET "
                 "definition_hash = excluded.definition_hash, definition = excluded.definition",
                 [(run_id, name, d.hash, d.text()) for name, d in current.items()
                  if stored.get(name, ("", ""))[0] != d.hash
                  or _stored_source(stored[name][1]) != d.source])
    return changed


def _mark_stale(db: SqliteDatabase, run_id: int, changed: dict[str, str]) -> int:
    """COMPLETED jobs of tests whose definition changed become STALE, saying why."""
    rows = []
    for test, why in changed.items():
        found = load_rows_where(db, f"run_id = ? AND state = '{JobState.COMPLETED.value}' AND test = ?",
                                (run_id, test))
        for row in found:
            apply_chain(row, Chain(row.snapshot).to(JobState.STALE, message=why))
            row.message = why
        rows.extend(found)
    save_rows(db, rows)
    return len(rows)


def _refresh(ctx: Context, db: SqliteDatabase, plan: Plan, tests: dict[str, TestDef],
             existing: dict[tuple[str, str], int], changed: list[str], base_env: dict[str, str],
             setup: RunSetup) -> None:
    """Give the not-running jobs of changed tests their new definition."""
    wanted = set(changed)
    updates = []
    for job in plan.jobs:
        job_id = existing.get((job.test, job.itempath))
        if job_id is None or job.test not in wanted:
            continue
        fields = _fields(ctx, job, tests[job.test], setup, base_env)
        updates.append((fields["command"], fields["steps"], fields["rules"], fields["jobgroup"],
                        fields["env"], fields["walltime"], fields["priority"], job_id))
    execute_many(db, "UPDATE job SET command = ?, steps = ?, rules = ?, jobgroup = ?, env = ?, "  # noqa: S608
                 "walltime = ?, priority = ? WHERE id = ? AND state NOT IN "
                 f"({sql_list(ACTIVE_STATES)})", updates)


def _insert_jobs(ctx: Context, db: SqliteDatabase, plan: Plan, new: list[int],
                 existing: dict[tuple[str, str], int], tests: dict[str, TestDef],
                 base_env: dict[str, str], setup: RunSetup, sid: int) -> None:
    first = next_job_id(db)
    ids: dict[int, int] = {}
    for index, job in enumerate(plan.jobs):
        found = existing.get((job.test, job.itempath))
        ids[index] = found if found is not None else 0
    for offset, index in enumerate(new):
        ids[index] = first + offset
    parents: dict[int, list[tuple[int, str]]] = {}
    for parent, child in plan.edges:
        if ids[child] >= first:
            mode = "toplevel" if tests[plan.jobs[child].test].waiton_mode == "toplevel" else "normal"
            parents.setdefault(child, []).append((ids[parent], mode))
    known = load_rows(db, {p for links in parents.values() for p, _ in links if p < first})
    now = time.time()
    values = []
    for index in new:
        job, test = plan.jobs[index], tests[plan.jobs[index].test]
        state, status, message = _initial(db, test, setup.target, parents.get(index, []), known)
        setup.states[state.value] = setup.states.get(state.value, 0) + 1
        setup.skipped += status is JobStatus.SKIP
        values.append(_row(ctx, job, test, ids[index], sid, setup, base_env, state, status,
                           message, now))
    execute_many(db, _INSERT, values)
    execute_many(db, "INSERT INTO job_tag (job_id, key, value) VALUES (?, ?, ?)",
                 [(ids[i], key, value) for i in new
                  for key, value in json.loads(_item_tags(plan.jobs[i])).items()])
    links = [(p, ids[child], mode) for child, ps in parents.items() for p, mode in ps]
    execute_many(db, "INSERT INTO job_dependency (parent_id, child_id, mode) VALUES (?, ?, ?)",
                 links)
    last = first + len(new) - 1
    db.execute_sql(_CREATED_EVENTS, (now, first, last))
    setup.created = len(new)


def _initial(db: SqliteDatabase, test: TestDef, target: str, links: list[tuple[int, str]],
             known: dict[int, Any]) -> tuple[JobState, JobStatus, str]:
    if any(pattern_matches(p, target) for p in test.skip_targets):
        return JobState.COMPLETED, JobStatus.SKIP, f"skipped on target {target}"
    if not links:
        return JobState.READY, JobStatus.NA, ""
    old = [(p, known[p].snapshot.state, known[p].snapshot.status, mode) for p, mode in links
           if p in known]
    if len(old) < len(links):
        return JobState.AWAITING_PARENTS, JobStatus.NA, ""  # some parents are new: they wait
    outcome = parents_outcome([(s, st) for _, s, st, _ in old], [m for _, _, _, m in old])
    if outcome == "failed":
        return JobState.COMPLETED, JobStatus.PREQ_FAIL, preq_fail_message(db, old)
    return (JobState.READY if outcome == "ready" else JobState.AWAITING_PARENTS), JobStatus.NA, ""


_INSERT = (
    "INSERT INTO job (id, name, run_id, test, item, site_id, command, steps, rules, jobgroup, "
    "params, tags, env, nodes, ranks_per_node, threads_per_rank, gpus_per_rank, walltime, "
    "priority, state, status, attempt, runs, max_attempts, workdir, message, created) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?, 1, 1, 1, 0, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?)"
)
_CREATED_EVENTS = (
    "INSERT INTO event (job, time, from_state, to_state, status, attempt, message, data) "  # noqa: S608
    f"SELECT id, ?, '{JobState.CREATED.value}', state, status, 0, message, NULL FROM job "
    "WHERE id BETWEEN ? AND ?"
)


def _fields(ctx: Context, job: ItemJob, test: TestDef, setup: RunSetup,
            base_env: dict[str, str]) -> dict[str, Any]:
    """The job columns a test definition decides."""
    path = runpath(setup.run_base, setup.target, setup.runname, job.test, job.itempath)
    env = {**base_env, **test.env, **job.variables, "MEGARUN_TEST": job.test,
           "MEGARUN_ITEMPATH": job.itempath, "MEGARUN_RUN_DIR": str(path)}
    steps = [{"name": s.name, "cmd": s.cmd} for s in test.steps]
    rules = test.rules.as_spec()
    return {"command": steps[0]["cmd"], "steps": json.dumps(steps),
            "rules": json.dumps(rules) if rules else None, "jobgroup": test.jobgroup,
            "env": json.dumps(env), "walltime": test.runtimelim / 60.0 if test.runtimelim else None,
            "priority": test.priority, "workdir": str(path)}


def _item_tags(job: ItemJob) -> str:
    """A suite job's tags: its item's variables (`job ls -t N=1`, the TAGS column)."""
    return json.dumps({key: str(value) for key, value in job.variables.items()})


def _row(ctx: Context, job: ItemJob, test: TestDef, job_id: int, sid: int, setup: RunSetup,
         base_env: dict[str, str], state: JobState, status: JobStatus, message: str,
         now: float) -> tuple[Any, ...]:
    fields = _fields(ctx, job, test, setup, base_env)
    name = f"{job.test}/{job.itempath}" if job.itempath else job.test
    retries = ctx.area.config.launcher.retries
    return (job_id, name, setup.run_id, job.test, job.itempath, sid, fields["command"],
            fields["steps"], fields["rules"], fields["jobgroup"],
            _item_tags(job),
            fields["env"],
            fields["walltime"], fields["priority"], state.value, status.value, 1 + retries,
            fields["workdir"], message, now)


# -- reading runs -------------------------------------------------------------------------------
def get_run(ctx: Context, target: str, runname: str) -> Run:
    ctx.db  # noqa: B018 - opens the database the model reads from
    run = Run.get_or_none((Run.target == target) & (Run.runname == runname))
    if run is None:
        raise NotFoundError(f"no run {runname!r} for target {target!r}; runs: {known_runs()}")
    if run.state == "MOVED":
        from megarun.archive.migrate import moved_message

        raise UsageError(moved_message(target, runname, run.moved_to))
    return run


@dataclass(frozen=True)
class ItemStatus:
    """One job of a run as `status` shows it."""

    id: int
    test: str
    item: str
    state: str
    status: str
    exit_code: int | None
    message: str
    runtime: float | None


def run_items(db: SqliteDatabase, run_id: int, testpatt: str | None = None,
              stale: dict[str, str] | None = None) -> list[ItemStatus]:
    """The run's jobs, by test and item. `stale` (test -> why, megarun.suites.stale): the
    COMPLETED jobs of those tests read STALE with the reason as their message, as `status`
    shows them before `run` or `rerun` writes the mark."""
    rows = db.execute_sql(
        "SELECT id, test, item, state, status, exit_code, message, started, ended FROM job "
        "WHERE run_id = ? ORDER BY test, item", (run_id,)).fetchall()
    changed = stale or {}
    completed = JobState.COMPLETED.value
    items = [ItemStatus(r[0], r[1], r[2] or "", r[3], r[4], r[5], r[6] or "",
                        (r[8] - r[7]) if r[7] and r[8] else None)
             if r[3] != completed or r[1] not in changed else
             ItemStatus(r[0], r[1], r[2] or "", JobState.STALE.value, r[4], r[5], changed[r[1]],
                        (r[8] - r[7]) if r[7] and r[8] else None)
             for r in rows]
    if testpatt:
        items = [i for i in items if pattern_matches(testpatt.split("/")[0], i.test)]
    return items


def rollup(items: Sequence[ItemStatus]) -> dict[str, dict[str, Any]]:
    """Per test: job count, counts by state, the roll-up status and its counts
    (megarun.core.rollup: RUNNING while an item has not ended, else the root cause)."""
    tests: dict[str, dict[str, Any]] = {}
    for item in items:
        entry = tests.setdefault(item.test, {"jobs": 0, "states": {}, "items": []})
        entry["jobs"] += 1
        entry["states"][item.state] = entry["states"].get(item.state, 0) + 1
        entry["items"].append(item)
    for entry in tests.values():
        entry["counts"] = item_counts(entry.pop("items"))
        entry["status"] = rollup_status(entry["counts"])
    return tests


def item_counts(items: Sequence[ItemStatus]) -> dict[str, int]:
    """The roll-up counts of items (megarun.core.rollup rule 1)."""
    groups = Counter((i.state, i.status) for i in items)  # few kinds, however many items
    return count_items((JobState(state), JobStatus(status), number)
                       for (state, status), number in groups.items())


def run_failed(items: Sequence[ItemStatus]) -> bool:
    return any(JobStatus(i.status) in FAILING_STATUSES for i in items)


def site_of_run(ctx: Context, run_id: int) -> str | None:
    row = ctx.db.execute_sql("SELECT site.name FROM job JOIN site ON site.id = job.site_id "
                             "WHERE job.run_id = ? LIMIT 1", (run_id,)).fetchone()
    return str(row[0]) if row else None




# -- rerun, clean, kill ------------------------------------------------------------------------
#: What `rerun` picks by default: every outcome that is not good.
DEFAULT_RERUN = tuple(s.value for s in (JobStatus.FAIL, JobStatus.TIMEOUT, JobStatus.ABORT,
                                         JobStatus.DEAD, JobStatus.PREQ_FAIL, JobStatus.CHECK))


def select_for_rerun(ctx: Context, run_id: int, statuses: Sequence[str], stale: bool,
                     downstream: bool, testpatt: str | None = None) -> list[int]:
    """Ended jobs of the run with one of `statuses` (or STALE ones), plus their descendants."""
    db = ctx.db
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


def rerun_jobs(ctx: Context, job_ids: list[int], clean: bool, from_step: str | None = None,
               from_step_jobs: Sequence[int] = ()) -> int:
    """Reset the jobs (fresh attempts); those whose parents are not done wait for them again.

    `from_step` (rerun --step) makes `from_step_jobs` start at that step in their existing run
    path; the other jobs run every step.
    """
    if not job_ids:
        return 0
    if clean:
        clean_paths(ctx, job_ids)
    stepped = set(from_step_jobs) if from_step is not None else set()
    if stepped:
        reset_jobs(ctx, sorted(stepped), from_step)
    whole = [job_id for job_id in job_ids if job_id not in stepped]
    if whole:
        reset_jobs(ctx, whole)
    _rewait(ctx.db, job_ids)
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


def clean_paths(ctx: Context, job_ids: list[int]) -> int:
    """Remove the run paths of finished or waiting jobs (never of a running one).

    Only paths under a run root are removed: the area's, or `<work dir>/runs` of an SSH site
    (removed there, in one round trip per site).
    """
    root = run_root(ctx).resolve()
    removed = 0
    remote: dict[int, list[str]] = {}
    remote_sites = {int(i): n for i, n in ctx.db.execute_sql(
        "SELECT id, name FROM site WHERE host IS NOT NULL").fetchall()}
    cleaned: list[tuple[Any, ...]] = []
    for part in chunks(job_ids):
        marks = ",".join("?" * len(part))
        sql = ("SELECT id, state, workdir, site_id, status, attempt FROM job "  # noqa: S608
               f"WHERE id IN ({marks})")
        rows = ctx.db.execute_sql(sql, tuple(part)).fetchall()
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
            if path.exists():
                shutil.rmtree(path)
                removed += 1
                cleaned.append((job_id, state, status, attempt, workdir))
            remove_empty_parents(path, root)
    if remote:
        from megarun.sites.connect import remove_remote_run_paths
    for sid, paths in remote.items():
        site = get_site(ctx, remote_sites[sid])
        removed += remove_remote_run_paths(site, f"{site.workdir}/runs", paths)
    _record_cleaned(ctx.db, cleaned)
    return removed


#: The message of the event `clean` leaves on each job whose run path it removed.
CLEANED = "run path removed by clean"


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


def clean_run(ctx: Context, run: Run, testpatt: str | None, keep_records: bool) -> dict[str, int]:
    ids = [i.id for i in run_items(ctx.db, int(run.id), testpatt)]
    files = clean_paths(ctx, ids)
    records = 0
    if not keep_records and ids:
        records = len(remove_jobs(ctx, ids))
        with write_transaction(ctx.db):
            left = ctx.db.execute_sql("SELECT count(*) FROM job WHERE run_id = ?",
                                      (run.id,)).fetchone()[0]
            if left == 0:
                ctx.db.execute_sql("DELETE FROM run_test WHERE run_id = ?", (run.id,))
                ctx.db.execute_sql("DELETE FROM run WHERE id = ?", (run.id,))
    return {"jobs": len(ids), "paths_removed": files, "records_removed": records}


#: The jobs `kill` of a run stops: waiting to run (not yet CREATED ones) or held by an agent.
_KILLABLE = SITE_LOAD_STATES | {JobState.AWAITING_PARENTS}


def kill_run(ctx: Context, run: Run, testpatt: str | None) -> dict[str, list[int]]:
    ids = [i.id for i in run_items(ctx.db, int(run.id), testpatt)
           if i.state in _KILLABLE]
    return kill_jobs(ctx, ids) if ids else {"killed": [], "requested": [], "skipped": []}


# -- listing and export ------------------------------------------------------------------------
def list_runs(ctx: Context, stale: dict[int, set[str]] | None = None) -> list[dict[str, Any]]:
    """Every run with its job count, how many are done and STALE, and its worst status.

    `stale` (megarun.suites.stale.stale_tests_by_run): per run, the tests whose COMPLETED
    jobs count as STALE already, as `status` shows them.
    """
    rows = ctx.db.execute_sql(
        "SELECT run.id, run.target, run.runname, run.created, job.test, job.state, job.status,"
        " count(job.id), run.moved_to FROM run LEFT JOIN job ON job.run_id = run.id"
        " GROUP BY run.id, job.test, job.state, job.status ORDER BY run.created, run.id"
    ).fetchall()
    stale = stale or {}
    runs: dict[int, dict[str, Any]] = {}
    for run_id, target, runname, created, test, state, status, count, moved_to in rows:
        entry = runs.setdefault(run_id, {"target": target, "runname": runname,
                                         "created": created, "jobs": 0, "done": 0, "stale": 0,
                                         "groups": [], "moved_to": moved_to})
        if state is None:
            continue
        entry["jobs"] += count
        if state in ENDED_STATES:
            entry["done"] += count
        if state == JobState.STALE.value or (state == JobState.COMPLETED.value
                                             and test in stale.get(run_id, ())):
            entry["stale"] += count
        entry["groups"].append((JobState(state), JobStatus(status), count))
    result = []
    for entry in runs.values():
        counts = count_items(entry.pop("groups"))
        entry["status"] = "MOVED" if entry["moved_to"] else rollup_status(counts)
        result.append(entry)
    return result

"""Test-suite runs, their preparation: expand (target, runname, tests x items) into jobs.

A run is one (target, runname). `prepare_run` creates the jobs a run lacks (never a second job
for the same test item), marks COMPLETED jobs STALE when their test's definition changed, and
returns what it did; the launcher then runs the READY jobs like any others. Reporting is in
megarun.suites.run_report; rerun, clean and kill in megarun.suites.run_control.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.campaign.create import next_job_id
from megarun.campaign.query import known_runs
from megarun.config.area import Area
from megarun.core.lifecycle import Chain, parents_outcome
from megarun.core.states import ACTIVE_STATES, JobState, JobStatus, sql_list
from megarun.db.connection import execute_many, write_transaction
from megarun.db.jobstore import load_rows, load_rows_where, save_rows
from megarun.db.models import Run
from megarun.db.transitions import apply_chain, preq_fail_message
from megarun.errors import NotFoundError, UsageError
from megarun.sites.registry import SiteInfo
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


def run_root(area: Area) -> Path:
    configured = area.config.raw.get("runroot", DEFAULT_RUNROOT)
    root = Path(str(configured)).expanduser()
    return root if root.is_absolute() else area.root / root


def run_base(area: Area, site: SiteInfo) -> str:
    """Where a site's run paths go: the area's run root, or `<work dir>/runs` on an SSH site."""
    return f"{site.workdir}/runs" if site.is_remote else str(run_root(area))


def runpath(base: str, target: str, runname: str, test: str, itempath: str) -> str:
    path = f"{base}/{target}/{runname}/{test}"
    return f"{path}/{itempath}" if itempath else path


def check_runname(runname: str) -> str:
    if not runname or "/" in runname or runname in (".", "..") or not all(
        c.isalnum() or c in "_.+-" for c in runname
    ):
        raise UsageError(f"invalid runname {runname!r}: use letters, digits, '_', '.', '+' or '-'")
    return runname


def load_plan(area: Area, testpatt: str | None) -> tuple[dict[str, TestDef], Plan]:
    tests = load_tests(area.tests_dir)
    if not tests:
        raise UsageError(f"no tests in {area.tests_dir} (add tests/<name>/test.toml)")
    return tests, expand(tests, select_tests(tests, testpatt))


def prepare_run(db: SqliteDatabase, area: Area, target: str, runname: str,
                testpatt: str | None, site: SiteInfo, create: bool = True) -> RunSetup:
    """Bring a run up to date with the test definitions, in one transaction.

    Jobs of tests whose definition changed are refreshed (COMPLETED ones become STALE, waiting
    ones simply take the new definition); with `create`, the jobs the run lacks are created.
    """
    keys = parse_target(target, area.config.keys)
    check_runname(runname)
    tests, plan = load_plan(area, testpatt)
    variables = target_variables(area.config.raw, target, str(area.root / "megarun.toml"))
    base_env = {**variables, **keys, "MEGARUN_TARGET": target, "MEGARUN_RUNNAME": runname}
    sid = int(db.execute_sql("SELECT id FROM site WHERE name = ?", (site.name,)).fetchone()[0])
    setup = RunSetup(0, target, runname, site.name, list(plan.tests),
                     run_base=run_base(area, site))
    retries = area.config.launcher.retries
    with write_transaction(db):
        run = _get_or_create_run(db, area, target, runname)
        setup.run_id = int(run.id)
        existing = _existing_jobs(db, setup.run_id)
        current = current_definitions({t: tests[t] for t in plan.tests}, variables, keys)
        changed = _changed_tests(db, setup.run_id, current)
        if changed:
            setup.stale = _mark_stale(db, setup.run_id, changed)
            _refresh(db, plan, tests, existing, list(changed), base_env, setup)
        new = [i for i, job in enumerate(plan.jobs) if (job.test, job.itempath) not in existing]
        if new and create:
            _insert_jobs(db, plan, new, existing, tests, base_env, setup, sid, retries)
        setup.jobs = len(plan.jobs)
    return setup


def _get_or_create_run(db: SqliteDatabase, area: Area, target: str, runname: str) -> Run:
    """The run, made when new; a MOVED run, or a new one where `allow-runs = false`, refused."""
    run: Run | None = Run.select().where(
        (Run.target == target) & (Run.runname == runname)).first(db)
    if run is not None and run.state == "MOVED":
        raise UsageError(moved_message(target, runname, run.moved_to))
    if run is None and not area.config.allow_runs:
        raise UsageError(f"this area takes no new runs (allow-runs = false in "
                         f"{area.root / 'megarun.toml'}); existing runs can still be rerun")
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


def _refresh(db: SqliteDatabase, plan: Plan, tests: dict[str, TestDef],
             existing: dict[tuple[str, str], int], changed: list[str], base_env: dict[str, str],
             setup: RunSetup) -> None:
    """Give the not-running jobs of changed tests their new definition."""
    wanted = set(changed)
    updates = []
    for job in plan.jobs:
        job_id = existing.get((job.test, job.itempath))
        if job_id is None or job.test not in wanted:
            continue
        fields = _fields(job, tests[job.test], setup, base_env)
        updates.append((fields["command"], fields["steps"], fields["rules"], fields["jobgroup"],
                        fields["env"], fields["walltime"], fields["priority"], job_id))
    execute_many(db, "UPDATE job SET command = ?, steps = ?, rules = ?, jobgroup = ?, env = ?, "  # noqa: S608
                 "walltime = ?, priority = ? WHERE id = ? AND state NOT IN "
                 f"({sql_list(ACTIVE_STATES)})", updates)


def _insert_jobs(db: SqliteDatabase, plan: Plan, new: list[int],
                 existing: dict[tuple[str, str], int], tests: dict[str, TestDef],
                 base_env: dict[str, str], setup: RunSetup, sid: int, retries: int) -> None:
    """Create the jobs the run lacks on the site `sid`, with 1 + `retries` (the area's)
    attempts each."""
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
        values.append(_row(job, test, ids[index], sid, setup, base_env, state, status,
                           message, now, retries))
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


def _fields(job: ItemJob, test: TestDef, setup: RunSetup,
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


def _row(job: ItemJob, test: TestDef, job_id: int, sid: int, setup: RunSetup,
         base_env: dict[str, str], state: JobState, status: JobStatus, message: str,
         now: float, retries: int) -> tuple[Any, ...]:
    fields = _fields(job, test, setup, base_env)
    name = f"{job.test}/{job.itempath}" if job.itempath else job.test
    return (job_id, name, setup.run_id, job.test, job.itempath, sid, fields["command"],
            fields["steps"], fields["rules"], fields["jobgroup"],
            _item_tags(job),
            fields["env"],
            fields["walltime"], fields["priority"], state.value, status.value, 1 + retries,
            fields["workdir"], message, now)


# -- reading runs -------------------------------------------------------------------------------
def get_run(db: SqliteDatabase, target: str, runname: str) -> Run:
    run: Run | None = Run.select().where(
        (Run.target == target) & (Run.runname == runname)).first(db)
    if run is None:
        raise NotFoundError(f"no run {runname!r} for target {target!r}; runs: {known_runs(db)}")
    if run.state == "MOVED":
        raise UsageError(moved_message(target, runname, run.moved_to))
    return run


def moved_message(target: str, runname: str, destination: str | None) -> str:
    """The one error for commands on a MOVED run (megarun.archive.migrate moves them)."""
    return (f"run {target}/{runname} was moved to the area {destination}; use it there "
            f"(megarun --area {destination} ...)")

"""STALE for plain jobs: what saving a changed app does to the jobs made from it.

A plain job (`job create --app`) is defined by its app's command template, env and staging
(stage_in, stage_out) together with the job's own params. When an app is saved with a
different definition (`app add --replace`, `app sync`), in the same write transaction:

- its COMPLETED jobs become STALE, each with an event "app NAME changed". This is done in SQL,
  never row by row: an app may have a million jobs;
- its jobs that have not ended (waiting or dispatched) get the command rendered from the new
  template and their params, and the new env: whatever runs from now on runs the new
  definition. If the new app cannot render one of them (a required parameter it lacks, a
  template error), nothing is saved and the error names the job;
- an attempt already dispatched (QUEUED to KILLREQ) still runs the command it was sent with:
  it is noted in app_change_due, and if it completes, its result is STALE at once
  (`settle_in_flight`, called where agents' events are ingested); a retry runs the new command.

`job reset` re-renders an ended job the same way (`rerender_ended`), so its rerun runs the app
as it is now. A description, retries, requirements or resources change defines no result: it
changes nothing of the jobs made before (resources may have been set per job when created).
"""

from __future__ import annotations

import json
import time
from typing import Any

from peewee import SqliteDatabase

from megarun.config.apps import AppSpec, render_command
from megarun.core.lifecycle import Chain
from megarun.core.states import ACTIVE_STATES, WAITING_STATES, JobState, is_legal
from megarun.db.jobstore import JobRow, chunks
from megarun.db.transitions import apply_chain
from megarun.errors import UsageError

#: The jobs an app change re-renders at once: those that may still start.
UNENDED = tuple(sorted(state.value for state in WAITING_STATES | ACTIVE_STATES))


def definition_changed(old: AppSpec, new: AppSpec) -> bool:
    """True when saving `new` over `old` changes what the app's jobs run."""
    return (old.command, old.env, old.stage_in, old.stage_out) != \
        (new.command, new.env, new.stage_in, new.stage_out)


def stale_message(name: str) -> str:
    return f"app {name!r} changed"


def mark_completed_stale(db: SqliteDatabase, app_id: int, name: str,
                         now: float | None = None) -> int:
    """COMPLETED jobs of the app become STALE, each with an event; returns how many.

    Two statements over the job table's app_id index: the events first (they read the
    COMPLETED rows), then the update. Call inside the app save's write transaction.
    """
    assert is_legal(JobState.COMPLETED, JobState.STALE)
    stamp = time.time() if now is None else now
    message = stale_message(name)
    completed, stale = JobState.COMPLETED.value, JobState.STALE.value
    db.execute_sql(
        "INSERT INTO event (job, time, from_state, to_state, status, attempt, message, data) "
        "SELECT id, ?, state, ?, status, attempt, ?, NULL FROM job "
        "WHERE app_id = ? AND state = ?", (stamp, stale, message, app_id, completed))
    cursor = db.execute_sql("UPDATE job SET state = ?, message = ? WHERE app_id = ? AND state = ?",
                            (stale, message, app_id, completed))
    return int(cursor.rowcount)


def params_for(spec: AppSpec, stored: dict[str, Any], job_id: int) -> dict[str, Any]:
    """A job's params under `spec`: the values it was created with (defaults of the app it was
    made from included) for the parameters the app still has, the app's defaults for new ones.
    A required parameter the job lacks is a UsageError naming the job."""
    values = {**spec.params, **{k: v for k, v in stored.items() if k in spec.params}}
    missing = sorted(k for k, v in values.items() if v is None)
    if missing:
        raise UsageError(f"job {job_id}: app {spec.name!r} now needs parameter {missing[0]!r}, "
                         "which the job was not given",
                         f"give it a default (megarun app add {spec.name} --replace "
                         f"--param {missing[0]}=DEFAULT ...), or remove the job")
    return values


def render_for_job(spec: AppSpec, stored: dict[str, Any], job_id: int) -> tuple[str, str]:
    """(command, params JSON) of a job under `spec`; a UsageError naming the job if it cannot."""
    values = params_for(spec, stored, job_id)
    try:
        command = render_command(spec.command, values, spec.name)
    except UsageError as exc:
        raise UsageError(f"job {job_id}: {exc.message}") from exc
    return command, json.dumps(values, separators=(",", ":"))


def rerender_unended(db: SqliteDatabase, app_id: int, spec: AppSpec) -> int:
    """Give the app's jobs that have not ended the command of `spec` and its env.

    The template is rendered once per distinct params value (a `--count` of a million jobs
    shares one); the rendered commands go into a temporary table that one UPDATE reads by its
    index. Returns how many jobs were re-rendered.
    """
    states = UNENDED
    marks = ",".join("?" * len(states))
    rendered: list[tuple[str, str, str]] = []
    for params_text, job_id in db.execute_sql(
            f"SELECT params, min(id) FROM job WHERE app_id = ? AND state IN ({marks}) "  # noqa: S608
            "GROUP BY params ORDER BY 2", (app_id, *states)):
        command, params = render_for_job(spec, json.loads(params_text), job_id)
        rendered.append((params_text, command, params))
    if not rendered:
        return 0
    db.execute_sql("CREATE TEMP TABLE IF NOT EXISTS app_render "
                   "(old TEXT PRIMARY KEY, command TEXT, params TEXT)")
    db.execute_sql("DELETE FROM temp.app_render")
    db.cursor().executemany("INSERT INTO temp.app_render VALUES (?, ?, ?)", rendered)
    # subqueries by the temp table's key rather than UPDATE ... FROM (SQLite 3.33 and later)
    update = ("UPDATE job SET "  # noqa: S608
              "command = (SELECT command FROM temp.app_render r WHERE r.old = job.params), "
              "params = (SELECT params FROM temp.app_render r WHERE r.old = job.params), "
              f"env = ? WHERE app_id = ? AND state IN ({marks}) "
              "AND params IN (SELECT old FROM temp.app_render)")
    cursor = db.execute_sql(update, (json.dumps(spec.env, separators=(",", ":")), app_id,
                                     *states))
    db.execute_sql("DELETE FROM temp.app_render")
    return int(cursor.rowcount)


def rerender_ended(db: SqliteDatabase, specs: dict[int, AppSpec], job_ids: list[int]) -> int:
    """Re-render the commands of jobs about to be reset from their app as it is now (`specs`:
    the apps by id). Every job is rendered before any is written, so a job the app cannot
    render refuses the whole reset. Returns how many commands or envs changed."""
    updates: list[tuple[str, str, str, int]] = []
    # jobs made by one --count share their params: render each (app, params) once
    rendered: dict[tuple[int, str], tuple[str, str, bool]] = {}
    envs = {app_id: json.dumps(spec.env, separators=(",", ":")) for app_id, spec in specs.items()}
    for part in chunks(job_ids):
        sql = (f"SELECT id, app_id, command, params, env FROM job "  # noqa: S608
               f"WHERE app_id IS NOT NULL AND id IN ({','.join('?' * len(part))})")
        for job_id, app_id, command, params_text, env in db.execute_sql(sql, tuple(part)):
            key = (app_id, params_text)
            if key not in rendered:
                stored = json.loads(params_text)
                new_command, new_params = render_for_job(specs[app_id], stored, job_id)
                rendered[key] = (new_command, new_params, json.loads(new_params) != stored)
            new_command, new_params, params_changed = rendered[key]
            if params_changed or (new_command, envs[app_id]) != (command, env):
                updates.append((new_command, new_params, envs[app_id], job_id))
    db.cursor().executemany("UPDATE job SET command = ?, params = ?, env = ? WHERE id = ?",
                            updates)
    return len(updates)


def note_in_flight(db: SqliteDatabase, app_id: int) -> int:
    """Note the app's dispatched attempts: they run the command they were sent with."""
    active = tuple(sorted(state.value for state in ACTIVE_STATES))
    cursor = db.execute_sql(
        f"INSERT OR REPLACE INTO app_change_due (job_id, attempt) SELECT id, attempt "  # noqa: S608
        f"FROM job WHERE app_id = ? AND state IN ({','.join('?' * len(active))})",
        (app_id, *active))
    return int(cursor.rowcount)


def settle_in_flight(db: SqliteDatabase, rows: dict[int, JobRow]) -> None:
    """Attempts noted by `note_in_flight` that ended in this transaction: a COMPLETED one goes
    on to STALE ("app NAME changed while it ran"); every ended one leaves the table. Call
    after the rows' children were settled: they go ahead as for a job that completed just
    before its app changed."""
    ended = sorted(job_id for job_id, row in rows.items()
                   if row.changed and row.snapshot.state not in ACTIVE_STATES)
    if not ended or db.execute_sql("SELECT 1 FROM app_change_due LIMIT 1").fetchone() is None:
        return
    done: list[tuple[int]] = []
    for part in chunks(ended):
        sql = ("SELECT d.job_id, d.attempt, app.name FROM app_change_due d "  # noqa: S608
               "JOIN job ON job.id = d.job_id JOIN app ON app.id = job.app_id "
               f"WHERE d.job_id IN ({','.join('?' * len(part))})")
        for job_id, attempt, name in db.execute_sql(sql, tuple(part)):
            row = rows[job_id]
            if row.snapshot.state is JobState.COMPLETED and row.snapshot.attempt == attempt:
                message = f"{stale_message(name)} while it ran"
                apply_chain(row, Chain(row.snapshot).to(JobState.STALE, message=message))
                row.message = message
            done.append((job_id,))
    db.cursor().executemany("DELETE FROM app_change_due WHERE job_id = ?", done)

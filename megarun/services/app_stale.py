"""STALE for plain jobs: what saving a changed app does to the jobs made from it.

A plain job (`job create --app`) is defined by its app's command template, env and staging
(stage_in, stage_out) together with the job's own params. When an app is saved with a
different definition (`app add --replace`, `app sync`), in the same write transaction:

- its COMPLETED jobs become STALE, each with an event "app NAME changed". This is done in SQL,
  never row by row: an app may have a million jobs;
- its jobs not dispatched yet (CREATED, AWAITING_PARENTS, READY) get the command rendered from
  the new template and their params, and the new env: they run the new definition. If the new
  app cannot render one of them (a required parameter it lacks, a template error), nothing is
  saved and the error names the job;
- jobs already dispatched keep the command they were sent with.

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
from megarun.core.states import JobState, is_legal
from megarun.errors import UsageError

#: The jobs an app change re-renders at once: none of them has been sent anywhere yet.
WAITING = (JobState.CREATED, JobState.AWAITING_PARENTS, JobState.READY)


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


def rerender_waiting(db: SqliteDatabase, app_id: int, spec: AppSpec) -> int:
    """Give the app's jobs not dispatched yet the command of `spec` and its env.

    The template is rendered once per distinct params value (a `--count` of a million jobs
    shares one); the rendered commands go into a temporary table that one UPDATE reads by its
    index. Returns how many jobs were re-rendered.
    """
    states = tuple(state.value for state in WAITING)
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
    update = (f"UPDATE job SET command = r.command, params = r.params, env = ? "  # noqa: S608
              f"FROM temp.app_render r WHERE job.app_id = ? AND job.state IN ({marks}) "
              "AND job.params = r.old")
    cursor = db.execute_sql(update, (json.dumps(spec.env, separators=(",", ":")), app_id,
                                     *states))
    db.execute_sql("DELETE FROM temp.app_render")
    return int(cursor.rowcount)


def rerender_ended(db: SqliteDatabase, specs: dict[int, AppSpec], job_ids: list[int]) -> int:
    """Re-render the commands of jobs about to be reset from their app as it is now (`specs`:
    the apps by id). Every job is rendered before any is written, so a job the app cannot
    render refuses the whole reset. Returns how many commands or envs changed."""
    updates: list[tuple[str, str, str, int]] = []
    for start in range(0, len(job_ids), 500):
        part = job_ids[start:start + 500]
        sql = (f"SELECT id, app_id, command, params, env FROM job "  # noqa: S608
               f"WHERE app_id IS NOT NULL AND id IN ({','.join('?' * len(part))})")
        for job_id, app_id, command, params_text, env in db.execute_sql(sql, tuple(part)):
            spec = specs[app_id]
            new_command, new_params = render_for_job(spec, json.loads(params_text), job_id)
            new_env = json.dumps(spec.env, separators=(",", ":"))
            if (new_command, new_env) != (command, env) or json.loads(new_params) != \
                    json.loads(params_text):
                updates.append((new_command, new_params, new_env, job_id))
    db.cursor().executemany("UPDATE job SET command = ?, params = ?, env = ? WHERE id = ?",
                            updates)
    return len(updates)

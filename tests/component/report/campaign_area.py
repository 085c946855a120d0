"""An area with plain jobs and a batch job at known times, for the metrics and the campaign
and batch views: jobs made by the CLI, their times and states set in the database (what the
agent would have written), and one batch job of the local site."""

from __future__ import annotations

import json
from typing import Any

from peewee import SqliteDatabase

from megarun.core.states import JobState, JobStatus

DONE, KILLED, RUNNING = JobState.COMPLETED.value, JobState.KILLED.value, JobState.RUNNING.value
PASS = JobStatus.PASS.value

#: id -> (state, started, ended, batch job, node packing) of the jobs made by `populate`.
TIMES: dict[int, tuple[str, float, float | None, int | None, int]] = {
    1: (DONE, 1000.0, 1010.0, None, 0),
    2: (DONE, 1005.0, 1070.0, None, 0),
    3: (KILLED, 1060.0, 1130.0, None, 0),
    4: (RUNNING, 1100.0, None, None, 0),
    5: (DONE, 2010.0, 2050.0, 1, 0),
    6: (DONE, 2020.0, 2060.0, 1, 2),
}


def populate(cli: Any, db: SqliteDatabase, hostile: str = "<script>alert('x')</script>") -> None:
    """Jobs 1-2 tagged c=a, 3 tagged c=`hostile`, 4-6 untagged; a batch job 1 of 2 nodes
    running 2000-2100 holding jobs 5 and 6 (6 packed two to a node); the local site's slots: 2."""
    assert cli("app", "add", "noop", "--command", "true").code == 0
    for tags in (["-t", "c=a"], ["-t", "c=a"], ["-t", f"c={hostile}"], [], [], []):
        made = cli("job", "create", "--app", "noop", *tags)
        assert made.code == 0, made.err
    site = db.execute_sql("SELECT site_id FROM job WHERE id = 1").fetchone()[0]
    settings = json.loads(db.execute_sql("SELECT settings FROM site WHERE id = ?",
                                         (site,)).fetchone()[0])
    settings.setdefault("node", {})["max_jobs"] = 2
    db.execute_sql("UPDATE site SET settings = ? WHERE id = ?", (json.dumps(settings), site))
    db.execute_sql("INSERT INTO batch_job (id, site_id, state, mode, nodes, walltime, tags, "
                   "message, created, started, ended) VALUES (1, ?, 'finished', 'pilot', 2, "
                   "10, '{}', '', 1990, 2000, 2100)", (site,))
    for job_id, (state, started, ended, batch, packing) in TIMES.items():
        db.execute_sql("UPDATE job SET state = ?, status = ?, started = ?, ended = ?, "
                       "batch_job_id = ?, node_packing_count = ? WHERE id = ?",
                       (state, PASS if state == DONE else JobStatus.NA.value, started, ended,
                        batch, packing, job_id))

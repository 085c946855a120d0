"""The job tally (megarun.db.tally) stays equal to a GROUP BY of the job table through inserts,
state changes, matching, deletes and archive moves, and 0007 fills it on an older database."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from megarun.db.connection import open_database
from tests.conftest import megarun_process

_GROUP = ("SELECT coalesce(site_id, 0), state, coalesce(app_id, 0), coalesce(jobgroup, ''), "
          "nodes, coalesce(walltime, 0), count(*), sum(walltime IS NULL) FROM job GROUP BY "
          "1, 2, 3, 4, 5, 6")
_TALLY = ("SELECT site_id, state, app_id, jobgroup, nodes, walltime, jobs, without_walltime "
          "FROM job_tally WHERE jobs > 0")


def tally_and_truth(path: Path) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        return set(db.execute(_TALLY).fetchall()), set(db.execute(_GROUP).fetchall())


def test_the_tally_follows_every_change_of_the_jobs(area: Path) -> None:
    work = area / ".megarun" / "work.db"

    def ok(*args: str) -> None:
        done = megarun_process(area, *args)
        assert done.returncode == 0, (args, done.stderr)

    def same() -> None:
        tally, truth = tally_and_truth(work)
        assert tally == truth

    ok("app", "add", "noop", "--command", "true")
    ok("job", "create", "--app", "noop", "--count", "5", "--walltime", "10m")
    ok("job", "create", "--app", "noop", "--count", "3", "--nodes", "2")
    same()
    # READY -> QUEUED -> ... -> COMPLETED, one transition at a time (the 2-node jobs FAIL here)
    megarun_process(area, "launch")
    same()
    with sqlite3.connect(work) as db:
        states = {row[0] for row in db.execute("SELECT state FROM job_tally WHERE jobs > 0")}
    assert len(states) == 1  # every job ended the same way: nothing left counted elsewhere
    ok("job", "create", "--app", "noop", "--count", "2")
    with sqlite3.connect(work) as db:  # matching, a jobgroup and a walltime change in SQL
        db.execute("UPDATE job SET jobgroup = 'g', walltime = 5 WHERE id % 2 = 0")
        db.execute("UPDATE job SET site_id = NULL WHERE id = 1")
    same()
    ok("job", "rm", "10")
    same()


def test_0007_fills_the_tally_of_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    open_database(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    for name in ("job_tally_insert", "job_tally_delete", "job_tally_update"):
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE job_tally")
    db.execute("DELETE FROM schema_migration WHERE name = '0007_elastic'")
    now = time.time()
    for walltime in (None, 30.0, 30.0):
        db.execute("INSERT INTO job (name, command, params, tags, env, nodes, ranks_per_node,"
                   " threads_per_rank, gpus_per_rank, node_packing_count, priority, state, "
                   "status, attempt, runs, max_attempts, message, created, walltime) VALUES "
                   "('a', 'true', '{}', '{}', '{}', 1, 1, 1, 0, 0, 0, 'READY', 'n/a', 0, 0, 1, "
                   "'', ?, ?)", (now, walltime))
    db.close()
    open_database(path).close()  # runs 0007
    tally, truth = tally_and_truth(path)
    assert tally == truth and sum(row[6] for row in tally) == 3

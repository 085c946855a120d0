"""Archive bench: `archive reduce` and `archive restore` of 1,000,000 job rows, against a plain
`INSERT INTO ... SELECT` copy of the same rows measured in the same run.

`populate` also builds the tests' working databases (tests/services/test_archive*.py): finished
runs with jobs, tags, dependencies, events, run tests, and the site, app and batch job they use.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import Row, megarun, new_area, timed

#: Every job moves through these four changes: one event each.
TRANSITIONS = (("CREATED", "READY"), ("READY", "QUEUED"), ("QUEUED", "RUNNING"),
               ("RUNNING", "COMPLETED"))
#: Series 0..n-1 in SQL: far faster than Python rows for millions.
_SERIES = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1) "


def _next_id(db: sqlite3.Connection, table: str) -> int:
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    top = db.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
    return max(row[0] if row else 0, top) + 1


def _shared_rows(db: sqlite3.Connection, now: float) -> tuple[int, int, int]:
    """The site, app and batch job every generated job refers to (made once per database)."""
    db.execute("INSERT OR IGNORE INTO site (name, preset, scheduler, workdir, settings, created) "
               "VALUES ('bench-site', 'local', 'local', '/tmp/bench', '{}', ?)", (now,))
    db.execute("INSERT OR IGNORE INTO app (name, command, description, params, env, resources, "
               "requirements, retries, source, created) VALUES ('bench-app', 'true', '', '{}', "
               "'{}', '{}', '{}', 0, 'cli', ?)", (now,))
    site = db.execute("SELECT id FROM site WHERE name = 'bench-site'").fetchone()[0]
    app = db.execute("SELECT id FROM app WHERE name = 'bench-app'").fetchone()[0]
    db.execute("INSERT INTO batch_job (site_id, state, mode, nodes, walltime, tags, message, "
               "created, native, extras) VALUES (?, 'finished', 'pilot', 1, 10, '{}', '', ?, "
               "'', '{}')", (site, now))
    batch = db.execute("SELECT max(id) FROM batch_job").fetchone()[0]
    return site, app, batch


def populate(db_path: Path, runs: int, jobs_per_run: int, ended: float,
             prefix: str = "r", deps_every: int = 10) -> list[int]:
    """Add `runs` finished runs of `jobs_per_run` jobs (4 events, 2 tags each; every
    `deps_every`-th job waits on its run's first job; 2 run tests per run) to the working db
    at `db_path`; return the new run ids."""
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("BEGIN IMMEDIATE")
    site, app, batch = _shared_rows(db, ended)
    run0, job0 = _next_id(db, "run"), _next_id(db, "job")
    jobs = runs * jobs_per_run
    db.execute(_SERIES + "INSERT INTO run (id, target, runname, created, config_hash, state) "
               "SELECT ? + i, 'linux/x' || (i % 3), ? || (? + i), ?, 'h', 'open' FROM n",
               (runs, run0, prefix, run0, ended - 3600))
    db.execute(_SERIES + "INSERT INTO run_test (run_id, test, definition_hash, definition) "
               "SELECT ? + i / 2, 't' || (i % 2), 'h', '{}' FROM n", (runs * 2, run0))
    db.execute(_SERIES + "INSERT INTO job (id, run_id, name, app_id, site_id, batch_job_id, test, "
               "item, command, params, tags, env, nodes, ranks_per_node, threads_per_rank, "
               "gpus_per_rank, node_packing_count, priority, state, status, attempt, runs, "
               "max_attempts, exit_code, message, created, started, ended) "
               "SELECT ? + i, ? + i / ?, '', ?, ?, ?, 't' || (i % 2), 'item' || i, 'true', '{}', "
               "'{\"k\": \"v\"}', '{}', 1, 1, 1, 0, 0, 0, 'COMPLETED', "
               "CASE WHEN i % 97 = 0 THEN 'FAIL' ELSE 'PASS' END, 1, 1, 1, 0, '', ?, ?, ? FROM n",
               (jobs, job0, run0, jobs_per_run, app, site, batch, ended - 60, ended - 30, ended))
    db.execute(_SERIES + "INSERT INTO job_tag (job_id, key, value) SELECT ? + i / 2, "
               "CASE i % 2 WHEN 0 THEN 'k' ELSE 'batch' END, 'v' || (i % 7) FROM n",
               (jobs * 2, job0))
    db.execute(_SERIES + "INSERT INTO job_dependency (parent_id, child_id, mode) "
               "SELECT ? + (i - i % ?), ? + i, 'normal' FROM n WHERE i % ? != 0 AND i % ? = 1",
               (jobs, job0, jobs_per_run, job0, jobs_per_run, deps_every))
    for step, (before, after) in enumerate(TRANSITIONS):
        db.execute(_SERIES + "INSERT INTO event (job, time, from_state, to_state, status, "
                   "attempt, message, data) SELECT ? + i, ?, ?, ?, 'n/a', 1, '', "
                   "'{\"step\": ' || ? || '}' FROM n", (jobs, job0, ended - 40 + step, before,
                                                          after, step))
    db.execute("COMMIT")
    db.close()
    return list(range(run0, run0 + runs))


def working_db(area: Path) -> Path:
    """The area's working database (where the home host keeps it)."""
    from megarun.config.area import locate_area
    from megarun.homehost.home import working_db_path

    return working_db_path(locate_area(str(area)))


def _plain_copy(area: Path) -> float:
    """The baseline: the same rows copied by bare INSERT ... SELECT into an empty database
    of the same schema, in one transaction (no selection, verification or delete)."""
    from megarun.db.connection import prepare_database_file

    work, copy = working_db(area), area / "baseline.db"

    prepare_database_file(copy, journal="delete")
    db = sqlite3.connect(work, isolation_level=None)
    db.execute("ATTACH DATABASE ? AS b", (str(copy),))

    def copy_all() -> None:
        db.execute("BEGIN IMMEDIATE")
        for table in ("site", "app", "batch_job", "run", "run_test", "job", "job_tag",
                      "job_dependency", "event"):
            cols = ", ".join(row[1] for row in db.execute(f"PRAGMA main.table_info({table})"))
            db.execute(f"INSERT INTO b.{table} ({cols}) SELECT {cols} FROM main.{table}")
        db.execute("COMMIT")

    seconds = timed(copy_all)
    db.close()
    copy.unlink()
    return seconds


def bench_archive(root: Path, runs: int = 1_000, jobs_per_run: int = 1_000) -> list[Row]:
    """Reduce every run of a 1,000,000-job working db, then restore them all."""
    area = new_area(root, "archive")
    megarun(area, "job", "ls", "--limit", "1")  # creates and migrates the working db
    jobs = runs * jobs_per_run
    build = timed(lambda: populate(working_db(area), runs, jobs_per_run,
                                   time.time() - 40 * 86400))
    baseline = _plain_copy(area)
    out: dict[str, dict[str, object]] = {}

    def move(*args: str) -> None:
        result = megarun(area, "archive", *args, "--json")
        out[args[0]] = json.loads(result.stdout)

    reduce = timed(lambda: move("reduce", "--older-than", "0"))
    restore = timed(lambda: move("restore"))
    moved = (out["reduce"]["jobs"], out["restore"]["jobs"])
    ok = moved == (jobs, jobs)
    label = f"{jobs:,} jobs, {4 * jobs:,} events, {2 * jobs:,} tags"
    return [
        Row(f"archive reduce --older-than 0 ({label})", reduce, "s", "< 60 s",
            ok and reduce < 60, f"INSERT...SELECT copy {baseline:.1f} s (built in {build:.0f} s)",
            f"{reduce / baseline:.1f}x"),
        Row(f"archive restore (the same {jobs:,} jobs)", restore, "s", "< 60 s",
            ok and restore < 60, f"INSERT...SELECT copy {baseline:.1f} s",
            f"{restore / baseline:.1f}x"),
    ]

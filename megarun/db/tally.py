"""The job tally: how many jobs of each site, state, app, jobgroup and shape there are, kept
by triggers.

`queue backlog` and the elastic policy must answer in well under a second on a database of a
million jobs, which no scan of the job table does; so SQLite keeps the counts itself. Every
insert, delete and change of a job's site, state, app, jobgroup, nodes or walltime adds to or
takes from one row per (site, state, app, jobgroup, nodes, walltime), in the same transaction
as the change: the counts cannot drift from the rows. Jobs come in few shapes, so the table
stays small; a missing site, app or jobgroup is 0 or "", a missing walltime 0 (and counted in
`without_walltime`).
"""

from __future__ import annotations

from peewee import SqliteDatabase

_KEY = "site_id, state, app_id, jobgroup, nodes, walltime"


def _value_list(row: str) -> list[str]:
    return [f"coalesce({row}.site_id, 0)", f"{row}.state", f"coalesce({row}.app_id, 0)",
            f"coalesce({row}.jobgroup, '')", f"{row}.nodes", f"coalesce({row}.walltime, 0)"]


def _values(row: str) -> str:
    return ", ".join(_value_list(row))


def _add(row: str) -> str:
    return (f"INSERT INTO job_tally ({_KEY}, jobs, without_walltime) VALUES ({_values(row)}, 1, "  # noqa: S608
            f"{row}.walltime IS NULL) ON CONFLICT ({_KEY}) DO UPDATE SET jobs = jobs + 1, "
            "without_walltime = without_walltime + excluded.without_walltime;")


def _take(row: str) -> str:
    keys = " AND ".join(f"{column} = {value}" for column, value in
                        zip(_KEY.split(", "), _value_list(row), strict=True))
    return (f"UPDATE job_tally SET jobs = jobs - 1, without_walltime = without_walltime - "  # noqa: S608
            f"({row}.walltime IS NULL) WHERE {keys};")


_WATCHED = ("site_id", "state", "app_id", "jobgroup", "nodes", "walltime")

STATEMENTS = (
    f"CREATE TABLE IF NOT EXISTS job_tally (site_id INTEGER NOT NULL, state TEXT NOT NULL, "
    f"app_id INTEGER NOT NULL, jobgroup TEXT NOT NULL, nodes INTEGER NOT NULL, "
    f"walltime REAL NOT NULL, jobs INTEGER NOT NULL, without_walltime INTEGER NOT NULL, "
    f"PRIMARY KEY ({_KEY})) WITHOUT ROWID",
    f"CREATE TRIGGER IF NOT EXISTS job_tally_insert AFTER INSERT ON job BEGIN {_add('new')} END",
    f"CREATE TRIGGER IF NOT EXISTS job_tally_delete AFTER DELETE ON job BEGIN {_take('old')} END",
    "CREATE TRIGGER IF NOT EXISTS job_tally_update AFTER UPDATE OF "
    f"{', '.join(_WATCHED)} ON job WHEN "
    + " OR ".join(f"old.{c} IS NOT new.{c}" for c in _WATCHED)
    + f" BEGIN {_take('old')} {_add('new')} END",
)


def create_tally(db: SqliteDatabase) -> None:
    """The tally table and its triggers, filled from the jobs there are (a schema step)."""
    for statement in STATEMENTS:
        db.execute_sql(statement)
    db.execute_sql("DELETE FROM job_tally")
    db.execute_sql(
        f"INSERT INTO job_tally ({_KEY}, jobs, without_walltime) SELECT coalesce(site_id, 0), "  # noqa: S608
        "state, coalesce(app_id, 0), coalesce(jobgroup, ''), nodes, coalesce(walltime, 0), "
        f"count(*), sum(walltime IS NULL) FROM job GROUP BY {_values('job')}")

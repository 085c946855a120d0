"""The report's campaign and batch views of a 1,000,000-job area: `megarun report` from
nothing (index, campaign and batch pages with their plots) under 30 s and 300 MB peak RSS, and
the refresh when nothing changed; baselines in the same run: `job ls --by-state` over the same
jobs (one grouped count) and a bare Python + sqlite3 loop reading every job's times.

The jobs are made by one `job create --count`, then given what a campaign leaves (times, ended
states, 10 tag values, 20 batch jobs of 8 nodes) by SQL: a launch of a million jobs is not what
is measured here.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from bench.bounded import _cli, measure
from bench.run import Row, megarun, new_area

_LOOP = ("import sqlite3, sys\n"
         "db = sqlite3.connect(sys.argv[1])\n"
         "n = 0\n"
         "for started, ended, state in db.execute('SELECT started, ended, state FROM job'):\n"
         "    n += ended is not None\n"
         "print(n)\n")


def campaign_area(root: Path, count: int) -> Path:
    """An area of `count` plain jobs that ran in 20 batch jobs, tagged campaign=c0..c9."""
    from bench.archive import working_db

    area = new_area(root, "report-campaign")
    megarun(area, "job", "create", "--app", "noop", "--count", str(count))
    with sqlite3.connect(working_db(area)) as db:
        site = db.execute("SELECT site_id FROM job LIMIT 1").fetchone()[0]
        for batch in range(1, 21):
            start = 1.7e9 + batch * 3600
            db.execute("INSERT INTO batch_job (id, site_id, state, mode, nodes, walltime, tags,"
                       " message, created, submitted, started, ended) VALUES (?, ?, 'finished',"
                       " 'pilot', 8, 60, '{}', '', ?, ?, ?, ?)",
                       (batch, site, start - 60, start - 60, start, start + 3600))
        db.execute("UPDATE job SET state = 'COMPLETED', status = 'PASS', "
                   "batch_job_id = 1 + id % 20, "
                   "started = 1.7e9 + (1 + id % 20) * 3600 + (id / 20) % 3000, "
                   "ended = 1.7e9 + (1 + id % 20) * 3600 + (id / 20) % 3000 + 10 + id % 500, "
                   "tags = json_object('campaign', 'c' || (id % 10))")
        db.execute("INSERT INTO job_tag (job_id, key, value) "
                   "SELECT id, 'campaign', 'c' || (id % 10) FROM job")
    return area


def bench_report_campaign(root: Path, count: int = 1_000_000) -> list[Row]:
    """`megarun report` of `count` jobs: time and peak RSS, then a refresh with no change."""
    from bench.archive import working_db

    area = campaign_area(root, count)
    out = root / "report-campaign-site"
    peak, seconds = measure(_cli(area, "report", "--out", str(out), "--json"))
    pages = len(json.loads((out / ".megarun-report.json").read_text())["pages"])
    again_peak, again = measure(_cli(area, "report", "--out", str(out)))
    _, by_state = measure(_cli(area, "job", "ls", "--by-state", "--json"))
    loop_peak, loop = measure([sys.executable, "-c", _LOOP, str(working_db(area))])
    return [
        Row(f"report of {count:,} jobs (index, campaign, batch pages: {pages})", seconds, "s",
            "< 30 s", seconds < 30, f"job ls --by-state {by_state:.2f} s; python+sqlite3 "
            f"loop over the jobs {loop:.2f} s", f"{seconds / by_state:.1f}x by-state"),
        Row(f"report of {count:,} jobs: peak RSS", peak, "MB", "< 300 MB", peak < 300,
            f"python+sqlite3 loop {loop_peak:.0f} MB", f"{peak / loop_peak:.1f}x"),
        Row(f"report of {count:,} jobs again, nothing changed", again, "s", "(context)", True,
            f"peak RSS {again_peak:.0f} MB; job ls --by-state {by_state:.2f} s",
            f"{again / by_state:.1f}x by-state"),
    ]

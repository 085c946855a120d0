"""The batch views of the report: every batch job (allocation) with its state, nodes,
walltime, times, its jobs counted by state and its mean slot utilization, and a page per batch
job with its plots and its own jobs (the first MAX_JOBS, and how many more).

The batch jobs' jobs are counted by the one pass over the jobs the campaign views share
(jobscan.py), which also gives each batch job a fingerprint (its row and its jobs' counts and
start/end sums): a batch job whose fingerprint is the last build's keeps its page as it is;
when no job or batch job changed at all, no job is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from peewee import SqliteDatabase

from megarun.report.html import campaign_data, urls
from megarun.report.html.charts import Drawer
from megarun.report.html.inputs import ReportInput
from megarun.report.html.jobscan import JobScan
from megarun.report.html.page import Page, render
from megarun.report.html.site import Keep

#: A batch job's page lists at most this many of its jobs.
MAX_JOBS = 1000


@dataclass
class BatchRow:
    """One batch job as the views show it."""

    id: int
    site: str
    state: str
    nodes: int
    walltime: float  # minutes
    scheduler_id: str | None
    queue: str | None
    submitted: str
    started: str
    ended: str
    counts: dict[str, int] = field(default_factory=dict)
    utilization: str = ""
    seen: list[object] = field(default_factory=list)  # what the fingerprint hashes

    @property
    def jobs(self) -> int:
        return sum(self.counts.values())


def when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")


def batch_rows(db: SqliteDatabase, scan: JobScan) -> list[BatchRow]:
    """Every batch job, newest first, with its jobs counted (from the one pass over the jobs)
    and its mean utilization: slot seconds of its ended jobs over its nodes times the time it
    ran (so far: to its last job's start or end while it still runs)."""
    rows = []
    for (bid, site, state, nodes, walltime, sched, queue, submitted, started,
         ended) in db.execute_sql(
            "SELECT b.id, s.name, b.state, b.nodes, b.walltime, b.scheduler_id, b.queue, "
            "b.submitted, b.started, b.ended FROM batch_job b JOIN site s ON s.id = b.site_id "
            "ORDER BY b.id DESC"):
        row = BatchRow(bid, site, state, nodes, walltime, sched, queue, when(submitted),
                       when(started), when(ended))
        row.seen.append((site, state, nodes, walltime, sched, queue, submitted, started, ended))
        tally = scan.batches.get(bid) or scan.empty()
        for (job_state, status), (count, starts, ends) in sorted(tally.counts.items()):
            row.counts[job_state] = row.counts.get(job_state, 0) + int(count)
            row.seen.append((job_state, status, int(count), starts, ends))
        row.utilization = _mean(tally.slot_s, nodes, (started, ended), tally.latest)
        rows.append(row)
    return rows


def _mean(busy_s: float, nodes: int, span: tuple[float | None, float | None],
          last: float | None) -> str:
    started, ended = span
    end = ended if ended is not None else last
    if started is None or end is None or end <= started or nodes < 1:
        return ""
    return f"{min(1.0, busy_s / (nodes * (end - started))):.0%}"


def own_jobs(db: SqliteDatabase, batch_job: int) -> list[dict[str, object]]:
    """The first MAX_JOBS jobs of a batch job, by id."""
    return [{"id": jid, "name": name, "state": state, "status": status,
             "started": when(started), "ended": when(ended), "exit_code": code}
            for jid, name, state, status, started, ended, code in db.execute_sql(
                "SELECT id, name, state, status, started, ended, exit_code FROM job "
                "WHERE batch_job_id = ? ORDER BY id LIMIT ?", (batch_job, MAX_JOBS))]


def pages(given: ReportInput) -> Iterator[Page | Keep]:
    data = given.campaign()
    kept = given.kept_as_before("batch:data", data.fingerprint(), urls.BATCH_FOLDER)
    if kept is not None:
        yield from (Keep(path) for path in kept)
        return
    area = given.area.root.name
    rows = batch_rows(given.db, data.scan())
    drawer = Drawer(data)
    for row in rows:
        path = urls.batch_page(row.id)
        if (given.unchanged(f"batch:{row.id}", campaign_data.fingerprint(row.seen))
                and given.still_there([path])):
            yield Keep(path)
            continue
        yield render(path, "batch_job.html", area=area, row=row,
                     jobs=own_jobs(given.db, row.id), more=max(0, row.jobs - MAX_JOBS),
                     charts=drawer.charts("batch", row.id, "batch"))
    index_print = campaign_data.fingerprint([(row.id, row.seen) for row in rows])
    if given.unchanged("batch:index", index_print) and given.still_there([urls.BATCH]):
        yield Keep(urls.BATCH)
        return
    states = sorted({state for row in rows for state in row.counts})
    yield render(urls.BATCH, "batch.html", area=area, rows=rows, states=states,
                 links={row.id: urls.batch_page(row.id) for row in rows},
                 charts=drawer.charts("batches", "all", "batches"))

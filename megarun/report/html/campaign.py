"""The campaign and batch views of the report: plain jobs by state, batch jobs by state.

(First cut: counts only; the views by tag, app and site, the batch jobs' own pages and the
plots come next.)
"""

from __future__ import annotations

from collections.abc import Iterator

from megarun.report.html import urls
from megarun.report.html.inputs import ReportInput
from megarun.report.html.page import Page, render


def pages(given: ReportInput) -> Iterator[Page]:
    jobs = given.db.execute_sql(
        "SELECT state, count(*) FROM job WHERE run_id IS NULL GROUP BY state ORDER BY state"
    ).fetchall()
    batch = given.db.execute_sql(
        "SELECT state, count(*) FROM batch_job GROUP BY state ORDER BY state").fetchall()
    name = given.area.root.name
    yield render(urls.CAMPAIGN, "campaign.html", area=name, counts=jobs)
    yield render(urls.BATCH, "batch.html", area=name, counts=batch)

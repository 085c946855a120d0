"""The report's campaign and batch views: what they list, their plots (inline SVG, no script,
nothing fetched), hostile tag values escaped everywhere, pages kept when their data is the
same, a batch job's page bounded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from megarun.homehost.context import Context
from megarun.report.html import batch, build, jobscan, urls
from megarun.report.html.charts import Drawer
from tests.component.report.campaign_area import populate

HOSTILE = "<script>alert('x')</script>\"q"
# The only URLs a page may hold: XML namespaces of the inline SVG.
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


def report(cli: Any) -> dict[str, Any]:
    result = cli("report", "--json")
    assert result.code == 0, result.err
    data: dict[str, Any] = result.json()
    return data


@pytest.fixture
def site(cli: Any, ctx: Context, area: Path) -> Path:
    populate(cli, ctx.db, HOSTILE)
    report(cli)
    return area / "report"


def page(site: Path, path: str) -> str:
    return (site / path).read_text(encoding="utf-8")


def test_campaign_index_counts_plain_jobs_and_links_every_view(site: Path) -> None:
    html = page(site, urls.CAMPAIGN)
    for kind, name in (("tag", "c=a"), ("tag", f"c={HOSTILE}"), ("app", "noop")):
        assert f'href="../{urls.campaign_page(kind, name)}"' in html
        assert (site / urls.campaign_page(kind, name)).is_file()
    assert html.count("<svg") == 3
    assert re.search(r'<td class="st COMPLETED">COMPLETED</td><td class="st PASS">PASS</td>'
                     r'<td class="num">4</td>', html)


def test_a_tag_view_counts_its_own_jobs(site: Path) -> None:
    html = page(site, urls.campaign_page("tag", "c=a"))
    assert "<p>2 job(s).</p>" in html
    assert html.count("<svg") == 3


def test_hostile_tag_values_are_escaped_everywhere(site: Path) -> None:
    for path in sorted(site.rglob("*.html")):
        html = path.read_text(encoding="utf-8")
        assert "<script" not in html, path
        assert "alert('x')</" not in html and "'x')</script>\"q" not in html, path
    view = page(site, urls.campaign_page("tag", f"c={HOSTILE}"))
    assert "c=&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&#34;q" in view


def test_plots_fetch_nothing(site: Path) -> None:
    for path in sorted(site.rglob("*.html")):
        urls_found = set(re.findall(r"https?://[^\"'\s<>)]+", path.read_text(encoding="utf-8")))
        assert urls_found <= NAMESPACES, (path, urls_found)


def test_batch_views_list_each_batch_job_and_its_jobs(site: Path) -> None:
    index = page(site, urls.BATCH)
    assert f'href="../{urls.batch_page(1)}"' in index
    assert re.search(r"<td>1970-01-01T00:33:20\+00:00</td><td>1970-01-01T00:35:00\+00:00</td>"
                     r'<td class="num">30%</td><td class="num">2</td>', index), index
    own = page(site, urls.batch_page(1))
    assert re.findall(r'<tr><td class="num">(\d+)</td>', own) == ["5", "6"]
    assert own.count("<svg") == 3 and "more job(s)" not in own


def test_a_second_report_keeps_every_campaign_and_batch_page(
        cli: Any, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_drawing(*args: object) -> None:
        raise AssertionError("a kept page was drawn again")

    # kept pages are not even rendered: their fingerprints are the last build's
    monkeypatch.setattr(Drawer, "charts", no_drawing)
    again = report(cli)
    assert again["written"] == [] and again["unchanged"] >= 6


def test_a_job_ending_redraws_only_its_views(cli: Any, ctx: Context, site: Path) -> None:
    ctx.db.execute_sql("UPDATE job SET ended = 1200, state = (SELECT state FROM job WHERE id"
                       " = 1) WHERE id = 4")
    written = set(report(cli)["written"])
    assert written == {urls.CAMPAIGN, urls.campaign_page("app", "noop"),
                       urls.campaign_page("site", "local")}


def test_a_batch_job_page_lists_at_most_max_jobs(cli: Any, ctx: Context, site: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "MAX_JOBS", 1)
    ctx.db.execute_sql("UPDATE job SET name = 'renamed' WHERE id = 5")
    ctx.db.execute_sql("UPDATE batch_job SET message = 'x', nodes = 3 WHERE id = 1")
    report(cli)
    own = page(site, urls.batch_page(1))
    assert re.findall(r'<tr><td class="num">(\d+)</td>', own) == ["5"]
    assert "1 more job(s) of this batch job are not listed." in own


def test_with_no_job_changed_a_refresh_reads_no_job(
        cli: Any, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_scan(*args: object) -> None:
        raise AssertionError("the jobs were read although none changed")

    monkeypatch.setattr(jobscan, "scan", no_scan)
    again = report(cli)
    assert again["written"] == [] and again["unchanged"] >= 6
    assert report(cli)["written"] == []  # the carried-over fingerprints hold a third time


def test_a_status_change_alone_redraws_the_views_of_its_job(cli: Any, ctx: Context,
                                                             site: Path) -> None:
    ctx.db.execute_sql("UPDATE job SET status = 'FAIL' WHERE id = 1")  # no new time, no event
    written = set(report(cli)["written"])
    assert written == {urls.CAMPAIGN, urls.campaign_page("app", "noop"),
                       urls.campaign_page("site", "local"), urls.campaign_page("tag", "c=a")}
    assert re.search(r'<td class="st FAIL">FAIL</td><td class="num">1</td>',
                     page(site, urls.campaign_page("tag", "c=a")))


def test_a_batch_job_page_removed_by_hand_is_written_again(cli: Any, site: Path) -> None:
    (site / urls.batch_page(1)).unlink()
    assert report(cli)["written"] == [urls.batch_page(1)]


def test_new_templates_render_every_page_again(
        cli: Any, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scans: list[object] = []
    real = jobscan.scan

    def counted(*args: Any) -> Any:
        scans.append(args)
        return real(*args)

    monkeypatch.setattr(jobscan, "scan", counted)
    monkeypatch.setattr(build, "templates_digest", lambda: "a newer megarun's templates")
    again = report(cli)
    assert len(scans) == 1 and again["written"] == []  # drawn again; the same HTML came out
    assert report(cli)["unchanged"] == again["unchanged"] and len(scans) == 1

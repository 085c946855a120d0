"""Hostile strings in the report: markup, quotes, `&`, NUL, bytes that are not UTF-8 and very
long names in test names, items, messages and logs come out as escaped text, never as markup,
and every page stays valid UTF-8."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from megarun.report.html.page import render
from tests.component.report.suites import new_suite, ok

HOSTILE_TEST = "<script>alert(1)</script>"
HOSTILE_ITEM = "\"'&<b>" + "x" * 5000
HOSTILE_MESSAGE = "<img src=x onerror=alert(3)> & done"


def test_hostile_names_messages_and_logs_are_escaped(tmp_path: Path) -> None:
    area = new_suite(tmp_path / "area", {"hostile": (
        "steps = [{ name = \"s1\", cmd = \"sh -c 'printf \\\"<script>alert(2)</script> "
        "\\\\\\\\377 \\\\\\\\000 end\\\\\\\\n\\\"; exit 1'\" }]\n")})
    ok(area, "run", "--target", "linux", "--runname", "n1", "--quiet", codes=(1,))
    log = area / "runs" / "linux" / "n1" / "hostile" / "s1.out"
    assert log.read_bytes() == b"<script>alert(2)</script> \xff \x00 end\n"
    # Names the CLI would refuse still reach the database by other ways (an older megarun, a
    # database edited by hand): the report must show them as text too.
    with sqlite3.connect(area / ".megarun" / "work.db") as db:
        db.execute("UPDATE job SET test = ?, item = ?, message = ?",
                   (HOSTILE_TEST, HOSTILE_ITEM, HOSTILE_MESSAGE))
    result = ok(area, "report", "--json")
    site = area / "report"
    pages = {path: path.read_bytes() for path in site.rglob("*.html")}
    assert len(pages) >= 4
    item_pages = [p for p in pages if p.parent.name == "items"]
    for path, raw in pages.items():
        text = raw.decode("utf-8")  # valid UTF-8, whatever the log held
        assert "<script" not in text and "<img" not in text and "<b>" not in text, path
        assert "\x00" not in text, path
    item = pages[item_pages[0]].decode("utf-8")
    assert "&lt;script&gt;alert(2)&lt;/script&gt; \ufffd \ufffd end" in item  # the log
    assert "&lt;img src=x onerror=alert(3)&gt; &amp; done" in item
    assert "&#34;&#39;&amp;&lt;b&gt;" + "x" * 5000 in item
    run_page = pages[site / "runs" / "1" / "index.html"].decode("utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in run_page
    assert result["removed"] == []


def test_a_page_is_clean_utf8_whatever_its_strings_hold() -> None:
    page = render("index.html", "index.html", area="a\udcffb\x00c", targets=[],
                  run_page=str)
    assert "a\ufffdb\ufffdc" in page.html
    page.html.encode("utf-8")  # no lone surrogate left

"""The HTML report in a real browser: headless Chromium loads the index, a run page and an item
page from file://, every page reachable from the index loads with no console error, no link is
broken, no screenshot is blank, and hostile strings in logs, descriptions and tags stay text."""

from __future__ import annotations

import json
import shutil
from collections import deque
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.browser import Browser, Seen, distinct_colours
from tests.conftest import REPO, megarun_process

HOSTILE = "<script>alert('x')</script> \"q\" & <b>bold</b>"
#: A step that prints its item (HTML in it), bytes that are not UTF-8, and fails.
STEP = r"""[[steps]]
name = "say"
cmd = '''printf '%s\n' "$MODE"; printf '\377\376 not utf-8\n'; exit 3'''
[items]
MODE = ["<i>one</i>", "two & 'three'"]
"""


def write_test(area: Path, name: str, text: str) -> None:
    folder = area / "tests" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.toml").write_text(text)


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An area with a run holding PASS, WARN and FAIL items, hostile logs and descriptions, and
    a tagged campaign of plain jobs, reported into report/."""
    area = tmp_path_factory.mktemp("report") / "suite"
    shutil.copytree(REPO / "examples" / "regression", area)
    write_test(area, "hostile", f"description = {json.dumps(HOSTILE)}\n" + STEP)
    run = megarun_process(area, "run", "--target", "linux/x86_64", "--runname", "nightly",
                          timeout=240)
    assert run.returncode == 1, run.stderr  # the hostile test fails
    for args in (("app", "add", "noop", "--command", "true"),
                 ("job", "create", "--app", "noop", "--count", "3", "--tag", f"camp={HOSTILE}"),
                 ("launch",),
                 ("report",)):
        done = megarun_process(area, *args, timeout=240)
        assert done.returncode == 0, (args, done.stderr)
    return area / "report"


def crawl(browser: Browser, top: Path) -> dict[str, Seen]:
    """Every page of the report reachable from its index, as the browser saw it."""
    seen: dict[str, Seen] = {}
    todo = deque([(top / "index.html").as_uri()])
    while todo:
        url = todo.popleft()
        if url in seen:
            continue
        page = browser.load(url)
        seen[url] = page
        for link in page.links:
            parts = urlsplit(link)
            target = Path(unquote(parts.path))
            if target.suffix == ".html" and target.is_relative_to(top):
                todo.append(parts._replace(fragment="").geturl())
    return seen


def test_every_page_loads_clean_and_no_link_is_broken(browser: Browser, reported: Path) -> None:
    pages = crawl(browser, reported)
    paths = {str(Path(unquote(urlsplit(url).path)).relative_to(reported)) for url in pages}
    assert "index.html" in paths
    assert any(p.startswith("runs/") and p.endswith("/index.html") for p in paths), paths
    assert any("/items/" in p for p in paths), paths
    assert any(p.startswith("history/") for p in paths), paths
    assert "campaign/index.html" in paths and "batch/index.html" in paths
    for url, page in pages.items():
        assert page.errors == [], (url, page.errors)
        assert distinct_colours(page.screenshot) > 2, f"{url} looks blank"
        assert page.text.strip(), f"{url} shows no text"
        for link in page.links:
            parts = urlsplit(link)
            assert parts.scheme == "file", f"{url} links out of the report: {link}"
            assert Path(unquote(parts.path)).exists(), f"{url} has a broken link: {link}"


def test_hostile_strings_are_shown_as_text(browser: Browser, reported: Path) -> None:
    pages = crawl(browser, reported)
    shown = "\n".join(page.text for page in pages.values())
    assert "<script>alert('x')</script>" in shown  # the campaign's tag, as text
    assert "<i>one</i>" in shown  # an item's own output in its log tail
    for url in pages:
        browser.load(url)
        injected = browser.evaluate("document.querySelectorAll('script, b, i').length")
        assert injected == 0, f"{url} holds an element made of a hostile string"


def test_the_harness_sees_blank_pages_errors_and_missing_files(browser: Browser,
                                                             tmp_path: Path) -> None:
    """The checks above can fail: a blank page, a script error and a missing page are seen."""
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    assert distinct_colours(browser.load(blank.as_uri()).screenshot) == 1
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><body><p>x</p><script>nosuch()</script></body>")
    assert any("exception" in error for error in browser.load(broken.as_uri()).errors)
    missing = browser.load((tmp_path / "nowhere.html").as_uri())
    assert any("ERR_FILE_NOT_FOUND" in error for error in missing.errors)

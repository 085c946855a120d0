"""Small test suites for the report's tests (an area with a few tests run on the local site),
and ways to read the pages (their text, their links)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from megarun.homehost.context import Context
from megarun.report.html.build import build_report
from tests.conftest import megarun_process

CONFIG = ('name = "report"\nkeys = ["os"]\ndefault_site = "local"\n\n'
          "[launcher]\nretries = 0\nkill_grace = 1\nidle_exit = 3\n")


def write_test(area: Path, name: str, text: str) -> None:
    folder = area / "tests" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.toml").write_text(text)


def new_suite(area: Path, tests: dict[str, str], extra_config: str = "") -> Path:
    """An area at `area` (keys: os) with these tests (name -> test.toml)."""
    (area / "tests").mkdir(parents=True)
    (area / "megarun.toml").write_text(CONFIG + extra_config)
    for name, text in tests.items():
        write_test(area, name, text)
    return area


def items_run(area: Path, items: int, step: str) -> Path:
    """An area at `area` with one test, `unit`, of `items` items (N = 0, 1, ...) running the
    shell line `step`, and its run linux/r1 done."""
    new_suite(area, {"unit": (f"steps = [{json.dumps(f'sh -c {step!r}')}]\n[items]\n"
                              f"N = [{', '.join(str(n) for n in range(items))}]\n")})
    ok(area, "run", "--target", "linux", "--runname", "r1", "--quiet")
    return area


def build_in_process(area: Path, out: Path) -> Any:
    """`megarun report --out out` made in this process (its WriteResult)."""
    ctx = Context(area_override=str(area))
    try:
        return build_report(ctx.db, ctx.area, out)
    finally:
        ctx.close()


def ok(area: Path, *args: str, codes: tuple[int, ...] = (0,)) -> Any:
    """Run megarun; its JSON when --json was given, else the finished process."""
    result = megarun_process(area, *args, timeout=180)
    assert result.returncode in codes, result.stderr
    return json.loads(result.stdout) if "--json" in args else result


def text_of(html: str) -> str:
    """The page's text with tags dropped and entities decoded (what a reader sees)."""
    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self.skip = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.skip = tag in ("style", "title")

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(html)
    return re.sub(r"\s+", " ", " ".join(parser.parts))


class Links(HTMLParser):
    """Every href of a page, and the text of each link."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href is not None:
            self._open = href
            self.links.append((href, ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            href, text = self.links[-1]
            self.links[-1] = (href, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._open = None


def links_of(page: Path) -> list[tuple[str, str]]:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.links


def broken_links(site: Path) -> list[str]:
    """Every link of every page of `site` that does not lead to a file (or leaves for the
    network)."""
    broken = []
    for page in sorted(site.rglob("*.html")):
        for href, _ in links_of(page):
            target = (page.parent / unquote(href.split("#")[0])).resolve()
            if href.startswith(("http:", "https:", "//")) or not target.is_file():
                broken.append(f"{page.relative_to(site)}: {href}")
    return broken

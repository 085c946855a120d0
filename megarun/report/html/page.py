"""One rendered page, and the one template environment every page is rendered with.

Autoescape is on for every template and undefined names fail loudly: a test name, an item, a
tag or a log line reaches the page only as escaped text, and the page is clean UTF-8: a byte a
name or log held that is not UTF-8 (kept as a surrogate) and a NUL show as U+FFFD. Links are
relative (`root` is the way back to the site's top from the page's folder) so the site works
from file:// anywhere.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from megarun.core.glyphs import item_glyph, rollup_glyph

if TYPE_CHECKING:
    import jinja2


@dataclass(frozen=True)
class Page:
    """A page of the site: its path under the site's folder (posix, relative) and its HTML."""

    path: str
    html: str


@cache
def environment() -> jinja2.Environment:
    # The templates are megarun's own (not the user's): a plain environment with autoescape.
    # Jinja is imported only when a page is rendered: a refresh that keeps every page (what
    # `sync` does most) never pays for it.
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("megarun.report.html", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # the templates do not change while megarun runs: no stat per page
    )
    env.filters["when"] = when
    env.filters["secs"] = secs
    env.globals["glyph"] = item_glyph
    env.globals["mark"] = rollup_glyph
    return env


def when(stamp: float | None) -> str:
    """A moment as the pages show it: UTC, to the second (the same whoever opens the page)."""
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp))


def secs(duration: float | None) -> str:
    """A duration as the pages show it: 0.4s, 12s, 3m05s, 2h07m."""
    if duration is None:
        return "-"
    if duration < 10:
        return f"{duration:.1f}s"
    whole = round(duration)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def root_of(path: str) -> str:
    """The relative way from the folder of the page at `path` back to the site's top."""
    return "../" * path.count("/")


def template(name: str) -> jinja2.Template:
    """The template `name`, compiled (once per process)."""
    return environment().get_template(name)


def render(path: str, name: str, **context: Any) -> Page:
    """The page at `path` rendered from the template `name`; `root` is given to it."""
    html = template(name).render(root=root_of(path), page_path=path, **context)
    return Page(path=path, html=clean_text(html))


def clean_text(text: str) -> str:
    """`text` as valid UTF-8 text without NUL: undecodable bytes (surrogates) and NUL become
    U+FFFD, so a page never carries bytes a browser would read differently."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape") if _escapable(text) else \
            text.encode("utf-8", "surrogatepass")
        text = raw.decode("utf-8", "replace")
    return text.replace("\0", "\ufffd")


def _escapable(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


@cache
def templates_digest() -> str:
    """A digest of every template: a page's data fingerprint includes it, so a new megarun
    whose pages look different renders them again rather than keeping the old ones."""
    digest = hashlib.sha256()
    folder = resources.files("megarun.report.html") / "templates"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        digest.update(entry.name.encode() + b"\0" + entry.read_bytes())
    return digest.hexdigest()[:16]

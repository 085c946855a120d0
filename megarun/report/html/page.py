"""One rendered page, and the one template environment every page is rendered with.

Autoescape is on for every template and undefined names fail loudly: a test name, an item, a
tag or a log line reaches the page only as escaped text. Links are relative (`root` is the
way back to the site's top from the page's folder) so the site works from file:// anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2


@dataclass(frozen=True)
class Page:
    """A page of the site: its path under the site's folder (posix, relative) and its HTML."""

    path: str
    html: str


@cache
def environment() -> jinja2.Environment:
    # The templates are megarun's own (not the user's): a plain environment with autoescape.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("megarun.report.html", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def root_of(path: str) -> str:
    """The relative way from the folder of the page at `path` back to the site's top."""
    return "../" * path.count("/")


def render(path: str, template: str, **context: Any) -> Page:
    """The page at `path` rendered from `template`; `root` is given to the template."""
    html = environment().get_template(template).render(root=root_of(path), page_path=path,
                                                       **context)
    return Page(path=path, html=html)

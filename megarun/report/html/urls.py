"""Where each page of the report lives, relative to the site's top folder.

Names from the database (targets hold `/`, tests and items any character) never become path
parts as they are: pages are named by row ids, and a target by a safe slug with a short hash,
so no name can climb out of the site (`../`) or clash with another after cleaning.
"""

from __future__ import annotations

import hashlib
import re

INDEX = "index.html"
CAMPAIGN_FOLDER = "campaign"
CAMPAIGN = f"{CAMPAIGN_FOLDER}/index.html"
BATCH_FOLDER = "batch"
BATCH = f"{BATCH_FOLDER}/index.html"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(name: str) -> str:
    """A file-name-safe, unique, readable form of `name`."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    readable = _UNSAFE.sub("_", name).strip("._-")[:40] or "x"
    return f"{readable}-{digest}"


def run_page(run_id: int) -> str:
    return f"runs/{run_id}/index.html"


def item_page(run_id: int, job_id: int) -> str:
    return f"runs/{run_id}/items/{job_id}.html"


def history_page(target: str) -> str:
    return f"history/{slug(target)}.html"


def batch_page(batch_job_id: int) -> str:
    return f"{BATCH_FOLDER}/{batch_job_id}.html"


def campaign_page(kind: str, name: str) -> str:
    """A campaign view of the jobs of one tag value, app or site (`kind`: tag, app, site)."""
    return f"{CAMPAIGN_FOLDER}/{kind}-{slug(name)}.html"

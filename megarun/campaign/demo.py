"""`megarun demo`: a throwaway area with a few apps and jobs, run on the local site."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.campaign import app_registry as app_service
from megarun.campaign.create import JobRequest, create_jobs
from megarun.config.area import Area
from megarun.homehost.areas import init_area

DEMO_APPS: dict[str, tuple[str, dict[str, Any], str]] = {
    "greet": ("echo Hello, {{ who }}", {"who": "world"}, "Print a greeting"),
    "nap": ("sleep {{ seconds }}", {"seconds": "0.2"}, "Sleep a little"),
    "add": ("expr {{ a }} + {{ b }}", {"a": None, "b": None}, "Add two integers"),
}


def make_demo_area(path: Path | None = None) -> Path:
    """Create the demo area (in a new temporary folder unless `path`); return its root."""
    root = Path(tempfile.mkdtemp(prefix="megarun-demo-")) if path is None else path
    init_area(root, keys=[], name="demo")
    return root


def add_demo_jobs(db: SqliteDatabase, area: Area, greetings: int = 24) -> None:
    """Give the demo area its apps and jobs."""
    for name, (command, params, description) in DEMO_APPS.items():
        app_service.add_app(db, name, command, params, description)
    names = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Ken", "Dennis"]
    requests = [JobRequest(app="greet", params={"who": names[i % len(names)]},
                           tags={"kind": "greeting", "batch": str(i % 3)})
                for i in range(greetings)]
    requests.append(JobRequest(app="nap", count=6, tags={"kind": "sleep"}))
    first = create_jobs(db, area, requests).first_id
    sums = [JobRequest(app="add", params={"a": str(i), "b": str(i * i)}, tags={"kind": "sum"},
                       after=[first]) for i in range(1, 5)]
    create_jobs(db, area, sums)

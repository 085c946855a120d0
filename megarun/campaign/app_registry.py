"""Apps: add from the command line, sync from apps/*.toml, list, show, remove."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peewee import SqliteDatabase

from megarun.campaign.app_stale import (
    definition_changed,
    mark_completed_stale,
    note_in_flight,
    rerender_unended,
)
from megarun.config.apps import AppSpec, load_app_file, validate_app
from megarun.db.connection import write_transaction
from megarun.db.models import App, Job
from megarun.errors import NotFoundError, UsageError


def spec_from_row(app: App) -> AppSpec:
    return AppSpec(app.name, app.command, app.description, json.loads(app.params),
                   json.loads(app.env), json.loads(app.resources), json.loads(app.requirements),
                   app.retries, app.source, stage_in=json.loads(app.stage_in or "[]"),
                   stage_out=json.loads(app.stage_out or "[]"))


def parse_param_defaults(pairs: list[str]) -> dict[str, Any]:
    """`--param name=default` (or bare `name`: required) into a params table."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not name:
            raise UsageError(f"--param {pair!r}: expected name=default or name")
        params[name] = value if sep else None
    return params


@dataclass(frozen=True)
class SavedApp:
    """What saving an app did: "added", "updated" or "unchanged" (the same definition saved
    again), and to its jobs when it changed what they run (megarun.campaign.app_stale)."""

    spec: AppSpec
    result: str
    stale: int = 0  # COMPLETED jobs now STALE
    rerendered: int = 0  # jobs not ended given the new command


def add_app(db: SqliteDatabase, name: str, command: str, params: dict[str, Any],
            description: str = "", retries: int = 0, replace: bool = False,
            requirements: dict[str, Any] | None = None) -> SavedApp:
    """Validate and save an app; refuses to overwrite unless `replace`."""
    table: dict[str, Any] = {"name": name, "command": command, "description": description,
                             "retries": retries, "params": params,
                             "requirements": requirements or {}}
    spec = validate_app(table, f"app {name!r}")
    return _save(db, spec, replace=replace)


def _save(db: SqliteDatabase, spec: AppSpec, replace: bool) -> SavedApp:
    fields = {"command": spec.command, "description": spec.description,
              "params": json.dumps(spec.params), "env": json.dumps(spec.env),
              "resources": json.dumps(spec.resources),
              "requirements": json.dumps(spec.requirements), "retries": spec.retries,
              "source": spec.source,
              # NULL, not "[]", when empty: dispatch finds staging apps by IS NOT NULL
              "stage_in": json.dumps(spec.stage_in) if spec.stage_in else None,
              "stage_out": json.dumps(spec.stage_out) if spec.stage_out else None}
    with write_transaction(db):
        existing = App.select().where(App.name == spec.name).first(db)
        if existing is None:
            App.create(name=spec.name, created=time.time(), **fields)
            return SavedApp(spec, "added")
        if not replace:
            raise UsageError(f"app {spec.name!r} already exists (use --replace to overwrite it)")
        old = spec_from_row(existing)
        if old == spec:
            return SavedApp(spec, "unchanged")
        App.update(**fields).where(App.id == existing.id).execute()
        if not definition_changed(old, spec):
            return SavedApp(spec, "updated")
        # what its jobs run changed: what starts from now on runs the new definition, results
        # are STALE (megarun.campaign.app_stale); a job it cannot render refuses the save
        rerendered = rerender_unended(db, existing.id, spec)
        note_in_flight(db, existing.id)
        return SavedApp(spec, "updated", mark_completed_stale(db, existing.id, spec.name),
                        rerendered)


def sync_apps(db: SqliteDatabase, apps_dir: Path) -> list[SavedApp]:
    """Load every *.toml of the area's apps folder; all files are validated before any is
    saved, and all are saved in one transaction (a job a changed app cannot render refuses
    them all)."""
    specs = [load_app_file(path) for path in sorted(apps_dir.glob("*.toml"))]
    with write_transaction(db):
        return [_save(db, spec, replace=True) for spec in specs]


def get_app(db: SqliteDatabase, name: str) -> App:
    app: App | None = App.select().where(App.name == name).first(db)
    if app is None:
        names = [a.name for a in App.select(App.name).order_by(App.name).execute(db)]
        valid = ", ".join(names) if names else "none (add one: megarun app add NAME --command ...)"
        raise NotFoundError(f"unknown app {name!r}; valid apps: {valid}")
    return app


def list_apps(db: SqliteDatabase) -> list[AppSpec]:
    return [spec_from_row(app) for app in App.select().order_by(App.name).execute(db)]


def remove_app(db: SqliteDatabase, name: str) -> None:
    app = get_app(db, name)
    used = Job.select().where(Job.app == app).count(db)
    if used:
        raise UsageError(f"app {name!r} has {used} job(s); remove them first (megarun job rm)")
    app.delete_instance()


def coerce_param_values(pairs: list[str]) -> dict[str, str]:
    """`-p name=value` pairs; values stay strings (they are shell-quoted when rendered)."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"-p {pair!r}: expected name=value")
        values[name] = value
    return values


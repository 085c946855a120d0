"""App definitions (apps/*.toml or `app add`) and rendering their command templates.

Command templates are Jinja2 with StrictUndefined; every value interpolated into a command is
shell-quoted by the environment's finalize hook, so no parameter can inject shell syntax.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from megarun.config.area import validate_name
from megarun.config.tomlfile import check_keys, expect_type, load_toml
from megarun.errors import ConfigError, UsageError

if TYPE_CHECKING:
    import jinja2

_APP_KEYS = {"name", "command", "description", "params", "env", "resources", "requirements",
             "retries", "stage_in", "stage_out"}
RESOURCE_KEYS = {"nodes", "ranks_per_node", "threads_per_rank", "gpus_per_rank",
                 "node_packing_count", "walltime"}


@dataclass(frozen=True)
class AppSpec:
    """A validated app definition."""

    name: str
    command: str
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # None value: required
    env: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    requirements: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    source: str = "cli"
    stage_in: list[dict[str, str]] = field(default_factory=list)  # [{src, dest}], see below
    stage_out: list[dict[str, str]] = field(default_factory=list)


def load_app_file(path: Path) -> AppSpec:
    """Parse and validate one apps/<name>.toml."""
    data = load_toml(path)
    return validate_app(data, str(path), default_name=path.stem)


def validate_app(data: dict[str, Any], origin: str, default_name: str | None = None) -> AppSpec:
    """Check keys and types of an app table, and that its template parses."""
    check_keys(data, _APP_KEYS, origin)
    name = validate_name("app", expect_type(data.get("name", default_name), str, origin, "name"))
    if "command" not in data:
        raise ConfigError(f"{origin}: missing key 'command'")
    command = expect_type(data["command"], str, origin, "command")
    params = expect_type(data.get("params", {}), dict, origin, "params")
    env = expect_type(data.get("env", {}), dict, origin, "env")
    for key, value in env.items():
        expect_type(value, str, origin, f"env.{key}")
    resources = expect_type(data.get("resources", {}), dict, origin, "resources")
    check_keys(resources, RESOURCE_KEYS, origin, "resources")
    for key, value in resources.items():
        expect_type(value, (int, float), origin, f"resources.{key}")
    requirements = validate_requirements(data.get("requirements", {}), origin)
    retries = expect_type(data.get("retries", 0), int, origin, "retries")
    check_template(command, origin)
    stage_in = validate_staging(data.get("stage_in", []), origin, "stage_in")
    stage_out = validate_staging(data.get("stage_out", []), origin, "stage_out")
    used = template_variables(command) | staging_variables(stage_in + stage_out)
    undeclared = used - params.keys()
    full_params = {**{name: None for name in undeclared}, **params}
    return AppSpec(name, command, expect_type(data.get("description", ""), str, origin,
                   "description"), full_params, env, resources, requirements, retries, origin,
                   stage_in=stage_in, stage_out=stage_out)


#: Comparison operators of a version constraint, longest first so ">=" is not read as ">".
VERSION_OPERATORS = (">=", "<=", "==", "!=", ">", "<")
_VERSION_RE = re.compile(r"^\d+(?:\.\d+)*$")
_TAG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
Scalar = str | bool | int | float


def validate_requirements(table: Any, origin: str) -> dict[str, Scalar]:
    """An app's [requirements]: tag = value, where a string starting with an operator is a
    version constraint (">=3.10", ">=3.10,<3.13")."""
    expect_type(table, dict, origin, "requirements")
    for key, value in table.items():
        check_tag(key, origin, "requirements")
        check_scalar(value, origin, f"requirements.{key}")
        if isinstance(value, str) and value.strip()[:1] in ("<", ">", "=", "!"):
            parse_constraints(value, f"{origin}: key 'requirements.{key}'")
    return dict(table)


def check_tag(key: str, origin: str, table: str) -> None:
    """Requirement and capability names: letters, digits, '_', '.', '-', starting a word."""
    if not _TAG_RE.match(key):
        raise ConfigError(f"{origin}: [{table}] name {key!r} must be up to 64 letters, digits, "
                          "'_', '.' or '-', starting with a letter or '_'")


def check_scalar(value: Any, origin: str, key: str) -> None:
    """Requirement and capability values: a non-empty string, a number or true/false."""
    if not isinstance(value, Scalar) or value == "":
        raise ConfigError(f"{origin}: key {key!r} must be a non-empty string, a number or "
                          f"true/false, got {value!r}")


def parse_constraints(text: str, where: str) -> list[tuple[str, tuple[int, ...]]]:
    """">=3.10,<3.13" -> [(">=", (3, 10)), ("<", (3, 13))]; a malformed one is a ConfigError."""
    constraints = []
    for part in text.split(","):
        part = part.strip()
        operator = next((op for op in VERSION_OPERATORS if part.startswith(op)), None)
        version = part[len(operator):].strip() if operator else ""
        if operator is None or not _VERSION_RE.match(version):
            raise ConfigError(
                f"{where}: bad version constraint {part!r}: use an operator "
                f"({', '.join(VERSION_OPERATORS)}) and a dotted version, e.g. \">=3.10\" or "
                "\">=3.10,<3.13\"")
        constraints.append((operator, tuple(int(n) for n in version.split("."))))
    return constraints


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    def quote(value: Any) -> str:
        return shlex.quote(str(value))

    return jinja2.Environment(undefined=jinja2.StrictUndefined, finalize=quote, autoescape=False)  # noqa: S701


def check_template(command: str, origin: str) -> None:
    """A template that does not parse is a ConfigError naming where it came from."""
    import jinja2

    try:
        _environment().parse(command)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{origin}: bad command template: {exc.message}") from exc


def template_variables(command: str) -> set[str]:
    """The parameter names a command template uses."""
    import jinja2.meta

    return set(jinja2.meta.find_undeclared_variables(_environment().parse(command)))


def resolve_params(app: AppSpec, given: dict[str, str]) -> dict[str, Any]:
    """Defaults plus given values; an unknown or missing parameter is a UsageError."""
    unknown = set(given) - set(app.params)
    if unknown:
        known = ", ".join(sorted(app.params)) or "none"
        raise UsageError(
            f"app {app.name!r} has no parameter {sorted(unknown)[0]!r} (parameters: {known})"
        )
    values = {**app.params, **given}
    missing = sorted(name for name, value in values.items() if value is None)
    if missing:
        raise UsageError(
            f"app {app.name!r} needs parameter {missing[0]!r}: pass -p {missing[0]}=VALUE"
        )
    return values


def render_command(command: str, params: dict[str, Any]) -> str:
    """Render a command template with every interpolated value shell-quoted."""
    return _render(_environment(), command, params, "command template")


def _render(environment: jinja2.Environment, template: str, params: dict[str, Any],
            label: str) -> str:
    """Render `template`; a template error is a one-line UsageError starting with `label`."""
    import jinja2

    try:
        return environment.from_string(template).render(**params)
    except jinja2.UndefinedError as exc:
        raise UsageError(f"{label}: {exc.message}") from exc
    except jinja2.TemplateError as exc:
        raise UsageError(f"{label}: {exc}") from exc


# -- stage-in and stage-out ------------------------------------------------------------------
# `stage_in = [{src = "/data/{{ case }}.dat", dest = "input.dat"}]` copies a file or folder of
# the home host into the job's run dir before the job is queued; `stage_out = [{src =
# "out.dat", dest = "results/{{ case }}.dat"}]` copies one back after the job ended well.
# Every field is a Jinja template of the app's parameters, rendered plainly (a path is never
# shell-quoted). The job-dir side (stage_in.dest, stage_out.src) must stay inside the run dir.

STAGE_KEYS = ("src", "dest")
#: Which field of an entry names a path in the job's run dir.
JOB_SIDE = {"stage_in": "dest", "stage_out": "src"}


def validate_staging(value: Any, origin: str, key: str) -> list[dict[str, str]]:
    """`stage_in` or `stage_out`: a list of {src, dest} tables whose templates parse."""
    items = expect_type(value, list, origin, key)
    checked = []
    for index, item in enumerate(items):
        where = f"{key}[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{origin}: {where} must be a table like "
                              '{src = "...", dest = "..."}')
        check_keys(item, STAGE_KEYS, origin, where)
        for part in STAGE_KEYS:
            if part not in item:
                raise ConfigError(f"{origin}: {where} is missing {part!r}")
            text = expect_type(item[part], str, origin, f"{where}.{part}")
            if not text.strip() or "\0" in text or "\n" in text:
                raise ConfigError(f"{origin}: {where}.{part} must be a non-empty path on one line")
            _check_path_template(text, origin, f"{where}.{part}")
        job_path = item[JOB_SIDE[key]]
        problem = None if "{" in job_path else job_path_problem(job_path)
        if problem:
            raise ConfigError(f"{origin}: {where}.{JOB_SIDE[key]} {job_path!r} {problem}")
        checked.append({"src": item["src"], "dest": item["dest"]})
    return checked


def job_path_problem(path: str) -> str | None:
    """Why `path` cannot name something inside a job's run dir, or None when it can."""
    if path.startswith("/"):
        return "must be relative to the job's run dir, not absolute"
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        return "must not contain '..' (it has to stay inside the job's run dir)"
    if not parts:
        return "must name a file or folder inside the job's run dir"
    return None


def staging_variables(items: list[dict[str, str]]) -> set[str]:
    """The parameter names the staging templates use."""
    import jinja2.meta

    names: set[str] = set()
    for item in items:
        for text in item.values():
            names |= jinja2.meta.find_undeclared_variables(_path_environment().parse(text))
    return names


def render_path(template: str, params: dict[str, Any]) -> str:
    """Render a staging path template plainly (no shell quoting), undefined names refused."""
    return _render(_path_environment(), template, params, f"path template {template!r}")


@lru_cache(maxsize=1)
def _path_environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701


def _check_path_template(text: str, origin: str, key: str) -> None:
    import jinja2

    try:
        _path_environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{origin}: bad path template in {key}: {exc.message}") from exc

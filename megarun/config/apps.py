"""App definitions (apps/*.toml or `app add`) and rendering their command templates.

Command templates are Jinja2 with StrictUndefined; every value interpolated into a command is
shell-quoted by the environment's finalize hook, so no parameter can inject shell syntax.
Templates are written by users, so they render in Jinja's immutable sandbox: a template sees
its parameters, filters and tests, never Python internals (`{{ ''.__class__ }}` and the like
are refused when the app is saved, and by the sandbox when a job is made).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from megarun.config.area import MAX_RETRIES, validate_name
from megarun.config.inputs import find_bad_value, text_problem
from megarun.config.tomlfile import check_keys, expect_type, load_toml, synonym
from megarun.core.quantities import MINUTE, SECOND, parse_duration
from megarun.errors import ConfigError, UsageError

if TYPE_CHECKING:
    import jinja2

#: Apps say `command`, test steps `cmd`: an app takes either.
_APP_KEYS = {"name", "command", "cmd", "description", "params", "env", "resources",
             "requirements", "retries", "stage_in", "stage_out"}
#: Jobs say `walltime` (a bare number: minutes), tests `runtimelim` (a bare number: seconds);
#: either is accepted, each with its own bare unit, and kept as `walltime` in minutes.
_RUNTIME_WORDS = {"walltime": MINUTE, "runtimelim": SECOND}
RESOURCE_KEYS = {"nodes", "ranks_per_node", "threads_per_rank", "gpus_per_rank",
                 "node_packing_count", *_RUNTIME_WORDS}
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    bad = find_bad_value(data)
    if bad is not None:
        raise ConfigError(f"{origin}: key '{bad[0]}' {bad[1]}")
    name = validate_name("app", expect_type(data.get("name", default_name), str, origin, "name"))
    found = synonym(data, ("command", "cmd"), origin)
    if found is None:
        raise ConfigError(f"{origin}: missing key 'command'")
    command = expect_type(found[1], str, origin, found[0])
    params = _param_defaults(data.get("params", {}), origin)
    env = _env(data.get("env", {}), origin)
    resources = _resources(data.get("resources", {}), origin)
    requirements = validate_requirements(data.get("requirements", {}), origin)
    retries = expect_type(data.get("retries", 0), int, origin, "retries")
    if not 0 <= retries <= MAX_RETRIES:
        raise ConfigError(f"{origin}: key 'retries' must be 0 to {MAX_RETRIES}, got {retries}")
    check_template(command, origin if origin == f"app {name!r}" else f"{origin}: app {name!r}")
    stage_in = validate_staging(data.get("stage_in", []), origin, "stage_in")
    stage_out = validate_staging(data.get("stage_out", []), origin, "stage_out")
    used = template_variables(command) | staging_variables(stage_in + stage_out)
    undeclared = used - params.keys()
    full_params = {**{name: None for name in undeclared}, **params}
    return AppSpec(name, command, expect_type(data.get("description", ""), str, origin,
                   "description"), full_params, env, resources, requirements, retries, origin,
                   stage_in=stage_in, stage_out=stage_out)


def _resources(table: Any, origin: str) -> dict[str, Any]:
    """`[resources]`: numbers, and the runtime limit as a duration kept as minutes."""
    resources = dict(expect_type(table, dict, origin, "resources"))
    check_keys(resources, RESOURCE_KEYS, origin, "resources")
    found = synonym(resources, ("walltime", "runtimelim"), origin, "resources")
    for key in _RUNTIME_WORDS:
        resources.pop(key, None)
    for key, value in resources.items():
        expect_type(value, (int, float), origin, f"resources.{key}")
    if found is not None:
        key, raw = found
        resources["walltime"] = parse_duration(raw, f"{origin}: key 'resources.{key}'",
                                               _RUNTIME_WORDS[key], ConfigError) / MINUTE
    return resources


def _param_defaults(table: Any, origin: str) -> dict[str, Any]:
    """`[params]`: name = default, a string, number or true/false (None: required)."""
    expect_type(table, dict, origin, "params")
    for key, value in table.items():
        if value is not None and not isinstance(value, (str, int, float)):
            raise ConfigError(f"{origin}: key 'params.{key}' must be a string, a number or "
                              f"true/false, got {value!r}")
    return dict(table)


def _env(table: Any, origin: str) -> dict[str, str]:
    """`[env]`: NAME = "value"; a name the shell could not export is refused."""
    expect_type(table, dict, origin, "env")
    for key, value in table.items():
        if not _ENV_NAME_RE.match(key):
            raise ConfigError(f"{origin}: key 'env.{key}': the name must be letters, digits and "
                              "'_', not starting with a digit")
        expect_type(value, str, origin, f"env.{key}")
    return dict(table)


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


#: The largest text or list a template may build with `*`, and the largest integer (in bits)
#: with `**`: enough for any command line, far below what would exhaust memory.
MAX_TEMPLATE_SEQUENCE = 1_000_000
MAX_TEMPLATE_INT_BITS = 4096


def _sandbox(**options: Any) -> jinja2.Environment:
    """An immutable sandbox with StrictUndefined whose `*` and `**` cannot exhaust memory."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

    environment = BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False, **options)
    environment.globals.pop("lipsum", None)  # text generator of any size: no use in a command
    return environment


def _check_binop(operator: str, left: Any, right: Any) -> None:
    from jinja2.exceptions import SecurityError

    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        if right > 0 and max(left.bit_length(), 1) * right > MAX_TEMPLATE_INT_BITS:
            raise SecurityError(f"{left} ** {right} is too large")
    if operator == "*":
        sized, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(sized, (str, list, tuple)) and isinstance(times, int) \
                and len(sized) * times > MAX_TEMPLATE_SEQUENCE:
            raise SecurityError(f"a text or list of more than {MAX_TEMPLATE_SEQUENCE} items")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    def quote(value: Any) -> str:
        return shlex.quote(str(value))

    return _sandbox(finalize=quote)


@lru_cache(maxsize=512)
def _compiled(kind: str, source: str) -> jinja2.Template:
    """A template compiled once per process: compiling costs far more than rendering, and a
    --from-file of many jobs renders the same few templates over and over."""
    environment = _environment() if kind == "command" else _path_environment()
    return environment.from_string(source)


def check_template(command: str, where: str) -> None:
    """A template that does not parse, or reaches for Python internals, is a ConfigError
    starting with `where` (the file or the app)."""
    import jinja2

    try:
        tree = _environment().parse(command)
        _compiled("command", command)  # finds what parsing does not: an unknown filter, test
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{where}: bad command template: {exc.message}") from exc
    unsafe = unsafe_access(tree)
    if unsafe:
        raise ConfigError(f"{where}: command template: {unsafe!r} is not allowed (a template "
                          "may use its parameters, filters and tests, not Python internals)")


def unsafe_access(tree: jinja2.nodes.Template) -> str | None:
    """The first attribute or item name starting with '_' a template asks for, if any: the
    sandbox would refuse it when rendering; saying so when the app is saved is kinder."""
    from jinja2 import nodes

    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name: Any = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args \
                and isinstance(node.args[0], nodes.Const):
            name = node.args[0].value
        if isinstance(name, str) and name.startswith("_"):
            return name
    return None


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


def render_command(command: str, params: dict[str, Any], app: str = "") -> str:
    """Render a command template with every interpolated value shell-quoted."""
    label = f"app {app!r}: command template" if app else "command template"
    return _render("command", command, params, label)


#: What a template can raise besides TemplateError while rendering user values: `{{ x / 0 }}`,
#: `{{ x + 1 }}` on text, a macro calling itself.
_RENDER_ERRORS = (ArithmeticError, TypeError, ValueError, LookupError, AttributeError,
                  RecursionError)


def _render(kind: str, template: str, params: dict[str, Any], label: str) -> str:
    """Render `template`; a template error is a one-line UsageError starting with `label`."""
    import jinja2

    try:
        text = _compiled(kind, template).render(**params)
    except jinja2.UndefinedError as exc:
        raise UsageError(f"{label}: {exc.message}") from exc
    except jinja2.TemplateError as exc:
        raise UsageError(f"{label}: {exc}") from exc
    except _RENDER_ERRORS as exc:
        raise UsageError(f"{label}: {type(exc).__name__}: {exc}") from exc
    problem = text_problem(text)
    if problem:
        raise UsageError(f"{label}: the rendered text {problem}")
    return text


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
    return _render("path", template, params, f"path template {template!r}")


@lru_cache(maxsize=1)
def _path_environment() -> jinja2.Environment:
    return _sandbox()


def _check_path_template(text: str, origin: str, key: str) -> None:
    import jinja2

    try:
        tree = _path_environment().parse(text)
        _compiled("path", text)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{origin}: bad path template in {key}: {exc.message}") from exc
    unsafe = unsafe_access(tree)
    if unsafe:
        raise ConfigError(f"{origin}: path template in {key}: {unsafe!r} is not allowed (a "
                          "template may use its parameters, filters and tests, not Python "
                          "internals)")

"""Rendering batch scripts from templates/<scheduler>.sh.j2 and the shared partials.

Jinja2 with StrictUndefined. Every value printed into a script is shell-quoted: templates apply
the `q` filter (shlex.quote) explicitly, and the environment's finalize hook quotes anything a
template forgot, so a value can never become shell syntax. Only `Verbatim` text passes as it is:
directive lines (built and checked by the scheduler module) and the site admin's preamble.
Scripts render in Jinja's immutable sandbox: values come from users (site settings, `--set`
extras, app environments) and a template, shipped or edited, reaches no Python internals.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from megarun.errors import ConfigError
from megarun.resources import data_dir
from megarun.schedulers.base import Scheduler, ScriptRequest, check_request

if TYPE_CHECKING:
    import jinja2

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Verbatim(str):
    """Text that goes into a script exactly as it is (already checked or already quoted)."""


def quote(value: Any) -> Verbatim:
    """The `q` filter: one shell word."""
    return Verbatim(shlex.quote(str(value)))


def quote_argv(values: Iterable[Any]) -> Verbatim:
    """The `qargv` filter: a command line whose words are exactly `values`."""
    return Verbatim(" ".join(shlex.quote(str(value)) for value in values))


def _finalize(value: Any) -> str:
    if isinstance(value, Verbatim):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return shlex.quote(str(value))


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The template environment (one per process)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = quote
    env.filters["qargv"] = quote_argv
    return env


def template_context(scheduler: Scheduler, req: ScriptRequest) -> dict[str, Any]:
    """The variables every scheduler template sees (listed in templates/README.md)."""
    check_request(req)
    _check_env(req.env)
    _check_preamble(req.preamble)
    if not req.agent_argv or not all(isinstance(arg, str) for arg in req.agent_argv):
        raise ConfigError("the agent command of a batch script must be a non-empty list of strings")
    return {
        "scheduler": scheduler.name,
        "directives": [Verbatim(line) for line in scheduler.directives(req)],
        "job_name": req.job_name,
        "nodes": req.nodes,
        "walltime_minutes": req.walltime_minutes,
        "walltime_seconds": req.walltime_minutes * 60,
        "batch_dir": req.batch_dir,
        "output": req.output,
        "exit_file": req.exit_file,
        "agent_argv": list(req.agent_argv),
        "env": dict(req.env),
        "preamble": [Verbatim(line) for line in req.preamble],
        "nodelist_env": scheduler.nodelist_env,
        "jobid_env": scheduler.jobid_env,
        "jobid_expr": _jobid_expr(scheduler.jobid_env),
    }


def render_with(scheduler: Scheduler, req: ScriptRequest) -> str:
    """Render templates/<scheduler.name>.sh.j2 for `req`."""
    import jinja2

    context = template_context(scheduler, req)
    try:
        return environment().get_template(f"{scheduler.name}.sh.j2").render(**context)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"template {scheduler.name}.sh.j2: {exc}") from exc


def _jobid_expr(name: str) -> Verbatim:
    """Shell text for the scheduler's job id inside the job ("$$" without a scheduler)."""
    if not name:
        return Verbatim('"$$"')
    if not _ENV_NAME.match(name):
        raise ConfigError(f"scheduler job id variable {name!r} is not a shell variable name")
    return Verbatim(f'"${{{name}:-}}"')


def _check_env(env: dict[str, str]) -> None:
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ConfigError(f"environment variable name {name!r} is not a shell variable name")
        if not isinstance(value, str) or "\0" in value:
            raise ConfigError(f"environment variable {name}: the value must be text without NUL")


def _check_preamble(lines: list[str]) -> None:
    for line in lines:
        if not isinstance(line, str) or "\0" in line:
            raise ConfigError("a preamble line must be text without NUL")

"""Site presets: one TOML per kind of site in site-presets/, validated on load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megarun.config.apps import check_scalar, check_tag
from megarun.config.tomlfile import check_keys, expect_type, load_toml
from megarun.errors import ConfigError, NotFoundError
from megarun.resources import data_dir

SCHEDULERS = ("local", "slurm", "pbs", "lsf", "cobalt")
_PRESET_KEYS = {
    "description", "scheduler", "mpi_launcher", "node", "queues", "account", "workdir",
    "python", "template", "capabilities", "ssh", "detected",
}
_SSH_KEYS = {"identity", "jump", "known_hosts"}
_NODE_KEYS = {"cpus", "gpus", "max_jobs"}


@dataclass(frozen=True)
class Preset:
    """A validated preset: its name, description and settings table."""

    name: str
    description: str
    settings: dict[str, Any]

    @property
    def scheduler(self) -> str:
        return str(self.settings["scheduler"])


def presets_dir() -> Path:
    return data_dir("site-presets")


def preset_names() -> list[str]:
    """Every preset shipped with this installation, sorted."""
    return sorted(path.stem for path in presets_dir().glob("*.toml"))


def load_preset(name: str) -> Preset:
    """Load and validate one preset; an unknown name lists the valid ones."""
    path = presets_dir() / f"{name}.toml"
    if "/" in name or not path.is_file():
        valid = ", ".join(preset_names())
        raise NotFoundError(f"unknown preset {name!r}; valid presets: {valid}")
    return validate_preset(name, load_toml(path), str(path))


def validate_preset(name: str, data: dict[str, Any], origin: str) -> Preset:
    """Check a preset's keys and types."""
    check_keys(data, _PRESET_KEYS, origin)
    scheduler = expect_type(data.get("scheduler", "local"), str, origin, "scheduler")
    if scheduler not in SCHEDULERS:
        raise ConfigError(
            f"{origin}: unknown scheduler {scheduler!r}; valid schedulers: {', '.join(SCHEDULERS)}"
        )
    node = expect_type(data.get("node", {}), dict, origin, "node")
    check_keys(node, _NODE_KEYS, origin, "node")
    for key in _NODE_KEYS & node.keys():
        if expect_type(node[key], int, origin, f"node.{key}") < 0:
            raise ConfigError(f"{origin}: key 'node.{key}' must not be negative")
    ssh = expect_type(data.get("ssh", {}), dict, origin, "ssh")
    check_keys(ssh, _SSH_KEYS, origin, "ssh")
    for key, value in ssh.items():
        expect_type(value, str, origin, f"ssh.{key}")
    expect_type(data.get("python", "python3"), str, origin, "python")
    validate_capabilities(data.get("capabilities", {}), origin)
    settings = dict(data)
    settings["scheduler"] = scheduler
    settings["node"] = {"cpus": 0, "gpus": 0, "max_jobs": 0, **node}
    description = expect_type(data.get("description", ""), str, origin, "description")
    return Preset(name, description, settings)


def validate_capabilities(table: Any, origin: str) -> dict[str, Any]:
    """A site's [capabilities]: tag = string, number or true/false (matched against apps'
    requirements; quote versions, `python = "3.10"`, or TOML reads 3.10 as 3.1)."""
    expect_type(table, dict, origin, "capabilities")
    for key, value in table.items():
        check_tag(key, origin, "capabilities")
        check_scalar(value, origin, f"capabilities.{key}")
    return dict(table)


def apply_overrides(settings: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `--set key=value` (dotted keys reach into tables; numbers and booleans parsed)."""
    result = _deep_copy(settings)
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {assignment!r}: expected key=value")
        table = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            nested = table.setdefault(part, {})
            if not isinstance(nested, dict):
                raise ConfigError(f"--set {assignment!r}: {part!r} is not a table")
            table = nested
        table[parts[-1]] = parse_scalar(raw)
    return result


def parse_scalar(raw: str) -> Any:
    """'4' -> 4, '1.5' -> 1.5, 'true' -> True; anything else stays a string."""
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw


def _deep_copy(table: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in table.items()}

"""Site presets: one TOML per kind of site in site-presets/, validated on load.

Presets come from three folders, the first that has a name winning: the area's own
`site-presets/`, the user's (`$XDG_CONFIG_HOME/megarun/presets/`, by default
`~/.config/megarun/presets/`, found with platformdirs) and the ones shipped with megarun; so a
user can keep a preset for their machine outside the installation, and a preset of the same
name as a shipped one replaces it (`site presets` says so).

A preset names the scheduler and MPI launcher of a machine, the shape of its nodes, its queues
with their limits, the account and queue defaults the `site init` wizard offers, and template
extras (directives for the scheduler's own table, a shell preamble, environment variables).
A site's settings are a preset with `--set` overrides applied, checked by the same rules.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import platformdirs

from megarun.config.apps import check_scalar, check_tag
from megarun.config.elastic import check_against_queues, read_elastic
from megarun.config.inputs import find_bad_value, printable, text_problem, value_problem
from megarun.config.queues import Queue, validate_queues
from megarun.config.queues import queue_limits as queue_limits  # importable from here too
from megarun.config.tomlfile import check_keys, did_you_mean, expect_type, load_toml
from megarun.errors import ConfigError, NotFoundError
from megarun.resources import data_dir
from megarun.schedulers import check_extras, check_pilot
from megarun.schedulers.base import Allocation

SCHEDULERS = ("local", "slurm", "pbs", "lsf", "cobalt")
MPI_LAUNCHERS = ("none", "srun", "mpiexec", "mpirun", "aprun", "jsrun")
MODES = ("pilot", "direct")
#: What a queue name is on a Slurm site: a partition (-p, the default) or a QOS (-q).
QUEUE_KINDS = ("partition", "qos")
_PRESET_KEYS = {
    "description", "scheduler", "mpi_launcher", "mpi_args", "node", "queues", "account",
    "checked", "source",
    "account_required", "default_queue", "queue_kind", "mode", "host", "workdir", "python",
    "template", "capabilities", "ssh", "detected", "pilot", "elastic", *SCHEDULERS,
}
_SSH_KEYS = {"identity", "jump", "known_hosts"}
_NODE_KEYS = {"cpus", "gpus", "max_jobs"}
#: How batch jobs size their allocation: whole nodes (exclusive, the default) or a node shape.
_PILOT_KEYS = {"exclusive", "cpus_per_node", "gpus_per_node"}
PILOT_DEFAULTS: dict[str, Any] = {"exclusive": True, "cpus_per_node": 0, "gpus_per_node": 0}
_TEMPLATE_KEYS = {"preamble", "env"}
#: A preset's `checked` month and `source` page: when and against what its limits were checked.
_CHECKED_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
_SOURCE_RE = re.compile(r"^https?://[^\s\x00-\x1f\x7f]+$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Preset names the `site init` wizard lists first, in this order; the rest follow sorted.
FIRST_PRESETS = ("local",)
#: The folder of an area's own presets, at its root.
AREA_PRESETS = "site-presets"


class PresetOrigin(Enum):
    """Where a preset was found, the folder that wins first."""

    AREA = "area"
    USER = "user"
    SHIPPED = "shipped"


@dataclass(frozen=True)
class Preset:
    """A validated preset: its settings table (what a site saves, with `--set` overrides) and
    what `site init` asks about, read once when the preset is validated."""

    name: str
    description: str
    settings: dict[str, Any]
    scheduler: str = "local"
    queues: tuple[Queue, ...] = ()  # in the order the file lists them
    default_queue: str = ""
    account: str = ""
    account_required: bool = False
    host: str = ""  # host and workdir are suggestions for `site init`, not a site's settings
    workdir: str = ""
    origin: PresetOrigin = PresetOrigin.SHIPPED
    path: Path | None = None
    #: The origins of presets of the same name this one hides (a user's `polaris` hides the
    #: shipped one).
    hides: tuple[PresetOrigin, ...] = ()
    checked: str = ""  # YYYY-MM: when the limits were compared with the centre's page
    source: str = ""  # that page


def presets_dir() -> Path:
    """The presets shipped with this installation."""
    return data_dir("site-presets")


def user_presets_dir() -> Path:
    """The user's own presets: `presets/` in megarun's config folder (XDG_CONFIG_HOME)."""
    return Path(platformdirs.user_config_dir("megarun")) / "presets"


def preset_folders(area_root: Path | None = None) -> list[tuple[PresetOrigin, Path]]:
    """Where presets are looked for, the one that wins first."""
    folders = [(PresetOrigin.USER, user_presets_dir()), (PresetOrigin.SHIPPED, presets_dir())]
    if area_root is not None:
        folders.insert(0, (PresetOrigin.AREA, area_root / AREA_PRESETS))
    return folders


def preset_files(area_root: Path | None = None) -> dict[str, list[tuple[PresetOrigin, Path]]]:
    """Each preset name with the files that give it, the winner first: `local` first, then the
    rest sorted."""
    found: dict[str, list[tuple[PresetOrigin, Path]]] = {}
    seen: set[Path] = set()
    for origin, folder in preset_folders(area_root):
        if not folder.is_dir() or folder.resolve() in seen:  # an area at the top of a checkout
            continue
        seen.add(folder.resolve())
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, []).append((origin, path))
    first = [name for name in FIRST_PRESETS if name in found]
    return {name: found[name] for name in first + sorted(set(found) - set(first))}


def preset_names(area_root: Path | None = None) -> list[str]:
    """Every preset name there is: `local` first, then the rest sorted."""
    return list(preset_files(area_root))


def load_preset(name: str, area_root: Path | None = None) -> Preset:
    """Load and validate one preset (the area's, else the user's, else the shipped one); an
    unknown name suggests the nearest and lists the valid ones."""
    files = preset_files(area_root)
    if name not in files:
        raise NotFoundError(f"unknown preset {name!r}{did_you_mean(name, files)}; valid "
                            f"presets: {', '.join(files)}")
    (origin, path), *hidden = files[name]
    preset = validate_preset(name, load_toml(path), str(path))
    return dataclasses.replace(preset, origin=origin, path=path,
                               hides=tuple(other for other, _path in hidden))


def validate_preset(name: str, data: dict[str, Any], origin: str) -> Preset:
    """Check a preset's (or a site's settings') keys, types and cross-references."""
    check_keys(data, _PRESET_KEYS, origin)
    bad = find_bad_value(data)
    if bad is not None:
        raise ConfigError(f"{origin}: key '{bad[0]}' {bad[1]}")
    scheduler = _choice(data.get("scheduler", "local"), SCHEDULERS, origin, "scheduler")
    _choice(data.get("mpi_launcher", "none"), MPI_LAUNCHERS, origin, "mpi_launcher")
    _choice(data.get("mode", "pilot"), MODES, origin, "mode")
    _check_strings(data.get("mpi_args", []), origin, "mpi_args")
    for key in ("python", "description", "account", "workdir", "host", "default_queue"):
        expect_type(data.get(key, ""), str, origin, key)
    expect_type(data.get("account_required", False), bool, origin, "account_required")
    node = _validate_node(data.get("node", {}), origin)
    _validate_ssh(data.get("ssh", {}), origin)
    queues, in_minutes = validate_queues(data.get("queues", {}), origin)
    data = {**data, "queues": in_minutes} if queues else data
    _check_provenance(data, origin)
    _check_default_queue(data.get("default_queue", ""), queues, origin)
    kind = _choice(data.get("queue_kind", "partition"), QUEUE_KINDS, origin, "queue_kind")
    if kind != "partition" and scheduler != "slurm":
        raise ConfigError(f"{origin}: queue_kind {kind!r} is for Slurm sites only")
    _validate_template(data.get("template", {}), origin)
    _validate_extras(scheduler, data, origin)
    pilot = _validate_pilot(scheduler, data, origin)
    check_against_queues(read_elastic(data.get("elastic", {}), origin),
                         {queue.name: queue for queue in queues}, data.get("default_queue", ""),
                         origin, scheduler)
    validate_capabilities(data.get("capabilities", {}), origin)
    settings = dict(data)
    settings["scheduler"] = scheduler
    settings["node"] = {"cpus": 0, "gpus": 0, "max_jobs": 0, **node}
    settings["pilot"] = pilot
    return Preset(name, data.get("description", ""), settings, scheduler, tuple(queues),
                  data.get("default_queue", ""), data.get("account", ""),
                  data.get("account_required", False), data.get("host", ""),
                  data.get("workdir", ""), checked=data.get("checked", ""),
                  source=data.get("source", ""))


def _choice(value: Any, valid: tuple[str, ...], origin: str, key: str) -> str:
    text = expect_type(value, str, origin, key)
    if text not in valid:
        raise ConfigError(f"{origin}: unknown {key} {text!r}; valid: {', '.join(valid)}")
    return str(text)


def _check_strings(value: Any, origin: str, key: str) -> list[str]:
    """A list of one-line strings (launcher arguments, preamble lines)."""
    for index, item in enumerate(expect_type(value, list, origin, key)):
        expect_type(item, str, origin, f"{key}[{index}]")
        if "\n" in item or "\0" in item:
            raise ConfigError(f"{origin}: {key}[{index}] may not hold a newline or NUL")
    return list(value)


def _validate_node(table: Any, origin: str) -> dict[str, Any]:
    node = expect_type(table, dict, origin, "node")
    check_keys(node, _NODE_KEYS, origin, "node")
    for key in _NODE_KEYS & node.keys():
        if expect_type(node[key], int, origin, f"node.{key}") < 0:
            raise ConfigError(f"{origin}: key 'node.{key}' must not be negative")
    return dict(node)


def _validate_ssh(table: Any, origin: str) -> None:
    ssh = expect_type(table, dict, origin, "ssh")
    check_keys(ssh, _SSH_KEYS, origin, "ssh")
    for key, value in ssh.items():
        expect_type(value, str, origin, f"ssh.{key}")


def _check_provenance(data: dict[str, Any], origin: str) -> None:
    """`checked = "YYYY-MM"`, the month the limits were compared with `source`, the centre's
    page (an http(s) URL); both optional, so that sites saved before them still load."""
    checked = expect_type(data.get("checked", ""), str, origin, "checked")
    if checked and not _CHECKED_RE.match(checked):
        raise ConfigError(f"{origin}: key 'checked' must be a month as YYYY-MM, got "
                          f"{printable(checked)!r}")
    source = expect_type(data.get("source", ""), str, origin, "source")
    if source and (len(source) > 500 or not _SOURCE_RE.match(source)):
        raise ConfigError(f"{origin}: key 'source' must be the http(s) URL of the page the "
                          "preset was checked against")


def _check_default_queue(default: str, queues: list[Queue], origin: str) -> None:
    names = [queue.name for queue in queues]
    if default and names and default not in names:
        raise ConfigError(f"{origin}: default_queue {default!r} is not one of the queues: "
                          f"{', '.join(names)}")


def _validate_template(table: Any, origin: str) -> None:
    """[template]: preamble = shell lines run before the agent; env = NAME = "value"."""
    template = expect_type(table, dict, origin, "template")
    check_keys(template, _TEMPLATE_KEYS, origin, "template")
    _check_strings(template.get("preamble", []), origin, "template.preamble")
    env = expect_type(template.get("env", {}), dict, origin, "template.env")
    for key, value in env.items():
        if not _ENV_RE.match(key):
            raise ConfigError(f"{origin}: [template.env] {key!r} is not an environment "
                              "variable name")
        expect_type(value, str, origin, f"template.env.{key}")


def _validate_extras(scheduler: str, data: dict[str, Any], origin: str) -> None:
    """Only the table named like the scheduler may hold extra directives."""
    for other in SCHEDULERS:
        if other != scheduler and other in data:
            raise ConfigError(f"{origin}: a [{other}] table on a {scheduler} site; extra "
                              f"directives go in [{scheduler}]")
    # Refuses directives megarun sets itself and values unsafe on a directive line.
    check_extras(scheduler, expect_type(data.get(scheduler, {}), dict, origin, scheduler), origin)


def _validate_pilot(scheduler: str, data: dict[str, Any], origin: str) -> dict[str, Any]:
    """[pilot]: whole nodes (`exclusive = true`, the default) or, with `exclusive = false`, a
    node shape of `cpus_per_node` (required) and `gpus_per_node`; the scheduler must be able to
    ask for it together with the site's extra directives."""
    table = expect_type(data.get("pilot", {}), dict, origin, "pilot")
    check_keys(table, _PILOT_KEYS, origin, "pilot")
    pilot = {**PILOT_DEFAULTS, **table}
    exclusive = expect_type(pilot["exclusive"], bool, origin, "pilot.exclusive")
    for key in ("cpus_per_node", "gpus_per_node"):
        if expect_type(pilot[key], int, origin, f"pilot.{key}") < 0:
            raise ConfigError(f"{origin}: key 'pilot.{key}' must not be negative")
    shape = [key for key in ("cpus_per_node", "gpus_per_node") if pilot[key]]
    if exclusive and shape:
        raise ConfigError(f"{origin}: pilot.{shape[0]} is a node shape, used only with "
                          "pilot.exclusive = false (whole nodes are the default)")
    if not exclusive and not pilot["cpus_per_node"]:
        raise ConfigError(f"{origin}: pilot.exclusive = false needs pilot.cpus_per_node (the "
                          "CPUs each batch job asks for on each node)")
    extras = data.get(scheduler, {})
    check_pilot(scheduler, pilot_allocation({**data, "pilot": pilot}), extras, origin)
    return pilot


def pilot_allocation(settings: dict[str, Any]) -> Allocation:
    """The allocation a site's batch jobs ask for (a site saved before [pilot] existed: whole
    nodes). Whole nodes carry the node's GPUs (node.gpus): Slurm gives GPUs only on request."""
    pilot = {**PILOT_DEFAULTS, **(settings.get("pilot") or {})}
    if pilot["exclusive"]:
        return Allocation(True, 0, int((settings.get("node") or {}).get("gpus") or 0))
    return Allocation(False, int(pilot["cpus_per_node"]), int(pilot["gpus_per_node"]))


def validate_capabilities(table: Any, origin: str) -> dict[str, Any]:
    """A site's [capabilities]: tag = string, number or true/false (matched against apps'
    requirements; quote versions, `python = "3.10"`, or TOML reads 3.10 as 3.1)."""
    expect_type(table, dict, origin, "capabilities")
    for key, value in table.items():
        check_tag(key, origin, "capabilities")
        check_scalar(value, origin, f"capabilities.{key}")
    return dict(table)


def apply_overrides(settings: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `--set key=value` (dotted keys reach into tables). Numbers and booleans are
    parsed, except where the setting is a string already (`account=12345` stays a string)."""
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
        current = table.get(parts[-1])
        value = raw if isinstance(current, str) else parse_scalar(raw)
        problem = value_problem(value) or text_problem(key)
        if problem:  # "nan", "1e400", a NUL or bytes that are not UTF-8
            raise ConfigError(f"--set {printable(key.strip())}: the value {problem}")
        table[parts[-1]] = value
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

"""A site's settings as one typed, frozen object, built once from the validated table.

The database keeps a site's settings as the JSON table `site add` saved (a preset with its
`--set` overrides, the SSH options and the detected capabilities). Every reader used to dig
into that table with `settings.get("...")` and its own default; the spec reads it once, after
config.presets has checked it by the same rules as `site add`, so a key is spelled and
defaulted in one place and a stored table that no longer validates fails once, in one line.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from megarun.config.elastic import ElasticSpec, read_elastic
from megarun.config.presets import pilot_allocation, validate_preset
from megarun.config.queues import Queue, pick_queue, queue_limits
from megarun.errors import ConfigError
from megarun.schedulers.base import Allocation

#: What `python` means on a site that names no interpreter of its own.
DEFAULT_PYTHON = "python3"


@dataclass(frozen=True)
class NodeShape:
    """The [node] table: what one node offers the agent (0: the agent finds out itself)."""

    cpus: int = 0
    gpus: int = 0
    max_jobs: int = 0


@dataclass(frozen=True)
class SshSettings:
    """The [ssh] table: how to reach an SSH site beyond its host (None: ~/.ssh/config)."""

    identity: str | None = None
    jump: str | None = None
    known_hosts: str | None = None


@dataclass(frozen=True)
class ScriptTemplate:
    """The [template] table: shell lines and variables a batch script sets before the agent."""

    preamble: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SiteSpec:
    """Everything megarun reads from a site's settings, typed and defaulted."""

    scheduler: str
    mpi_launcher: str
    mpi_args: tuple[str, ...]
    mode: str
    node: NodeShape
    pilot: Allocation  # what each batch job asks for on each node
    queues: Mapping[str, Queue]
    default_queue: str
    queue_kind: str
    account: str
    account_required: bool
    python: str | None  # None: no interpreter named (python3 there, this one on this host)
    ssh: SshSettings
    template: ScriptTemplate
    extras: Mapping[str, Any]  # the table named like the scheduler: extra directives
    capabilities: Mapping[str, Any]
    detected: Mapping[str, str]
    elastic: ElasticSpec  # pilots submitted and released by the backlog (engine/elastic.py)
    stored: Mapping[str, Any]  # the table as the database keeps it, for `site show`

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], origin: str) -> SiteSpec:
        """Validate a site's settings (ConfigError naming `origin` and the key) and read them."""
        checked = validate_preset("", dict(settings), origin).settings
        node = checked["node"]
        ssh = checked.get("ssh", {})
        template = checked.get("template", {})
        return cls(
            scheduler=checked["scheduler"],
            mpi_launcher=checked.get("mpi_launcher", "none"),
            mpi_args=tuple(checked.get("mpi_args", ())),
            mode=checked.get("mode", "pilot"),
            node=NodeShape(node["cpus"], node["gpus"], node["max_jobs"]),
            pilot=pilot_allocation(checked),
            queues={name: queue_limits(name, table)
                    for name, table in checked.get("queues", {}).items()},
            default_queue=checked.get("default_queue", ""),
            queue_kind=checked.get("queue_kind", "partition"),
            account=checked.get("account", ""),
            account_required=checked.get("account_required", False),
            python=checked.get("python"),
            ssh=SshSettings(ssh.get("identity"), ssh.get("jump"), ssh.get("known_hosts")),
            template=ScriptTemplate(tuple(template.get("preamble", ())),
                                    dict(template.get("env", {}))),
            extras=dict(checked.get(checked["scheduler"], {})),
            capabilities=dict(checked.get("capabilities", {})),
            detected={str(k): str(v) for k, v in (checked.get("detected") or {}).items()},
            elastic=read_elastic(checked.get("elastic", {}), origin),
            stored=dict(settings))

    @classmethod
    def from_stored(cls, site_name: str, text: str) -> SiteSpec:
        """The spec of a site saved in the database; its settings are checked again, since a
        newer megarun may refuse what an older one saved."""
        return _stored_spec(site_name, text)

    @property
    def interpreter(self) -> str:
        """The command that runs Python (the agent) on the site."""
        return self.python or DEFAULT_PYTHON

    def queue_for(self, nodes: int | None, walltime: float | None) -> str:
        """The queue a request without one goes to: the default queue when it takes the
        request, else the first of the site's queues that does (Aurora's `prod` takes 256
        nodes at least: a 1-node pilot goes to `debug` or `capacity`)."""
        return pick_queue(tuple(self.queues.values()), self.default_queue, nodes, walltime)

    def fit_queue(self, queue: str | None, may_choose: bool, nodes: int,
                  minutes: float) -> tuple[str | None, str | None]:
        """The queue a job of `nodes` nodes and `minutes` goes to, given `queue`, and why that
        queue would refuse it (None: it takes it). With `may_choose` (megarun chose `queue`,
        not the user), a job another queue takes goes there instead (not on QOS sites)."""
        if queue is None or queue not in self.queues:
            return queue, None
        problem = self.queues[queue].problem(nodes, minutes)
        if problem is None:
            return queue, None
        if may_choose and not self.queues_are_qos:
            other = self.queue_for(nodes, minutes)
            if other in self.queues and self.queues[other].problem(nodes, minutes) is None:
                return other, None
        return queue, problem

    @property
    def queues_are_qos(self) -> bool:
        """On this Slurm site a queue name is a QOS (-q), not a partition (-p)."""
        return self.queue_kind == "qos"

    def capability_table(self) -> dict[str, Any]:
        """What matching knows of the site: detected facts (os, arch, python), then its own
        [capabilities], which win over a detected one of the same name."""
        return {**self.detected, **self.capabilities}


@functools.lru_cache(maxsize=256)
def _stored_spec(site_name: str, text: str) -> SiteSpec:
    # Cached by the stored text: the launch cycle reads every site's settings on each round,
    # and a spec is frozen, so one built from the same text can be handed out again.
    origin = f"site {site_name!r} settings"
    try:
        settings = json.loads(text or "{}")
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        raise ConfigError(f"{origin} in the database are not a JSON table",
                          _STORED_HINT.format(name=site_name))
    try:
        return SiteSpec.from_settings(settings, origin)
    except ConfigError as exc:
        raise ConfigError(exc.message, _STORED_HINT.format(name=site_name)) from exc


_STORED_HINT = ("saved by an earlier megarun? remove the site (megarun site rm {name}) and add it "
                "again")

"""The typed site spec: every shipped preset builds one, `--set` overrides win over the
preset, and a bad value (given now or stored by an earlier megarun) names the key."""

from __future__ import annotations

import json

import pytest

from megarun.config.presets import apply_overrides, load_preset, preset_names
from megarun.errors import ConfigError
from megarun.schedulers.base import Allocation
from megarun.sites.spec import NodeShape, SiteSpec, SshSettings


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_builds_a_spec(name: str) -> None:
    preset = load_preset(name)
    spec = SiteSpec.from_settings(preset.settings, f"{name}.toml")
    assert spec.scheduler == preset.scheduler
    assert tuple(spec.queues.values()) == preset.queues
    assert spec.default_queue == preset.default_queue
    assert spec.account_required == preset.account_required
    assert spec.stored == preset.settings


def test_polaris_is_read_into_typed_fields() -> None:
    spec = SiteSpec.from_settings(load_preset("polaris").settings, "polaris.toml")
    assert spec.node == NodeShape(cpus=32, gpus=4, max_jobs=0)
    assert spec.pilot == Allocation(True, 0, 4)  # whole nodes carry the node's GPUs
    assert spec.mpi_launcher == "mpiexec" and spec.mpi_args == ()
    assert spec.queues["prod"].min_nodes == 10 and spec.queues["prod"].max_walltime == 1440
    assert spec.extras == {"filesystems": "home:eagle", "place": "scatter"}
    assert spec.interpreter == "python3" and not spec.queues_are_qos
    assert spec.ssh == SshSettings()


def test_a_bare_table_gets_the_defaults() -> None:
    spec = SiteSpec.from_settings({}, "old site")
    assert (spec.scheduler, spec.mpi_launcher, spec.mode, spec.queue_kind) == \
        ("local", "none", "pilot", "partition")
    assert spec.node == NodeShape() and spec.pilot == Allocation()
    assert spec.python is None and spec.interpreter == "python3"
    assert spec.template.preamble == () and dict(spec.template.env) == {}


def test_overrides_win_over_the_preset() -> None:
    sets = ["node.cpus=8", "account=12345", "default_queue=debug", "pbs.filesystems=home",
            "python=/opt/py/bin/python3", "pilot.exclusive=false", "pilot.cpus_per_node=8",
            "template.env.OMP_PLACES=cores", "capabilities.os=rhel"]
    settings = apply_overrides(load_preset("polaris").settings, sets)
    settings["detected"] = {"os": "linux", "python": "3.6.8"}
    spec = SiteSpec.from_settings(settings, "site 'p' settings")
    assert spec.node.cpus == 8 and spec.node.gpus == 4
    assert spec.account == "12345" and spec.default_queue == "debug"
    assert spec.extras == {"filesystems": "home", "place": "scatter"}
    assert spec.interpreter == "/opt/py/bin/python3"
    assert spec.pilot == Allocation(False, 8, 0)
    assert spec.template.env == {"OMP_PLACES": "cores"}
    assert spec.capability_table() == {"os": "rhel", "python": "3.6.8"}  # own wins


def test_slurm_qos_queues_and_ssh_table() -> None:
    settings = apply_overrides(load_preset("generic-slurm").settings, ["queue_kind=qos"])
    settings["ssh"] = {"identity": "/k", "jump": "gw"}
    spec = SiteSpec.from_settings(settings, "s")
    assert spec.queues_are_qos
    assert spec.ssh == SshSettings(identity="/k", jump="gw", known_hosts=None)


@pytest.mark.parametrize(("sets", "key"), [
    (["node.cpus=many"], "node.cpus"),
    (["node.gpus=-1"], "node.gpus"),
    (["account_required=maybe"], "account_required"),
    (["nodes.cpus=4"], "nodes"),
    (["default_queue=nosuch"], "default_queue"),
    (["mpi_launcher=ibrun"], "mpi_launcher"),
])
def test_a_bad_value_names_the_key(sets: list[str], key: str) -> None:
    settings = apply_overrides(load_preset("polaris").settings, sets)
    with pytest.raises(ConfigError, match=key) as caught:
        SiteSpec.from_settings(settings, "site 'p' settings")
    assert str(caught.value).startswith("site 'p' settings")


def test_stored_settings_that_no_longer_validate_say_so_in_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        SiteSpec.from_stored("old", json.dumps({"node": {"cpus": "many"}}))
    text = str(caught.value)
    assert "site 'old' settings" in text and "node.cpus" in text and "\n" not in text
    assert "megarun site rm old" in text
    for broken in ("{not json", "[1, 2]"):
        with pytest.raises(ConfigError, match="not a JSON table"):
            SiteSpec.from_stored("old", broken)


def test_stored_settings_are_read_once() -> None:
    text = json.dumps(load_preset("generic-slurm").settings)
    assert SiteSpec.from_stored("a", text) is SiteSpec.from_stored("a", text)

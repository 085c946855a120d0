"""Site presets: every shipped preset loads, validates and renders a batch script; bad presets
are refused with the file and key named."""

from __future__ import annotations

from typing import Any

import pytest

from megarun.config.presets import (
    MPI_LAUNCHERS,
    SCHEDULERS,
    apply_overrides,
    load_preset,
    pilot_allocation,
    preset_names,
    validate_preset,
)
from megarun.errors import ConfigError
from megarun.schedulers import ScriptRequest, get_scheduler, render_script

SHIPPED = {"local", "generic-slurm", "generic-pbs", "generic-lsf", "generic-cobalt",
           "perlmutter-cpu", "perlmutter-gpu", "polaris", "aurora", "frontier", "summit", "theta"}


def test_every_required_preset_ships_and_local_comes_first() -> None:
    names = preset_names()
    assert SHIPPED <= set(names)
    assert names[0] == "local"
    assert names[1:] == sorted(names[1:])


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_preset_is_complete_and_consistent(name: str) -> None:
    preset = load_preset(name)
    settings = preset.settings
    assert preset.description
    assert preset.scheduler in SCHEDULERS
    assert settings.get("mpi_launcher", "none") in MPI_LAUNCHERS
    if preset.scheduler != "local":
        assert settings["mpi_launcher"] != "none", "a batch site needs an MPI launcher"
        assert settings["mode"] in ("pilot", "direct")
    names = [queue.name for queue in preset.queues]
    if names:
        assert preset.default_queue in names
    for queue in preset.queues:
        assert 1 <= queue.min_nodes <= queue.max_nodes
        assert queue.max_walltime >= 30
        assert queue.description
    if preset.account_required:
        assert preset.host, "a centre's preset names its login host"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_preset_renders_its_batch_script(name: str) -> None:
    """The preset's extras, environment and preamble reach the script its scheduler renders."""
    preset = load_preset(name)
    settings = preset.settings
    queue = preset.default_queue or None
    template = settings.get("template", {})
    request = ScriptRequest(
        job_name="megarun-1", nodes=preset.queues[0].min_nodes if preset.queues else 1,
        walltime_minutes=30, queue=queue, account="proj1" if preset.account_required else None,
        batch_dir="/work/batch", output="/work/batch/1.out", exit_file="/work/batch/1.exit",
        agent_argv=["python3", "/work/agent/megarun-agent.pyz", "run"],
        extras=dict(settings.get(preset.scheduler, {})), env=dict(template.get("env", {})),
        preamble=list(template.get("preamble", [])))
    script = render_script(preset.scheduler, request)
    lines = set(script.splitlines())
    assert script.startswith("#!")
    assert set(get_scheduler(preset.scheduler).directives(request)) <= lines
    for key in template.get("env", {}):
        assert key in script
    assert "megarun-agent.pyz" in script


def test_centre_presets_hold_the_documented_machines() -> None:
    shapes = {name: (load_preset(name).settings["node"]["cpus"],
                     load_preset(name).settings["node"]["gpus"]) for name in SHIPPED}
    assert shapes["perlmutter-gpu"] == (64, 4)
    assert shapes["perlmutter-cpu"] == (128, 0)
    assert shapes["polaris"] == (32, 4)
    assert shapes["aurora"] == (102, 6)
    assert shapes["frontier"] == (56, 8)
    assert shapes["summit"] == (42, 6)
    assert shapes["theta"] == (64, 0)
    launchers = {name: load_preset(name).settings.get("mpi_launcher") for name in SHIPPED}
    assert launchers["summit"] == "jsrun" and launchers["theta"] == "aprun"
    assert launchers["frontier"] == "srun" and launchers["polaris"] == "mpiexec"
    assert load_preset("perlmutter-gpu").settings["queue_kind"] == "qos"
    polaris = {queue.name: queue for queue in load_preset("polaris").queues}
    assert (polaris["debug"].max_nodes, polaris["debug"].max_walltime) == (2, 60)
    assert (polaris["prod"].min_nodes, polaris["prod"].max_nodes) == (10, 496)


def test_extras_render_as_directives() -> None:
    polaris = load_preset("polaris").settings
    pbs = get_scheduler("pbs")
    lines = pbs.extra_lines(polaris["pbs"])
    assert "#PBS -l filesystems=home:eagle" in lines
    # The preset's place joins the node request, with whole nodes (the default) added to it.
    assert "#PBS -l place=scatter:excl" in pbs.allocation_lines(
        2, pilot_allocation(polaris), polaris["pbs"])
    theta = get_scheduler("cobalt").extra_lines(load_preset("theta").settings["cobalt"])
    assert theta == ["#COBALT --attrs filesystems=home,grand"]  # no mode forced (issue 18)
    assert get_scheduler("slurm").extra_lines({"constraint": "gpu"}) == ["#SBATCH --constraint=gpu"]


GOOD: dict[str, Any] = {"description": "d", "scheduler": "slurm", "mpi_launcher": "srun",
                        "default_queue": "a",
                        "queues": {"a": {"max_nodes": 4, "max_walltime": 60}}}


@pytest.mark.parametrize(("change", "message"), [
    ({"mpi_launcher": "mpiexec.hydra"}, "unknown mpi_launcher 'mpiexec.hydra'"),
    ({"mode": "batch"}, "unknown mode 'batch'; valid: pilot, direct"),
    ({"scheduler": "sge"}, "unknown scheduler 'sge'"),
    ({"default_queue": "b"}, "default_queue 'b' is not one of the queues: a"),
    ({"queues": {"a": {"max_walltime": 60}}}, "[queues.a] needs max_nodes"),
    ({"queues": {"a": {"max_nodes": 0, "max_walltime": 60}}}, "'queues.a.max_nodes' must be at"),
    ({"queues": {"a": {"min_nodes": 5, "max_nodes": 4, "max_walltime": 60}}},
     "min_nodes 5 is more than max_nodes 4"),
    ({"queues": {"a": {"max_nodes": 4, "max_walltime": "an hour"}}}, "expected a duration"),
    ({"queues": {"a": {"max_nodes": 4, "max_walltime": "90s"}}}, "must be whole minutes"),
    ({"queues": {"a": {"max_nodes": 4, "max_walltime": 60, "nodes": 1}}}, "unknown key 'nodes'"),
    ({"queues": {"a b": {"max_nodes": 4, "max_walltime": 60}}}, "queue name 'a b'"),
    ({"pbs": {"place": "scatter"}}, "a [pbs] table on a slurm site"),
    ({"slurm": {"partition": "x"}}, "megarun sets this directive itself"),
    ({"slurm": {"qos": "a;b\n#SBATCH --x"}}, "cannot go on a batch directive line"),
    ({"template": {"env": {"BAD-NAME": "1"}}}, "not an environment variable name"),
    ({"template": {"env": {"OK": 1}}}, "'template.env.OK' must be a string"),
    ({"template": {"preamble": ["module load a\nrm -rf /"]}}, "may not hold a newline"),
    ({"template": {"modules": []}}, "[template] unknown key 'modules'"),
    ({"mpi_args": "--cpu-bind=cores"}, "'mpi_args' must be a list"),
    ({"account_required": "yes"}, "'account_required' must be true or false"),
    ({"queue_kind": "qos", "scheduler": "pbs", "mpi_launcher": "mpiexec"},
     "queue_kind 'qos' is for Slurm sites only"),
    ({"node": {"cpus": -1}}, "'node.cpus' must not be negative"),
    ({"pilot": {"cpus": 4}}, "[pilot] unknown key 'cpus'"),
    ({"pilot": "whole"}, "'pilot' must be a table"),
    ({"pilot": {"exclusive": "no"}}, "'pilot.exclusive' must be true or false"),
    ({"pilot": {"exclusive": False, "cpus_per_node": -2}},
     "'pilot.cpus_per_node' must not be negative"),
    ({"pilot": {"exclusive": False, "cpus_per_node": 2, "gpus_per_node": True}},
     "'pilot.gpus_per_node' must be a number"),
    ({"pilot": {"cpus_per_node": 4}},
     "pilot.cpus_per_node is a node shape, used only with pilot.exclusive = false"),
    ({"pilot": {"exclusive": False}}, "pilot.exclusive = false needs pilot.cpus_per_node"),
    ({"slurm": {"exclusive": True}}, "from the site's [pilot] table"),
    ({"scheduler": "cobalt", "mpi_launcher": "aprun",
      "pilot": {"exclusive": False, "cpus_per_node": 4}}, "Cobalt allocates whole nodes only"),
    ({"scheduler": "pbs", "mpi_launcher": "mpiexec", "pbs": {"select": "ncpus=64"},
      "pilot": {"exclusive": False, "cpus_per_node": 4}}, "pbs.select sets ncpus"),
    ({"scheduler": "pbs", "mpi_launcher": "mpiexec", "pbs": {"place": "scatter:shared"}},
     "pbs.place 'shared' contradicts the whole nodes"),
])
def test_bad_presets_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_preset("p", {**GOOD, **change}, "site-presets/p.toml")
    assert "site-presets/p.toml" in str(info.value)
    assert message in str(info.value)


def test_good_preset_passes_and_fills_the_node_shape() -> None:
    preset = validate_preset("p", {**GOOD, "slurm": {"qos": "debug", "requeue": True}}, "p")
    assert preset.settings["node"] == {"cpus": 0, "gpus": 0, "max_jobs": 0}
    assert preset.settings["pilot"] == {"exclusive": True, "cpus_per_node": 0, "gpus_per_node": 0}
    assert [queue.name for queue in preset.queues] == ["a"]


def test_max_walltime_takes_a_duration_and_keeps_minutes() -> None:
    preset = validate_preset("p", {**GOOD, "queues": {"a": {"max_nodes": 4,
                                                            "max_walltime": "1h30m"}}}, "p")
    assert preset.queues[0].max_walltime == 90
    assert preset.settings["queues"]["a"]["max_walltime"] == 90


@pytest.mark.parametrize(("assignment", "hint"), [
    ("acount=x", "unknown key 'acount' (did you mean 'account'?)"),
    ("node.cpu=8", "[node] unknown key 'cpu' (did you mean 'cpus'?)"),
])
def test_a_misspelt_setting_suggests_the_key(assignment: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_preset("p", apply_overrides(GOOD, [assignment]), "--set")
    assert hint in str(info.value)


def test_set_keeps_string_settings_strings() -> None:
    settings = apply_overrides({"account": "", "default_queue": "a", "node": {"cpus": 0}},
                               ["account=01234", "node.cpus=8", "default_queue=7"])
    assert settings["account"] == "01234"
    assert settings["default_queue"] == "7"
    assert settings["node"]["cpus"] == 8


def test_a_node_shape_is_kept_and_describes_itself() -> None:
    shaped = {**GOOD, "pilot": {"exclusive": False, "cpus_per_node": 4, "gpus_per_node": 1}}
    settings = validate_preset("p", shaped, "p").settings
    assert settings["pilot"] == {"exclusive": False, "cpus_per_node": 4, "gpus_per_node": 1}
    assert pilot_allocation(settings).describe() == "4 cpu(s) and 1 gpu(s) per node"
    # Whole nodes carry the node's GPUs: Slurm hands GRES out only on request.
    whole = validate_preset("p", {**GOOD, "node": {"gpus": 4}}, "p").settings
    assert pilot_allocation(whole).describe() == "whole nodes (exclusive) with 4 gpu(s)"
    assert pilot_allocation({}).exclusive  # a site saved before [pilot] existed

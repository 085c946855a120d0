"""Rendered batch scripts: directive lines (compared as sets with golden files), quoting, and
the shared partials actually run under /bin/sh."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megarun.errors import ConfigError
from megarun.resources import data_dir
from megarun.schedulers import (
    SCHEDULER_NAMES,
    Allocation,
    ScriptRequest,
    check_extras,
    check_pilot,
    get_scheduler,
    render_script,
)
from megarun.schedulers.base import ExtraValue

SCRIPTS = Path(__file__).parent / "golden" / "scripts"
PREFIX = {"slurm": "#SBATCH", "pbs": "#PBS", "lsf": "#BSUB", "cobalt": "#COBALT"}

BASE = ScriptRequest(
    job_name="megarun-12", nodes=2, walltime_minutes=90, queue="regular", account="m1234",
    batch_dir="/scratch/u/mr/batch", output="/scratch/u/mr/batch/12.out",
    exit_file="/scratch/u/mr/batch/12.exit",
    agent_argv=["python3", "/scratch/u/mr/agent/megarun-agent.pyz", "run", "--batch-job", "12"],
    extras={}, env={}, preamble=[],
)

#: A node shape of 8 cpus and 1 gpu per node (a site's pilot.exclusive = false).
SHAPE = Allocation(exclusive=False, cpus_per_node=8, gpus_per_node=1)

#: case -> (scheduler, extras, allocation). Without an allocation: whole nodes, the default.
CASES: dict[str, tuple[str, dict[str, ExtraValue], Allocation]] = {
    "slurm": ("slurm", {"qos": "debug", "constraint": "gpu&hbm80g", "requeue": False,
                        "C": "cpu gpu"}, Allocation(gpus_per_node=4)),
    "slurm_default": ("slurm", {}, Allocation()),
    "slurm_shape": ("slurm", {"qos": "debug"}, SHAPE),
    "pbs": ("pbs", {"select": "system=polaris", "filesystems": "home:eagle",
                    "place": "scatter", "k": "doe"}, Allocation()),
    "pbs_default": ("pbs", {}, Allocation()),
    "pbs_shape": ("pbs", {"select": "system=polaris", "place": "group=rack"}, SHAPE),
    "pbs_torque": ("pbs", {"nodes": "ppn=16"}, Allocation()),
    "pbs_torque_shape": ("pbs", {"nodes": True}, SHAPE),
    "lsf": ("lsf", {"R": "rusage[mem=4000] span[hosts=1]"}, Allocation()),
    "lsf_shape": ("lsf", {}, SHAPE),
    "lsf_nnodes": ("lsf", {"nnodes": True, "alloc_flags": "gpumps"}, Allocation()),
    # Cobalt allocates whole nodes only: `-n` counts nodes, and no directive is added.
    "cobalt": ("cobalt", {"attrs": "mcdram=cache:numa=quad"}, Allocation()),
}


def directive_lines(script: str, prefix: str) -> set[str]:
    return {line for line in script.splitlines() if line.startswith(prefix + " ")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_directives_match_golden(case: str) -> None:
    scheduler, extras, allocation = CASES[case]
    script = render_script(scheduler, dataclasses.replace(BASE, extras=extras,
                                                          allocation=allocation))
    expected = set((SCRIPTS / f"{case}.directives").read_text().splitlines())
    assert directive_lines(script, PREFIX[scheduler]) == expected
    assert script.startswith("#!/bin/sh\n")


def test_directives_come_before_any_command() -> None:
    # Schedulers stop reading directives at the first command line.
    for name in ("slurm", "pbs", "lsf", "cobalt"):
        lines = render_script(name, BASE).splitlines()
        last_directive = max(i for i, line in enumerate(lines) if line.startswith(PREFIX[name]))
        first_command = min(i for i, line in enumerate(lines[1:], 1)
                            if line and not line.startswith("#"))
        assert last_directive < first_command, name


def test_no_queue_no_account_lines() -> None:
    script = render_script("slurm", dataclasses.replace(BASE, queue=None, account=None))
    assert "--partition" not in script and "--account" not in script


def test_skip_listed_extras_are_refused() -> None:
    for scheduler, key in (("slurm", "time"), ("slurm", "job_name"), ("pbs", "walltime"),
                           ("pbs", "N"), ("lsf", "W"), ("lsf", "cwd"), ("cobalt", "t")):
        with pytest.raises(ConfigError, match="megarun sets this directive itself"):
            check_extras(scheduler, {key: "x"}, "site-presets/x.toml")
        with pytest.raises(ConfigError):
            render_script(scheduler, dataclasses.replace(BASE, extras={key: "1"}))


@pytest.mark.parametrize("value", ["a\nb", 'x"y', "x'y", "a\\b", "a#b", "`id`", " lead", ""])
def test_unsafe_extra_values_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"slurm\.qos"):
        check_extras("slurm", {"qos": value}, "site.toml")


def test_extras_table_checks() -> None:
    check_extras("slurm", {"qos": "debug", "constraint": "gpu", "ntasks": 4}, "p.toml")
    with pytest.raises(ConfigError, match=r"p\.toml"):
        check_extras("slurm", {"qos": 1.5}, "p.toml")
    with pytest.raises(ConfigError, match="directive name"):
        check_extras("slurm", {"--qos": "x"}, "p.toml")
    with pytest.raises(ConfigError, match="no directives"):
        check_extras("local", {"qos": "x"}, "p.toml")
    with pytest.raises(ConfigError, match="either"):
        render_script("pbs", dataclasses.replace(BASE, extras={"select": "a=1", "nodes": True}))


def test_unknown_scheduler_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match="slurm, pbs, lsf, cobalt"):
        get_scheduler("sge")
    assert set(SCHEDULER_NAMES) == {"local", "slurm", "pbs", "lsf", "cobalt"}


def test_paths_with_spaces_are_refused() -> None:
    req = dataclasses.replace(BASE, batch_dir="/scratch/my runs/batch")
    with pytest.raises(ConfigError, match="without spaces"):
        render_script("slurm", req)
    with pytest.raises(ConfigError, match="at least one node"):
        render_script("slurm", dataclasses.replace(BASE, nodes=0))
    with pytest.raises(ConfigError, match="at least one minute"):
        render_script("pbs", dataclasses.replace(BASE, walltime_minutes=0))
    with pytest.raises(ConfigError, match="shell variable name"):
        render_script("slurm", dataclasses.replace(BASE, env={"A B": "1"}))


def test_every_template_value_is_quoted() -> None:
    # Every {{ }} either applies `q`/`qargv` or prints text the renderer made Verbatim or an int.
    allowed_raw = {"line", "jobid_expr", "walltime_seconds", "nodes",
                   "walltime_minutes"}
    for path in data_dir("templates").glob("*.j2"):
        for expr in re.findall(r"{{(.*?)}}", path.read_text()):
            expr = expr.strip()
            assert re.search(r"\|\s*(q|qargv)$", expr) or expr in allowed_raw, (path.name, expr)


def test_values_are_shell_quoted(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    marker = tmp_path / "pwned"
    req = dataclasses.replace(
        BASE, batch_dir=str(batch), output=str(batch / "1.out"), exit_file=str(batch / "1.exit"),
        env={"EVIL": f"$(touch {marker})", "SPACED": "a b  c"},
        agent_argv=["/bin/echo", f"; touch {marker}"])
    script = render_script("local", req)
    path = batch / "1.sh"
    path.write_text(script)
    subprocess.run(["/bin/sh", str(path)], check=True, timeout=30)
    assert not marker.exists()
    assert (batch / "1.exit").read_text() == "0\n"
    assert f"; touch {marker} --walltime-end" in (batch / "1.out").read_text()


AGENT = """
import os, sys
print("cwd", os.getcwd())
print("env", os.environ["GREETING"], os.environ["MEGARUN_SCHEDULER"])
print("args", sys.argv[1:])
print("loaded", os.environ.get("FROM_PREAMBLE"))
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.parametrize("scheduler", ["slurm", "pbs", "lsf", "cobalt", "local"])
def test_rendered_script_runs_and_records_exit_code(tmp_path: Path, scheduler: str) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    req = dataclasses.replace(
        BASE, batch_dir=str(batch), output=str(batch / "7.out"), exit_file=str(batch / "7.exit"),
        walltime_minutes=2, agent_argv=[sys.executable, str(agent), "3"],
        env={"GREETING": "hello world"}, preamble=["export FROM_PREAMBLE=yes"])
    path = batch / "7.sh"
    path.write_text(render_script(scheduler, req))
    with open(batch / "7.out", "ab") as out:  # what the scheduler does with --output
        done = subprocess.run(["/bin/sh", str(path)], stdout=out, stderr=subprocess.STDOUT,
                              cwd=tmp_path, env={**os.environ, "PATH": os.environ["PATH"]},
                              timeout=60)
    assert done.returncode == 3
    assert (batch / "7.exit").read_text() == "3\n"
    assert not list(batch.glob("*.tmp.*"))
    output = (batch / "7.out").read_text()
    assert f"cwd {batch}" in output
    assert f"env hello world {scheduler}" in output
    assert "loaded yes" in output
    end = int(re.search(r"'--walltime-end', '(\d+)'", output).group(1))  # type: ignore[union-attr]
    assert abs(end - (time.time() + 120)) < 30


@pytest.mark.parametrize(("scheduler", "key"), [
    ("slurm", "exclusive"), ("slurm", "gpus_per_node"), ("slurm", "cpus-per-task"),
    ("slurm", "c"), ("slurm", "ntasks-per-node"), ("lsf", "gpu")])
def test_allocation_directives_come_from_the_pilot_table_only(scheduler: str, key: str) -> None:
    # Two sources for one directive would contradict each other on the directive lines.
    with pytest.raises(ConfigError, match=r"p\.toml: .*from the site's \[pilot\] table"):
        check_extras(scheduler, {key: True}, "p.toml")


@pytest.mark.parametrize(("scheduler", "extras", "allocation", "message"), [
    ("cobalt", {}, SHAPE, "Cobalt allocates whole nodes only"),
    ("local", {}, SHAPE, "no allocation to shape"),
    ("lsf", {"nnodes": True}, SHAPE, "lsf.nnodes allocates whole nodes"),
    ("pbs", {"place": "shared"}, Allocation(), "pbs.place 'shared' contradicts"),
    ("pbs", {"place": "pack"}, SHAPE, "one chunk per node"),
    ("pbs", {"select": "ncpus=4:mem=8gb"}, SHAPE, "pbs.select sets ncpus"),
    ("pbs", {"nodes": "ppn=4"}, SHAPE, "pbs.nodes sets ppn"),
])
def test_allocations_a_scheduler_cannot_ask_for_are_refused(
        scheduler: str, extras: dict[str, ExtraValue], allocation: Allocation,
        message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_pilot(scheduler, allocation, extras, "site 'x' settings")
    with pytest.raises(ConfigError, match=message):
        render_script(scheduler, dataclasses.replace(BASE, extras=extras, allocation=allocation))


def test_pbs_place_keeps_the_sites_words_and_adds_only_what_is_missing() -> None:
    def place(extras: dict[str, ExtraValue], allocation: Allocation) -> str:
        script = render_script("pbs", dataclasses.replace(BASE, extras=extras,
                                                          allocation=allocation))
        [line] = [line for line in script.splitlines() if line.startswith("#PBS -l place=")]
        return line.removeprefix("#PBS -l place=")

    assert place({"place": "scatter:exclhost"}, Allocation()) == "scatter:exclhost"
    assert place({"place": "vscatter:excl"}, Allocation()) == "vscatter:excl"
    assert place({"place": "pack:group=rack"}, Allocation()) == "pack:group=rack:excl"
    assert place({"place": "vscatter:shared"}, SHAPE) == "vscatter:shared"
    assert place({}, SHAPE) == "scatter"

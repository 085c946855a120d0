"""A site's [pilot] table through the CLI: whole nodes by default, a node shape on request,
shown by `site show`; a shape the scheduler cannot ask for, or one contradicted by a directive,
is one line and exit 2 at `site add` and at `queue submit --set`, and nothing is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

SHAPE = ["--set", "pilot.exclusive=false", "--set", "pilot.cpus_per_node=2"]


def test_whole_nodes_by_default_and_a_shape_on_request(cli: Any, area: Path) -> None:
    assert cli("site", "add", "whole", "--preset", "perlmutter-gpu").code == 0
    shown = cli("site", "show", "whole", "--json").json()
    assert shown["allocation"] == "whole nodes (exclusive) with 4 gpu(s)"
    assert shown["settings"]["pilot"] == {"exclusive": True, "cpus_per_node": 0,
                                          "gpus_per_node": 0}
    added = cli("site", "add", "shaped", "--preset", "generic-pbs", *SHAPE,
                "--set", "pilot.gpus_per_node=1")
    assert added.code == 0, added.err
    shown = cli("site", "show", "shaped", "--json").json()
    assert shown["allocation"] == "2 cpu(s) and 1 gpu(s) per node"
    table = cli("site", "show", "shaped").out.splitlines()
    assert any(line.split(None, 1) == ["allocation", "2 cpu(s) and 1 gpu(s) per node"]
               for line in table), table


@pytest.mark.parametrize(("preset", "sets", "message"), [
    ("generic-slurm", ["--set", "pilot.exclusive=false"], "needs pilot.cpus_per_node"),
    ("generic-slurm", ["--set", "pilot.cpus_per_node=4"], "used only with pilot.exclusive"),
    ("generic-slurm", ["--set", "pilot.exclusive=maybe"], "'pilot.exclusive' must be true"),
    ("generic-slurm", ["--set", "pilot.ncpus=4"], "[pilot] unknown key 'ncpus'"),
    ("generic-slurm", [*SHAPE, "--set", "slurm.cpus-per-task=4"], "from the site's [pilot]"),
    ("generic-cobalt", SHAPE, "Cobalt allocates whole nodes only"),
    ("generic-lsf", [*SHAPE, "--set", "lsf.nnodes=true"], "lsf.nnodes allocates whole nodes"),
    ("local", SHAPE, "no allocation to shape"),
    ("polaris", ["--set", "pbs.place=scatter:shared"], "contradicts the whole nodes"),
])
def test_bad_pilot_settings_are_one_line_and_exit_2(cli: Any, area: Path, preset: str,
                                                    sets: list[str], message: str) -> None:
    result = cli("site", "add", "x", "--preset", preset, *sets)
    assert result.code == 2, (result.out, result.err)
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert cli("site", "ls", "--json").json() == []


@pytest.mark.parametrize(("sets", "message"), [
    (["--set", "select=ncpus=8"], "pbs.select sets ncpus while the site's [pilot] table"),
    (["--set", "place=pack"], "a node shape needs one chunk per node"),
])
def test_submit_set_cannot_contradict_the_shape(cli: Any, area: Path, sets: list[str],
                                                message: str) -> None:
    assert cli("site", "add", "p", "--preset", "generic-pbs", *SHAPE).code == 0
    result = cli("queue", "submit", "--site", "p", "--nodes", "1", "--walltime", "5", *sets)
    assert result.code == 2 and message in result.err, (result.out, result.err)
    assert cli("queue", "ls", "--history", "--json").json() == []

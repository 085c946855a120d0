"""Golden batch scripts of every shipped preset and every one of its queues.

Each case renders the script a pilot of the queue's smallest allowed size and longest walltime
for that size gets from a site made from the preset (its extras, environment and preamble; on a
QOS site the queue goes on a --qos line), and compares its directive and setup lines with
golden/presets/<preset>__<queue>.txt. MEGARUN_UPDATE_GOLDEN=1 writes the files anew: read every
changed one by eye before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from megarun.config.presets import load_preset, preset_names, presets_dir
from megarun.schedulers import render_script
from megarun.schedulers.base import ScriptRequest
from megarun.sites.spec import SiteSpec

GOLDEN = Path(__file__).parent / "golden" / "presets"
PREFIX = {"slurm": "#SBATCH", "pbs": "#PBS", "lsf": "#BSUB", "cobalt": "#COBALT"}
SHIPPED = [name for name in preset_names() if (presets_dir() / f"{name}.toml").is_file()
           and load_preset(name).scheduler != "local"]
#: (preset, queue or "" for none, nodes, walltime minutes): a pilot with the queue left to
#: megarun; the first cases are Aurora's small jobs, which `prod` (256 nodes at least) refuses.
AUTO = [("aurora", "auto-1node-30min", 1, 30), ("aurora", "auto-1node-3h", 1, 180),
        ("aurora", "auto-300nodes-12h", 300, 720), ("polaris", "auto-1node-2h", 1, 120)]


def site_spec(name: str) -> SiteSpec:
    preset = load_preset(name)
    return SiteSpec.from_settings({**preset.settings, "account": "proj1"}, name)


def cases() -> list[tuple[str, str, int, float]]:
    found: list[tuple[str, str, int, float]] = []
    for name in SHIPPED:
        queues = load_preset(name).queues
        found += [(name, queue.name, queue.min_nodes, queue.max_walltime_for(queue.min_nodes))
                  for queue in queues]
        if not queues:
            found.append((name, "", 2, 60))
    return found + [(name, label, nodes, float(minutes)) for name, label, nodes, minutes in AUTO]


def render(spec: SiteSpec, queue: str | None, nodes: int, minutes: float) -> str:
    extras: dict[str, Any] = dict(spec.extras)
    if queue and spec.queues_are_qos:  # as engine/batch.py does for a QOS site
        extras["qos"], queue = queue, None
    request = ScriptRequest(
        job_name="megarun-7", nodes=nodes, walltime_minutes=int(minutes), queue=queue,
        account=spec.account or None, batch_dir="/work/mr/batch", output="/work/mr/batch/7.out",
        exit_file="/work/mr/batch/7.exit",
        agent_argv=["python3", "/work/mr/agent/megarun-agent.pyz", "run", "--batch-job", "7"],
        extras=extras, env=dict(spec.template.env), preamble=list(spec.template.preamble),
        allocation=spec.pilot)
    return render_script(spec.scheduler, request)


def golden_lines(script: str, scheduler: str, preamble: list[str]) -> list[str]:
    """The lines a preset changes: directives, exported variables, preamble lines."""
    return [line for line in script.splitlines()
            if line.startswith(PREFIX[scheduler] + " ") or line.startswith("export ")
            or line in preamble]


@pytest.mark.parametrize(("name", "label", "nodes", "minutes"), cases(),
                         ids=[f"{case[0]}__{case[1] or 'none'}" for case in cases()])
def test_preset_script_matches_golden(name: str, label: str, nodes: int, minutes: float) -> None:
    spec = site_spec(name)
    queue = label or None
    if label.startswith("auto-"):
        queue = spec.queue_for(nodes, minutes)  # what `queue submit` without --queue picks
    if queue and queue in spec.queues:
        assert spec.queues[queue].problem(nodes, minutes) is None, (name, queue)
    lines = golden_lines(render(spec, queue, nodes, minutes), spec.scheduler,
                         list(spec.template.preamble))
    path = GOLDEN / f"{name}__{label or 'none'}.txt"
    if os.environ.get("MEGARUN_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    assert lines == path.read_text().splitlines(), path.name


def test_every_golden_file_has_its_case() -> None:
    """A queue removed from a preset (Aurora's prod-large) takes its golden file with it."""
    names = {f"{name}__{label or 'none'}.txt" for name, label, _nodes, _minutes in cases()}
    assert {path.name for path in GOLDEN.glob("*.txt")} == names


def test_a_small_aurora_job_never_asks_for_prod() -> None:
    spec = site_spec("aurora")
    assert spec.queue_for(1, 30) == "debug"
    assert spec.queue_for(1, 180) == "capacity"
    assert spec.queue_for(16, 168 * 60) == "capacity"
    assert spec.queue_for(300, 720) == "prod"
    for nodes, minutes in ((1, 30), (1, 180), (2, 60), (16, 600)):
        script = render(spec, spec.queue_for(nodes, minutes), nodes, minutes)
        assert "#PBS -q prod" not in script and "#PBS -q " in script

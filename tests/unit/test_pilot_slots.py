"""The agent options a batch script passes for the site's allocation: whole nodes let the
agent count the node (capped by the site's node shape); a node shape passes its own counts."""

from __future__ import annotations

from megarun.engine.pilot_argv import slot_options
from megarun.schedulers import Allocation


def test_whole_nodes_count_the_node_capped_by_the_sites_shape() -> None:
    assert slot_options(Allocation(), 0, 0) == ["--whole-nodes"]
    assert slot_options(Allocation(gpus_per_node=4), 64, 4) == [
        "--whole-nodes", "--cpus", "64", "--gpus", "0,1,2,3"]


def test_a_node_shape_passes_what_the_batch_job_asked_for() -> None:
    assert slot_options(Allocation(False, 1, 0), 0, 0) == ["--cpus", "1"]
    assert slot_options(Allocation(False, 8, 2), 64, 4) == ["--cpus", "8", "--gpus", "0,1"]
    # The site's node shape is smaller than the batch job's: the smaller wins.
    assert slot_options(Allocation(False, 8, 2), 4, 1) == ["--cpus", "4", "--gpus", "0"]

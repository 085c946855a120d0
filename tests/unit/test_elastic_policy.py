"""The elastic policy (megarun.engine.elastic) and its settings (megarun.config.elastic): each
rule on its own, so that a rule taken out fails its test."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from megarun.config.elastic import ElasticSpec, read_elastic
from megarun.engine.elastic import (
    START_MARGIN,
    Backlog,
    Pilot,
    QueueLimits,
    decide,
    job_fit,
)
from megarun.engine.elastic_run import queue_limits
from megarun.errors import ConfigError
from megarun.schedulers.base import BatchState
from megarun.sites.registry import SiteInfo
from megarun.sites.spec import SiteSpec

NOW = 1_000_000.0
OPEN = QueueLimits("batch", "proj", 1, 100, 24 * 60.0)


def spec(**given: object) -> ElasticSpec:
    return read_elastic({"max_batch_jobs": 4, **given}, "test")


def jobs(count: int, walltime: float = 0.0, nodes: int = 1) -> Backlog:
    single = count if nodes == 1 else 0
    multi = 0 if nodes == 1 else count * nodes
    return Backlog(count, single, multi, nodes if count else 0, walltime,
                   count * walltime * nodes)


def pilot(batch_id: int, state: BatchState = BatchState.QUEUED, nodes: int = 1,
          walltime: float = 60.0, started: float | None = None,
          elastic: bool = True) -> Pilot:
    return Pilot(batch_id, state, nodes, walltime, started, elastic)


# -- settings ---------------------------------------------------------------------------------
def test_settings_read_ranges_and_durations() -> None:
    read = read_elastic({"max_batch_jobs": 4, "nodes": "2..8", "walltime": "30m..2h",
                         "idle_exit": "5m", "submit_every": 30, "max_queued": 2}, "test")
    assert (read.nodes_min, read.nodes_max) == (2, 8)
    assert (read.walltime_min, read.walltime_max) == (30, 120)
    assert read.idle_exit == 300 and read.submit_every == 30 and read.queued_limit == 2
    fixed = read_elastic({"nodes": 3, "walltime": 45}, "test")
    assert (fixed.nodes_min, fixed.nodes_max, fixed.walltime_min, fixed.walltime_max) == \
        (3, 3, 45, 45)
    assert not fixed.enabled


@pytest.mark.parametrize(("table", "words"), [
    ({"nodes": "8..2"}, "MIN is more than MAX"),
    ({"nodes": "0"}, "node count"),
    ({"nodes": 1.5}, "node count"),
    ({"walltime": "2h..1h"}, "MIN is more than MAX"),
    ({"walltime": "banana"}, "elastic.walltime"),
    ({"walltime": "30s"}, "at least 1 minute"),
    ({"max_batch_jobs": -1}, "elastic.max_batch_jobs"),
    ({"max_batch_jobs": True}, "elastic.max_batch_jobs"),
    ({"min_batch_jobs": 3, "max_batch_jobs": 2}, "min_batch_jobs 3 is more"),
    ({"idle_exit": 0}, "idle_exit"),
    ({"colour": "red"}, "colour"),
    ({"max_batch_jobs": 10**12}, "elastic.max_batch_jobs"),
])
def test_bad_settings_are_one_line_errors(table: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_elastic(table, "site 'x' settings")
    assert words in caught.value.message and "\n" not in caught.value.message


# -- off --------------------------------------------------------------------------------------
def test_off_submits_nothing() -> None:
    decision = decide(read_elastic({}, "t"), OPEN, jobs(100), [], NOW, None)
    assert not decision.enabled and not decision.submit and "off" in decision.held


# -- sizing -----------------------------------------------------------------------------------
def test_missing_nodes_are_asked_for_within_the_node_range() -> None:
    decision = decide(spec(nodes="1..8"), OPEN, jobs(20), [], NOW, None)
    assert [r.nodes for r in decision.submit] == [8, 8, 4]
    assert decision.wanted_nodes == 20


def test_backlog_per_node_sizes_the_request() -> None:
    decision = decide(spec(nodes="1..8", backlog_per_node=10), OPEN, jobs(20), [], NOW, None)
    assert [r.nodes for r in decision.submit] == [2]


def test_node_cpus_are_the_default_backlog_per_node() -> None:
    decision = decide(spec(nodes="1..8"), OPEN, jobs(64), [], NOW, None, node_cpus=32)
    assert [r.nodes for r in decision.submit] == [2]


def test_a_pilot_is_at_least_nodes_min_and_as_wide_as_the_largest_job() -> None:
    assert [r.nodes for r in decide(spec(nodes="4..8"), OPEN, jobs(1), [], NOW,
                                    None).submit] == [4]
    wide = Backlog(1, 0, 6, 6, 0.0, 0.0)
    assert [r.nodes for r in decide(spec(nodes="1..8"), OPEN, wide, [], NOW,
                                    None).submit] == [6]


def test_open_pilots_count_against_the_backlog() -> None:
    running = pilot(1, BatchState.RUNNING, nodes=3, started=NOW - 60)
    decision = decide(spec(nodes="1..8"), OPEN, jobs(5), [running], NOW, None)
    assert [r.nodes for r in decision.submit] == [2] and decision.capacity_nodes == 3


def test_a_pilot_out_of_walltime_holds_no_capacity() -> None:
    spent = pilot(1, BatchState.RUNNING, nodes=3, walltime=10, started=NOW - 11 * 60)
    decision = decide(spec(nodes="1..8"), OPEN, jobs(3), [spent], NOW, None)
    assert decision.capacity_nodes == 0 and [r.nodes for r in decision.submit] == [3]


def test_nothing_waiting_nothing_submitted() -> None:
    assert not decide(spec(), OPEN, Backlog(), [], NOW, None).submit


# -- limits -----------------------------------------------------------------------------------
def test_never_more_than_max_batch_jobs_in_any_state() -> None:
    pilots = [pilot(1, BatchState.RUNNING, started=NOW), pilot(2), pilot(3)]
    decision = decide(spec(max_batch_jobs=4, max_queued=10, nodes="1..2"), OPEN, jobs(100),
                      pilots, NOW, None)
    assert len(decision.submit) == 1 and "max_batch_jobs = 4" in decision.held


def test_max_queued_holds_further_pilots() -> None:
    decision = decide(spec(max_batch_jobs=10, max_queued=2), OPEN, jobs(100), [pilot(1)], NOW,
                      None)
    assert len(decision.submit) == 1 and "max_queued = 2" in decision.held


def test_queue_per_user_limits_hold() -> None:
    limits = QueueLimits("capacity", "", 1, 16, 168 * 60.0, max_queued_per_user=1,
                         max_jobs_per_user=5)
    decision = decide(spec(max_batch_jobs=10), limits, jobs(100), [], NOW, None)
    assert len(decision.submit) == 1 and "per user" in decision.held
    running = [pilot(i, BatchState.RUNNING, started=NOW) for i in range(5)]
    assert not decide(spec(max_batch_jobs=10), limits, jobs(100), running, NOW, None).submit


def test_queue_max_nodes_caps_the_pilot() -> None:
    limits = QueueLimits("debug", "", 1, 2, 60.0)
    decision = decide(spec(nodes="1..8"), limits, jobs(3), [], NOW, None)
    assert [r.nodes for r in decision.submit] == [2, 1]


def test_submit_every_spaces_submissions() -> None:
    settings = spec(submit_every="10m")
    held = decide(settings, OPEN, jobs(10), [], NOW, NOW - 60)
    assert not held.submit and "submit_every" in held.held
    due = decide(settings, OPEN, jobs(10), [], NOW, NOW - 601)
    assert len(due.submit) == 1  # one per interval, not four at once


def test_min_batch_jobs_are_kept_without_a_backlog() -> None:
    decision = decide(spec(min_batch_jobs=2, nodes="2..8", walltime="20m..1h"), OPEN,
                      Backlog(), [pilot(1)], NOW, None)
    assert [(r.nodes, r.walltime) for r in decision.submit] == [(2, 20)]
    assert "min_batch_jobs" in decision.submit[0].reason


def test_a_pilot_that_can_never_run_holds_further_submissions() -> None:
    stuck = Pilot(1, BatchState.QUEUED, 4, 60.0, None, True, never_runs=True)
    decision = decide(spec(nodes="1..8"), OPEN, jobs(100), [stuck], NOW, None)
    assert not decision.submit and "batch job 1 can never run" in decision.held
    assert decision.capacity_nodes == 0


# -- walltime ---------------------------------------------------------------------------------
def test_walltime_covers_the_longest_job_within_the_range() -> None:
    decision = decide(spec(walltime="10m..4h"), OPEN, jobs(1, walltime=50), [], NOW, None)
    assert decision.submit[0].walltime == 50 + START_MARGIN


def test_walltime_spreads_the_work_over_the_wanted_nodes() -> None:
    decision = decide(spec(walltime="10m..4h", nodes="1..2", backlog_per_node=10), OPEN,
                      jobs(20, walltime=30), [], NOW, None)
    # 600 minutes of single-node work over the 2 nodes wanted
    assert decision.submit[0].walltime == 240  # capped by the range's 4 h
    shorter = decide(spec(walltime="10m..8h", nodes="1..2", backlog_per_node=10), OPEN,
                     jobs(20, walltime=30), [], NOW, None)
    assert shorter.submit[0].walltime == 300


def test_walltime_without_job_walltimes_is_the_minimum() -> None:
    decision = decide(spec(walltime="15m..2h"), OPEN, jobs(5), [], NOW, None)
    assert decision.submit[0].walltime == 15


def test_walltime_within_the_queue_limit_and_its_node_bins() -> None:
    limits = QueueLimits("prod", "", 1, 100, 24 * 60.0,
                         walltime_of=lambda nodes: 60.0 if nodes < 10 else 600.0)
    small = decide(spec(walltime="10m..24h", nodes="1..4"), limits, jobs(1, walltime=500),
                   [], NOW, None)
    assert small.submit[0].nodes == 1 and small.submit[0].walltime == 60
    big = decide(spec(walltime="10m..24h", nodes="10..20"), limits, jobs(1, walltime=500),
                 [], NOW, None)
    assert big.submit[0].walltime == 500 + START_MARGIN


def test_jobs_that_never_fit_are_reported_not_submitted_for() -> None:
    backlog = Backlog(0, 0, 0, 0, 0.0, 0.0, too_many_nodes=3, too_long=2,
                      too_many_nodes_ids=(7, 8, 9), too_long_ids=(4, 5))
    decision = decide(spec(nodes="1..8", walltime="1h"), OPEN, backlog, [], NOW, None)
    assert not decision.submit
    reasons = {n.count: n for n in decision.never_fit}
    assert reasons[3].job_ids == (7, 8, 9) and "8 node(s)" in reasons[3].reason
    assert reasons[2].job_ids == (4, 5) and "58 min" in reasons[2].reason


def test_walltime_at_least_the_queue_minimum() -> None:
    limits = QueueLimits("prod", "", 1, 100, 24 * 60.0, min_walltime=30.0)
    decision = decide(spec(walltime="10m..2h"), limits, jobs(3), [], NOW, None)
    assert decision.submit[0].walltime == 30


def test_job_fit_follows_settings_and_queue() -> None:
    fit = job_fit(spec(nodes="1..8", walltime="2h"), QueueLimits("q", "", 1, 4, 60.0))
    assert fit.max_nodes == 4 and fit.max_job_walltime == 60 - START_MARGIN


# -- cancelling -------------------------------------------------------------------------------
def test_queued_pilots_no_longer_needed_are_cancelled_newest_first() -> None:
    pilots = [pilot(1, BatchState.RUNNING, nodes=2, started=NOW), pilot(2), pilot(3)]
    decision = decide(spec(), OPEN, jobs(2), pilots, NOW, None)
    assert [c.batch_id for c in decision.cancel] == [3, 2]


def test_a_hand_made_or_running_pilot_is_never_cancelled() -> None:
    pilots = [pilot(1, elastic=False), pilot(2, BatchState.RUNNING, started=NOW)]
    assert not decide(spec(), OPEN, Backlog(), pilots, NOW, None).cancel


def test_cancelling_keeps_min_batch_jobs() -> None:
    pilots = [pilot(1), pilot(2), pilot(3)]
    decision = decide(spec(min_batch_jobs=2), OPEN, Backlog(), pilots, NOW, None)
    assert [c.batch_id for c in decision.cancel] == [3]


def test_a_needed_queued_pilot_stays() -> None:
    decision = decide(spec(), OPEN, jobs(2), [pilot(1, nodes=2)], NOW, None)
    assert not decision.cancel and not decision.submit


# -- the queue's limits as the preset gives them ------------------------------------------------
@dataclass(frozen=True)
class BinnedQueue:
    """A queue as a preset with node-count bins and per-user limits describes it."""

    name: str = "prod"
    max_nodes: int = 100
    max_walltime: int = 720
    min_nodes: int = 1
    max_queued: int = 3
    min_walltime: int = 5

    def max_walltime_for(self, nodes: int) -> int:
        return 120 if nodes <= 10 else self.max_walltime


def test_the_elastic_step_reads_bins_and_per_user_limits_of_the_queue() -> None:
    spec = SiteSpec.from_settings({"scheduler": "pbs", "elastic": {"max_batch_jobs": 4}}, "t")
    spec = dataclasses.replace(spec, queues={"prod": BinnedQueue()}, default_queue="prod")
    site = SiteInfo("s", "generic-pbs", "pbs", None, "/tmp/s", spec)
    limits = queue_limits(site)
    assert (limits.walltime_for(4), limits.walltime_for(50)) == (120, 720)
    assert limits.max_jobs_per_user == 3 and limits.min_walltime == 5

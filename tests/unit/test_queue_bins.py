"""Queue limits as the schedulers enforce them: node-count walltime bins, minimum node counts,
the queue a request without --queue gets, and the dated sources of every shipped preset."""

from __future__ import annotations

from typing import Any

import pytest

from megarun.config.presets import load_preset, preset_names, presets_dir, validate_preset
from megarun.config.queues import Queue, WalltimeBin, describe_limits, pick_queue
from megarun.errors import ConfigError

SHIPPED = [name for name in preset_names() if (presets_dir() / f"{name}.toml").is_file()]
RETIRED = ("cooley", "cori-haswell", "cori-knl", "summit", "theta", "theta-gpu")


def queue(preset: str, name: str) -> Queue:
    return {item.name: item for item in load_preset(preset).queues}[name]


# (preset, queue, nodes, minutes): what the centre's scheduler refuses for a small job asking
# for the queue's longest walltime, or for too few nodes.
REFUSED = [
    ("frontier", "batch", 1, 180), ("frontier", "batch", 91, 121), ("frontier", "batch", 183, 361),
    ("summit", "batch", 1, 180), ("summit", "batch", 91, 400), ("summit", "batch", 921, 1440),
    ("theta", "default", 128, 240), ("theta", "default", 383, 400), ("theta", "default", 801, 1440),
    ("polaris", "prod", 10, 240), ("polaris", "prod", 99, 1440), ("polaris", "prod", 9, 60),
    ("aurora", "prod", 255, 60), ("aurora", "prod", 1, 60), ("aurora", "prod", 1024, 1080),
    ("aurora", "prod", 1999, 1440), ("aurora", "capacity", 17, 60),
    ("aurora", "debug-scaling", 257, 30), ("aurora", "debug", 1, 4), ("theta", "default", 128, 29),
]
ACCEPTED = [
    ("frontier", "batch", 1, 120), ("frontier", "batch", 92, 360), ("frontier", "batch", 184, 720),
    ("summit", "batch", 45, 120), ("summit", "batch", 46, 360), ("summit", "batch", 922, 1440),
    ("theta", "default", 256, 360), ("theta", "default", 802, 1440),
    ("polaris", "prod", 24, 180), ("polaris", "prod", 25, 360), ("polaris", "prod", 100, 1440),
    ("aurora", "prod", 256, 720), ("aurora", "prod", 1025, 1080), ("aurora", "prod", 2000, 1440),
    ("aurora", "prod", 10624, 1440), ("aurora", "capacity", 16, 10080),
    ("aurora", "debug-scaling", 256, 60), ("aurora", "debug", 1, 5), ("theta", "default", 128, 30),
]


@pytest.mark.parametrize(("preset", "name", "nodes", "minutes"), REFUSED)
def test_the_bins_refuse_what_the_scheduler_refuses(preset: str, name: str, nodes: int,
                                                    minutes: int) -> None:
    assert queue(preset, name).problem(nodes, minutes) is not None


@pytest.mark.parametrize(("preset", "name", "nodes", "minutes"), ACCEPTED)
def test_the_bins_accept_what_the_scheduler_accepts(preset: str, name: str, nodes: int,
                                                    minutes: int) -> None:
    assert queue(preset, name).problem(nodes, minutes) is None


def test_the_message_names_the_bin_and_its_limit() -> None:
    assert queue("frontier", "batch").problem(4, 300) == (
        "allows at most 120 minutes (2 h) for 1-91 nodes, asked for 300 minutes on 4 nodes")
    assert queue("aurora", "prod").problem(1500, 1200) == (
        "allows at most 1080 minutes (18 h) for 1025-1999 nodes, asked for 1200 minutes on "
        "1500 nodes")
    assert queue("aurora", "prod").problem(8, 60) == "takes at least 256 nodes, asked for 8"
    assert queue("aurora", "capacity").problem(1, 2) == "takes at least 5 minutes, asked for 2"
    assert queue("polaris", "debug").problem(1, 90) == "allows at most 60 minutes, asked for 90"


def test_max_walltime_for_reads_the_bin_of_a_node_count() -> None:
    """What the elastic policy reads to choose a pilot's walltime."""
    batch = queue("frontier", "batch")
    assert [batch.max_walltime_for(n) for n in (1, 91, 92, 183, 184, 9472)] == [
        120, 120, 360, 360, 720, 720]
    prod = queue("aurora", "prod")
    assert [prod.max_walltime_for(n) for n in (256, 1024, 1025, 1999, 2000)] == [
        720, 720, 1080, 1080, 1440]
    assert queue("aurora", "capacity").max_walltime_for(1) == 10080


def test_a_request_without_queue_gets_the_first_queue_that_takes_it() -> None:
    aurora = load_preset("aurora")
    assert pick_queue(aurora.queues, "prod", 1, 30) == "debug"
    assert pick_queue(aurora.queues, "prod", 1, 180) == "capacity"
    assert pick_queue(aurora.queues, "prod", 8, 30) == "debug-scaling"
    assert pick_queue(aurora.queues, "prod", 300, 600) == "prod"
    # Nothing takes 20 nodes for 2 h: the default stays, and its check says why.
    assert pick_queue(aurora.queues, "prod", 20, 120) == "prod"
    polaris = load_preset("polaris")
    assert pick_queue(polaris.queues, "prod", 1, 120) == "capacity"  # not preemptable
    assert pick_queue(polaris.queues, "prod", 10, 120) == "prod"
    assert pick_queue(polaris.queues, "prod", None, None) == "prod"
    # A preemptable queue is never chosen for the user: Summit's batch gives 1 node 2 h, and
    # killable would take 3 h only by preempting the job after 2.
    summit = load_preset("summit")
    assert pick_queue(summit.queues, "batch", 1, 180) == "batch"
    assert pick_queue(polaris.queues, "prod", 8, 120) == "prod"  # preemptable takes 10
    assert not queue("theta-gpu", "single-gpu").auto and queue("aurora", "capacity").auto


def test_aurora_matches_its_2026_queues() -> None:
    aurora = {item.name: item for item in load_preset("aurora").queues}
    assert set(aurora) == {"debug", "debug-scaling", "prod", "capacity"}  # prod-large is gone
    prod = aurora["prod"]
    assert (prod.min_nodes, prod.max_nodes, prod.max_walltime) == (256, 10624, 1440)
    assert prod.walltime_bins == (WalltimeBin(1024, 720), WalltimeBin(1999, 1080))
    assert (prod.project_max_running, prod.project_max_queued) == (10, 100)
    assert (aurora["debug-scaling"].min_nodes, aurora["debug-scaling"].max_nodes) == (2, 256)
    capacity = aurora["capacity"]
    assert (capacity.min_nodes, capacity.max_nodes, capacity.max_walltime) == (1, 16, 10080)
    assert (capacity.max_queued, capacity.max_running) == (5, 2)


def test_theta_perlmutter_corrections() -> None:
    attrs = load_preset("theta").settings["cobalt"]["attrs"]
    assert "mcdram" not in attrs and "numa" not in attrs  # debug-flat-quad is flat already
    assert "filesystems=home,grand" in attrs
    for name in ("perlmutter-cpu", "perlmutter-gpu"):
        preset = load_preset(name)
        assert not preset.account_required
        assert preset.queues and all(item.unverified for item in preset.queues)


@pytest.mark.parametrize("name", [name for name in SHIPPED if name != "local"])
def test_every_preset_says_when_and_against_what_it_was_checked(name: str) -> None:
    preset = load_preset(name)
    assert preset.checked >= "2026-08" and preset.source.startswith("https://")


def test_retired_machines_say_so_and_new_ones_are_there() -> None:
    for name in RETIRED:
        assert "retired" in load_preset(name).description, name
    shapes = {name: (load_preset(name).scheduler, load_preset(name).settings["node"]["cpus"],
                     load_preset(name).settings["node"]["gpus"])
              for name in ("crux", "bebop", "cooley", "cori-haswell", "cori-knl", "theta-gpu")}
    assert shapes == {"crux": ("pbs", 128, 0), "bebop": ("pbs", 36, 0),
                      "cooley": ("cobalt", 12, 2), "cori-haswell": ("slurm", 32, 0),
                      "cori-knl": ("slurm", 68, 0), "theta-gpu": ("cobalt", 128, 8)}


BASE: dict[str, Any] = {"scheduler": "slurm", "mpi_launcher": "srun"}


def limits(**extra: Any) -> dict[str, Any]:
    return {**BASE, "queues": {"q": {"max_nodes": 100, "max_walltime": "12h", **extra}}}


@pytest.mark.parametrize(("data", "message"), [
    (limits(walltime_bins=[{"max_nodes": 50, "max_walltime": "2h"},
                           {"max_nodes": 10, "max_walltime": "6h"}]), "must be from 51 to 99"),
    (limits(walltime_bins=[{"max_nodes": 100, "max_walltime": "2h"}]), "must be from 1 to 99"),
    (limits(walltime_bins=[{"max_nodes": 10, "max_walltime": "13h"}]), "longer than the queue"),
    (limits(walltime_bins=[{"max_nodes": 10}]), "needs max_walltime"),
    (limits(walltime_bins=[{"max_nodes": 10, "max_walltime": "2h", "x": 1}]), "x"),
    (limits(walltime_bins={"max_nodes": 10}), "walltime_bins"),
    (limits(walltime_bins=[{"max_nodes": 10, "max_walltime": "90s"}]), "whole minutes"),
    (limits(max_queued=-1), "must not be negative"),
    (limits(min_walltime="13h"), "min_walltime 780 is more than max_walltime 720"),
    (limits(min_walltime="soon"), "min_walltime"),
    (limits(max_running="2"), "max_running"),
    (limits(unverified="yes"), "unverified"),
    ({**BASE, "checked": "2026-13"}, "YYYY-MM"),
    ({**BASE, "checked": "Nov 2026"}, "YYYY-MM"),
    ({**BASE, "source": "ftp://example.org/x"}, "http(s) URL"),
    ({**BASE, "source": "https://a b"}, "http(s) URL"),
    ({**BASE, "source": "https://a\x00b"}, "source"),
    ({**BASE, "source": 3}, "source"),
])
def test_bad_limits_and_provenance_are_named(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"p\.toml") as raised:
        validate_preset("p", data, "p.toml")
    assert message in raised.value.message


def test_bins_are_stored_in_minutes() -> None:
    preset = validate_preset("p", limits(walltime_bins=[{"max_nodes": 10, "max_walltime": "2h"}],
                                         max_queued=5), "p.toml")
    assert preset.settings["queues"]["q"]["walltime_bins"] == [
        {"max_nodes": 10, "max_walltime": 120}]
    assert preset.queues[0].as_dict()["walltime_bins"] == [{"max_nodes": 10, "max_walltime": 120}]
    assert preset.queues[0].max_queued == 5


def test_the_wizard_says_where_the_longest_walltime_starts_and_what_is_unverified() -> None:
    assert describe_limits(queue("aurora", "prod")) == "256-10624 nodes, 24 h from 2000 nodes"
    assert describe_limits(queue("aurora", "capacity")) == "up to 16 nodes, 168 h"
    assert describe_limits(queue("perlmutter-gpu", "debug")) == "up to 8 nodes, 30 min (unverified)"

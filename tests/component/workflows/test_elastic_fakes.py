"""Elastic pilots through megarun's CLI on the fake PBS, LSF and Cobalt (tests/fakes): `sync`
alone submits the pilots the backlog wants and they leave when idle; the decisions follow the
node and walltime ranges and the queue's limits; queued pilots nobody needs are cancelled; and
concurrent syncs and `queue elastic` runs never exceed max_batch_jobs. `site set` and `queue
backlog` are here too, as they are how elastic is set up and watched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.component.workflows.test_batch_fakes import Area, make_area
from tests.conftest import megarun_process

pytestmark = pytest.mark.slow

SMALL_QUEUE = ["--set", "queues.small.max_nodes=4", "--set", "queues.small.max_walltime=60",
               "--set", "default_queue=small"]


def fake_jobs(tmp_path: Path) -> list[dict[str, Any]]:
    """The fake scheduler's queue: every job it was handed, in any state."""
    path = tmp_path / "queue.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    jobs = data.get("jobs", data) if isinstance(data, dict) else data
    return list(jobs.values()) if isinstance(jobs, dict) else list(jobs)


def open_batch_jobs(area: Area) -> list[dict[str, Any]]:
    rows = area.json("queue", "ls")
    assert isinstance(rows, list)
    return rows


@pytest.mark.parametrize("case", ["pbspro", "lsf", "cobalt"])
def test_sync_cycles_alone_run_the_backlog_and_idle_pilots_leave(tmp_path: Path,
                                                                 case: str) -> None:
    area = make_area(tmp_path, case)
    area.ok("site", "set", "hpc", "elastic.max_batch_jobs=2", "elastic.nodes=1",
            "elastic.walltime=5..30", "elastic.idle_exit=2", "elastic.backlog_per_node=4")
    area.ok("job", "create", "--app", "probe", "--site", "hpc", "--count", "12")
    most = 0
    for _ in range(300):
        reports = area.json("sync")
        assert isinstance(reports, list)
        [hpc] = [r for r in reports if r["site"] == "hpc"]
        assert hpc["elastic"] is not None and hpc["elastic"]["enabled"], hpc
        rows = open_batch_jobs(area)
        most = max(most, len(rows))
        assert all(row["elastic"] for row in rows), rows
        assert len(rows) <= 2, rows
        states = {job["state"] for job in area.json("job", "ls", "--limit", "0")}
        if states == {"COMPLETED"}:
            break
    else:
        pytest.fail(f"the jobs never all completed by sync alone: {states}")
    assert most >= 1
    for _ in range(300):  # with nothing left to do, the pilots leave (idle_exit 2 s)
        area.ok("sync")
        if not open_batch_jobs(area):
            break
    else:
        pytest.fail("the elastic pilots never left after going idle")
    history = area.json("queue", "ls", "--history")
    assert isinstance(history, list) and 1 <= len(history) <= 12
    assert all(row["elastic"] and row["state"] == "finished" for row in history), history
    assert len(fake_jobs(tmp_path)) == len(history)  # nothing submitted behind megarun's back


def test_decisions_follow_ranges_queue_limits_and_never_fit(tmp_path: Path) -> None:
    area = make_area(tmp_path, "pbspro")
    area.ok("site", "add", "small", "--preset", "generic-pbs", *SMALL_QUEUE,
            "--set", "elastic.max_batch_jobs=3", "--set", "elastic.max_queued=2",
            "--set", "elastic.nodes=2..4", "--set", "elastic.walltime=10m..2h")
    area.ok("job", "create", "--app", "probe", "--site", "small", "--count", "6",
            "--walltime", "30m")
    area.ok("job", "create", "--app", "probe", "--site", "small", "--nodes", "6")
    area.ok("job", "create", "--app", "probe", "--site", "small", "--walltime", "100m")
    dry = area.json("queue", "elastic", "--site", "small", "--dry-run")
    assert isinstance(dry, dict) and dry["dry_run"]
    # 6 single-node jobs: 6 nodes wanted; pilots of at most 4 nodes (the queue), at least 2
    assert [(p["nodes"], p["queue"]) for p in dry["submit"]] == [(4, "small"), (2, "small")]
    # the longest fitting job (30 min) + start margin, the work (180 node-min) over 6 nodes,
    # within 10m..2h and the queue's 60 min
    assert {p["walltime"] for p in dry["submit"]} == {32}
    never = {n["count"]: n for n in dry["never_fit"]}
    assert set(never) == {1} and len(dry["never_fit"]) == 2, dry["never_fit"]
    assert [n["job_ids"] for n in dry["never_fit"]] == [[7], [8]]
    assert dry["wanted_nodes"] == 6 and dry["held"] == ""
    assert area.json("queue", "ls") == []  # a dry run submits nothing
    assert fake_jobs(tmp_path) == []
    # Applied, the scheduler gets exactly those pilots: nodes, walltime and queue as decided.
    area.env["MEGARUN_FAKE_HOLD"] = str(tmp_path / "hold")
    (tmp_path / "hold").write_text("")
    done = area.json("queue", "elastic", "--site", "small")
    assert isinstance(done, dict) and len(done["submitted"]) == 2, done
    asked = sorted((job["nodes"], job["walltime"], job["queue"]) for job in fake_jobs(tmp_path))
    assert asked == [(2, "0:32:00", "small"), (4, "0:32:00", "small")], asked


def test_max_queued_and_cancelling_unneeded_queued_pilots(tmp_path: Path) -> None:
    area = make_area(tmp_path, "pbspro")
    area.env["MEGARUN_FAKE_HOLD"] = str(tmp_path / "hold")
    (tmp_path / "hold").write_text("")
    area.ok("site", "set", "hpc", "elastic.max_batch_jobs=4", "elastic.max_queued=2",
            "elastic.nodes=1")
    area.ok("job", "create", "--app", "probe", "--site", "hpc", "--count", "10")
    first = area.json("queue", "elastic", "--site", "hpc")
    assert isinstance(first, dict) and len(first["submitted"]) == 2, first
    assert "max_queued = 2" in first["held"]
    rows = open_batch_jobs(area)
    assert [row["state"] for row in rows] == ["queued", "queued"] and all(
        row["elastic"] for row in rows)
    again = area.json("queue", "elastic", "--site", "hpc")
    assert isinstance(again, dict) and again["submitted"] == [], again
    # The work goes away: the queued pilots are not needed any more, newest first.
    ids = [str(job["id"]) for job in area.json("job", "ls", "--limit", "0")]
    area.ok("job", "rm", *ids)
    gone = area.json("queue", "elastic", "--site", "hpc")
    assert isinstance(gone, dict)
    assert gone["cancelled"] == sorted((row["id"] for row in rows), reverse=True), gone
    assert open_batch_jobs(area) == []
    assert all("elastic policy" in row["message"]
               for row in area.json("queue", "ls", "--history"))
    # A hand-made pilot is never cancelled by the policy.
    [hand] = area.json("queue", "submit", "--site", "hpc", "--nodes", "1", "--walltime", "10")
    assert not hand["elastic"]
    assert area.json("queue", "elastic", "--site", "hpc")["cancelled"] == []


def test_concurrent_syncs_and_elastic_runs_never_exceed_max_batch_jobs(tmp_path: Path) -> None:
    area = make_area(tmp_path, "pbspro")
    area.env["MEGARUN_FAKE_HOLD"] = str(tmp_path / "hold")
    (tmp_path / "hold").write_text("")
    area.ok("site", "set", "hpc", "elastic.max_batch_jobs=3", "elastic.nodes=1")
    area.ok("job", "create", "--app", "probe", "--site", "hpc", "--count", "50")
    for round_ in range(2):
        commands = [["sync"], ["sync"], ["queue", "elastic", "--site", "hpc"],
                    ["queue", "elastic", "--site", "hpc"], ["queue", "elastic", "--site", "hpc"]]
        processes = [subprocess.Popen(
            [sys.executable, "-m", "megarun", "--area", str(area.root), *argv],
            env={**area.env, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for argv in commands]
        for process in processes:
            process.communicate(timeout=120)
        rows = open_batch_jobs(area)
        assert len(rows) <= 3, (round_, rows)
        assert len(fake_jobs(tmp_path)) <= 3
    assert len(open_batch_jobs(area)) == 3  # and they did submit


def test_launch_on_an_elastic_site_runs_without_a_hand_made_pilot(tmp_path: Path) -> None:
    area = make_area(tmp_path, "pbspro")
    area.ok("site", "set", "hpc", "elastic.max_batch_jobs=1", "elastic.walltime=10",
            "elastic.idle_exit=2")
    area.ok("job", "create", "--app", "probe", "--site", "hpc", "--count", "3")
    summary = area.json("launch", "--site", "hpc")
    assert summary["by_status"] == {"PASS": 3}, summary
    [pilot] = area.json("queue", "ls", "--history")
    assert pilot["elastic"]


def test_launch_stops_when_no_allowed_pilot_can_run_the_jobs(tmp_path: Path) -> None:
    area = make_area(tmp_path, "pbspro")
    area.ok("site", "set", "hpc", "elastic.max_batch_jobs=1", "elastic.walltime=10")
    area.ok("job", "create", "--app", "probe", "--site", "hpc", "--walltime", "1h")
    code, out, err = area.cli("launch", "--site", "hpc")
    assert code != 0 and "no pilot the elastic settings" in out + err, (out, err)
    assert area.json("queue", "ls", "--history") == []


def test_launch_stops_when_the_scheduler_refuses_the_elastic_pilot(tmp_path: Path) -> None:
    area = make_area(tmp_path, "pbspro")
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    qsub = wrappers / "qsub"
    qsub.write_text('#!/bin/sh\necho "qsub: Unauthorized Request" >&2\nexit 1\n')
    qsub.chmod(0o755)
    area.env["PATH"] = f"{wrappers}:{area.env['PATH']}"
    area.ok("site", "set", "hpc", "elastic.max_batch_jobs=2")
    area.ok("job", "create", "--app", "probe", "--site", "hpc")
    code, out, err = area.cli("launch", "--site", "hpc", timeout=60)
    assert code != 0 and "Unauthorized Request" in out + err, (out, err)
    history = area.json("queue", "ls", "--history")
    assert isinstance(history, list) and [row["state"] for row in history] == ["submit_failed"]


def test_a_pilot_that_can_never_run_stops_further_submissions(tmp_path: Path) -> None:
    area = make_area(tmp_path, "pbspro")
    area.env["MEGARUN_FAKE_MAX_NODES"] = "1"  # the machine has one node; elastic asks for 2
    area.ok("site", "set", "hpc", "elastic.max_batch_jobs=3", "elastic.nodes=2",
            "elastic.backlog_per_node=1")
    area.ok("job", "create", "--app", "probe", "--site", "hpc", "--count", "2")
    held = ""
    for _ in range(4):
        [row] = [r for r in area.json("sync") if r["site"] == "hpc"]
        held = row["elastic"]["held"]
    assert "can never run as asked" in held, held
    rows = open_batch_jobs(area)
    assert len(rows) == 1 and "can never run" in rows[0]["message"], rows  # not 3


# -- site set ---------------------------------------------------------------------------------
def test_site_set_validates_like_site_add_and_changes_nothing_on_error(tmp_path: Path) -> None:
    area = make_area(tmp_path, "pbspro")
    area.ok("site", "add", "small", "--preset", "generic-pbs", *SMALL_QUEUE)
    before = area.json("site", "show", "small")
    for bad, words in ((["elastic.max_batch_jobs=1", "elastic.nodes=1..8"],
                        "outside queue 'small'"),
                       (["elastic.max_batch_jobs=1", "elastic.walltime=2h"],
                        "more than queue 'small''s max_walltime"),
                       (["elastic.nodes=8..1"], "MIN is more than MAX"),
                       (["elastic.walltime=2h..1h"], "MIN is more than MAX"),
                       (["elastic.max_batch_jobs=2", "elastic.min_batch_jobs=3"], "min_batch_jobs"),
                       (["elastic.colour=red"], "colour"),
                       (["elastic.queue=nope"], "not one of the queues"),
                       (["node.cpus=-1"], "node.cpus"),
                       (["elastic.account=a\udcffb"], "UTF-8"),
                       (["noequals"], "key=value"),
                       (["host=elsewhere"], "not a setting")):
        code, _out, err = area.cli("site", "set", "small", *bad)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (bad, err)
        assert area.json("site", "show", "small") == before
    code, _out, err = area.cli("site", "set", "nosuch", "elastic.max_batch_jobs=1")
    assert code == 2 and "unknown site" in err
    code, _out, err = area.cli("site", "set", "local", "elastic.max_batch_jobs=1")
    assert code == 2 and "batch scheduler" in err  # `sync` feeds no pilots of a local site
    shown = area.json("site", "set", "small", "elastic.max_batch_jobs=2", "elastic.nodes=1..4",
                      "elastic.walltime=30m..1h", "account=01234")
    assert isinstance(shown, dict)
    assert shown["settings"]["elastic"] == {"max_batch_jobs": 2, "nodes": "1..4",
                                            "walltime": "30m..1h"}
    assert shown["settings"]["account"] == "01234"
    assert area.json("site", "show", "small")["settings"]["elastic"]["max_batch_jobs"] == 2


# -- queue backlog ----------------------------------------------------------------------------
def test_queue_backlog_counts_per_site_app_and_jobgroup(tmp_path: Path) -> None:
    area = make_area(tmp_path, "pbspro")
    area.ok("site", "set", "hpc", "elastic.max_batch_jobs=2", "elastic.nodes=1..3",
            "elastic.backlog_per_node=2")
    area.ok("job", "create", "--app", "probe", "--site", "hpc", "--count", "5",
            "--walltime", "30m")
    area.ok("job", "create", "--app", "nap", "--site", "hpc", "--nodes", "2",
            "--walltime", "1h")
    report = area.json("queue", "backlog")
    assert isinstance(report, dict) and report["schema_version"] == 1
    [hpc] = [s for s in report["sites"] if s["site"] == "hpc"]
    assert (hpc["ready"], hpc["waiting_on_dependencies"], hpc["queued"], hpc["running"]) == \
        (6, 0, 0, 0)
    assert hpc["node_hours"] == pytest.approx(5 * 0.5 + 2 * 1.0)
    assert hpc["wanted_nodes"] == 2 + 3  # 2 for the wide job, 5 single jobs at 2 per node
    assert hpc["elastic"] and hpc["pilots_queued"] == 0
    groups = {g["app"]: g for g in hpc["groups"]}
    assert groups["probe"]["ready"] == 5 and groups["nap"]["ready"] == 1
    only = area.json("queue", "backlog", "--site", "hpc", "--app", "nap")
    assert isinstance(only, dict)
    assert [(s["site"], s["ready"]) for s in only["sites"]] == [("hpc", 1)]
    code, _out, err = area.cli("queue", "backlog", "--app", "nosuch")
    assert code == 2 and "unknown app" in err


def test_queue_ls_says_which_pilots_elastic_made(tmp_path: Path) -> None:
    area = make_area(tmp_path, "pbspro")
    area.env["MEGARUN_FAKE_HOLD"] = str(tmp_path / "hold")
    (tmp_path / "hold").write_text("")
    area.ok("site", "set", "hpc", "elastic.max_batch_jobs=1")
    area.ok("job", "create", "--app", "probe", "--site", "hpc")
    area.ok("queue", "elastic", "--site", "hpc")
    table = megarun_process(area.root, "queue", "ls", env=area.env).stdout
    header, row = table.splitlines()[:2]
    assert "ELASTIC" in header.split() and "yes" in row.split(), table

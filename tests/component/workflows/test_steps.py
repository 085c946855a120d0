"""Per-step state, exit code and duration in `status --json` and `job show`, from real runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import megarun_process, spawn_megarun

RUN = ("--target", "linux/x86_64", "--runname", "r")


def write_test(area: Path, name: str, text: str) -> None:
    folder = area / "tests" / name
    folder.mkdir(parents=True)
    (folder / "test.toml").write_text(text)


def status_items(area: Path, started: bool = True) -> list[dict[str, Any]]:
    """The run's items from `status --json`; with started=False, [] while the run is not made."""
    result = megarun_process(area, "status", *RUN, "--json")
    if not started and result.returncode == 2 and "no run" in result.stderr:
        return []
    assert result.returncode in (0, 1, 75), result.stderr  # 75: the run has not ended
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items


def test_status_and_job_show_give_every_step_of_a_failed_item(area: Path) -> None:
    write_test(area, "multi",
               'steps = [{name = "build", cmd = "sleep 0.3"},\n'
               '         {name = "check", cmd = "sh -c \'echo broken >&2; exit 3\'"},\n'
               '         {name = "report", cmd = "echo never"}]\n')
    assert megarun_process(area, "run", *RUN, "--quiet").returncode == 1
    [item] = status_items(area)
    steps = item["steps"]
    assert [(s["name"], s["state"], s["status"], s["exit_code"]) for s in steps] == [
        ("build", "COMPLETED", "PASS", 0), ("check", "COMPLETED", "FAIL", 3),
        ("report", "NOT_STARTED", "n/a", None)]
    assert 0.3 <= steps[0]["duration"] < 30 and 0 <= steps[1]["duration"] < 30
    assert steps[2]["duration"] is None
    shown = megarun_process(area, "job", "show", str(item["id"]), "--json")
    assert [(s["name"], s["cmd"], s["state"]) for s in json.loads(shown.stdout)["steps"]] == [
        ("build", "sleep 0.3", "COMPLETED"),
        ("check", "sh -c 'echo broken >&2; exit 3'", "COMPLETED"),
        ("report", "echo never", "NOT_STARTED")]
    text = megarun_process(area, "job", "show", str(item["id"])).stdout
    lines = [line.split() for line in text.splitlines()]
    assert ["report", "NOT_STARTED", "n/a", "echo", "never"] in lines
    assert ["check", "COMPLETED", "FAIL", "3"] == next(w for w in lines if w[:1] == ["check"])[:4]


def test_a_running_item_shows_which_step_runs(area: Path, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    write_test(area, "slow",
               'steps = [{name = "first", cmd = "true"},\n'
               f'         {{name = "wait", cmd = "sh -c \'while [ ! -e {gate} ]; do sleep 0.05; '
               'done\'"},\n'
               '         {name = "last", cmd = "true"}]\n')
    runner = spawn_megarun(area, "run", *RUN, "--quiet")
    try:
        deadline = time.monotonic() + 60
        steps: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            items = status_items(area, started=False)
            steps = items[0]["steps"] if items else []
            if steps and steps[1]["state"] == "RUNNING":
                break
            time.sleep(0.2)
        assert [(s["name"], s["state"], s["status"]) for s in steps] == [
            ("first", "COMPLETED", "PASS"), ("wait", "RUNNING", "n/a"),
            ("last", "NOT_STARTED", "n/a")]
        assert steps[1]["duration"] is not None and steps[1]["exit_code"] is None
    finally:
        gate.touch()
        assert runner.wait(timeout=60) == 0
    assert [(s["state"], s["status"]) for s in status_items(area)[0]["steps"]] == [
        ("COMPLETED", "PASS")] * 3


def test_job_ls_shows_and_filters_suite_jobs_by_run_and_test(area: Path) -> None:
    write_test(area, "unit", 'steps = ["true"]\n[items]\nN = ["1", "2"]\n')
    write_test(area, "lint", 'steps = ["true"]\n')
    for runname in ("r", "s"):
        result = megarun_process(area, "run", "--target", "linux/x86_64", "--runname", runname,
                                 "--quiet")
        assert result.returncode == 0, result.stderr
    assert megarun_process(area, "app", "add", "hello", "--command", "true").returncode == 0
    assert megarun_process(area, "job", "create", "--app", "hello").returncode == 0
    listed = json.loads(megarun_process(area, "job", "ls", "--json").stdout)
    assert [(j["app"], j["run"], j["test"], j["item"]) for j in listed] == [
        ("", "linux/x86_64/r", "lint", ""), ("", "linux/x86_64/r", "unit", "1"),
        ("", "linux/x86_64/r", "unit", "2"), ("", "linux/x86_64/s", "lint", ""),
        ("", "linux/x86_64/s", "unit", "1"), ("", "linux/x86_64/s", "unit", "2"),
        ("hello", None, None, None)]
    chosen = json.loads(megarun_process(area, "job", "ls", "--run", "linux/x86_64/s", "--test",
                                        "unit", "--json").stdout)
    assert [(j["run"], j["test"], j["item"]) for j in chosen] == [
        ("linux/x86_64/s", "unit", "1"), ("linux/x86_64/s", "unit", "2")]
    assert len(json.loads(megarun_process(area, "job", "ls", "--test", "lint",
                                          "--json").stdout)) == 2
    assert [j["tags"] for j in chosen] == [{"N": "1"}, {"N": "2"}]  # an item's variables
    tagged = json.loads(megarun_process(area, "job", "ls", "-t", "N=2", "--json").stdout)
    assert [(j["run"], j["item"]) for j in tagged] == [("linux/x86_64/r", "2"),
                                                       ("linux/x86_64/s", "2")]
    table = megarun_process(area, "job", "ls", "--run", "linux/x86_64/r").stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "APP", "RUN", "ITEM"]
    assert [line.split()[1:4] for line in table[1:]] == [
        ["lint", "linux/x86_64/r", "local"], ["unit", "linux/x86_64/r", "1"],
        ["unit", "linux/x86_64/r", "2"]]
    assert table[2].split()[-1] == "N=1"  # TAGS, then an empty MESSAGE
    unknown = megarun_process(area, "job", "ls", "--run", "linux/x86_64/nosuch")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == ("megarun: error: --run 'linux/x86_64/nosuch': no such "
                                      "run; runs: linux/x86_64/r, linux/x86_64/s")

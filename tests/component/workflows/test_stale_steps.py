"""STALE on any definition change, `rerun --step`, attempts after a rerun, logs after a clean."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, megarun_process

NIGHTLY = ("--target", "linux/x86_64", "--runname", "nightly")


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    area = tmp_path / "suite"
    shutil.copytree(REPO / "examples" / "regression", area)
    return area


def run_ok(area: Path, *args: str) -> dict[str, Any]:
    result = megarun_process(area, *args, "--json", timeout=180)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def states(data: dict[str, Any]) -> dict[str, str]:
    return {f"{i['test']}/{i['item']}".rstrip("/"): i["state"] for i in data["items"]}


def runs_ls(area: Path) -> list[dict[str, Any]]:
    result = megarun_process(area, "runs", "ls", "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- item 5: STALE whenever what defined a result changed, shown by `status` at once ---------
def test_status_shows_a_test_toml_edit_as_stale_without_a_run(suite: Path) -> None:
    run_ok(suite, "run", *NIGHTLY)
    write(suite / "tests" / "lint" / "test.toml", 'steps = ["echo changed"]\n')
    data = run_ok(suite, "status", *NIGHTLY)
    shown = states(data)
    assert shown["lint"] == "STALE"
    assert {s for name, s in shown.items() if name != "lint"} == {"COMPLETED"}
    lint = next(i for i in data["items"] if i["test"] == "lint")
    assert "lint/test.toml changed" in lint["message"]
    assert [(r["runname"], r["stale"]) for r in runs_ls(suite)] == [("nightly", 1)]
    # shown, not written: the database still holds COMPLETED until `run` or `rerun` marks it
    again = run_ok(suite, "rerun", *NIGHTLY, "--stale")
    assert states(again)["lint"] == "COMPLETED"
    assert next(i for i in again["items"] if i["test"] == "lint")["status"] == "PASS"
    assert runs_ls(suite)[0]["stale"] == 0


def test_a_megarun_toml_variable_change_makes_the_results_that_saw_it_stale(suite: Path) -> None:
    # `unit` sets OPT_LEVEL itself: the megarun.toml value never reaches its steps
    unit = suite / "tests" / "unit" / "test.toml"
    unit.write_text(unit.read_text().replace('runtimelim = "1m"\n',
                                             'runtimelim = "1m"\nenv = { OPT_LEVEL = "0" }\n'))
    run_ok(suite, "run", *NIGHTLY)
    config = suite / "megarun.toml"
    text = config.read_text()
    config.write_text(text.replace('[targets."%/arm64"]\nOPT_LEVEL = "1"',
                                   '[targets."%/arm64"]\nOPT_LEVEL = "0"'))
    assert set(states(run_ok(suite, "status", *NIGHTLY)).values()) == {"COMPLETED"}  # not its target
    config.write_text(text.replace('[default]\nOPT_LEVEL = "2"', '[default]\nOPT_LEVEL = "3"'))
    data = run_ok(suite, "status", *NIGHTLY)
    shown = states(data)
    assert {n for n, s in shown.items() if s == "STALE"} == {n for n in shown
                                                            if not n.startswith("unit")}
    compile_item = next(i for i in data["items"] if i["test"] == "compile")
    assert "megarun.toml variable(s) OPT_LEVEL changed" in compile_item["message"]
    config.write_text(text.replace('[targets."linux/%"]\nCC = "cc"',
                                   '[targets."linux/%"]\nCC = "clang"'))
    assert set(states(run_ok(suite, "status", *NIGHTLY)).values()) == {"STALE"}  # all see CC
    config.write_text(text.replace('[default]\nOPT_LEVEL = "2"', '[default]\nOPT_LEVEL = "3"'))
    marked = megarun_process(suite, "run", *NIGHTLY, "--testpatt", "compile", "--quiet")
    assert "1 stale" in marked.stdout, marked.stdout  # `run` writes the mark
    rerun = run_ok(suite, "rerun", *NIGHTLY, "--stale")
    assert set(states(rerun).values()) == {"COMPLETED"}
    configure = suite / "runs" / "linux/x86_64" / "nightly" / "compile" / "configure.out"
    assert configure.read_text() == "configuring for linux/x86_64 with -O3\n"


def test_status_still_reads_a_run_while_a_test_toml_is_broken(suite: Path) -> None:
    run_ok(suite, "run", *NIGHTLY)
    write(suite / "tests" / "lint" / "test.toml", 'steps = ["true"]\nbogus = 1\n')
    result = megarun_process(suite, "status", *NIGHTLY, "--json")
    assert result.returncode == 0, result.stderr
    assert "cannot tell which results are STALE" in result.stderr and "bogus" in result.stderr
    assert set(states(json.loads(result.stdout)).values()) == {"COMPLETED"}


# -- item 9: rerun --step ----------------------------------------------------------------------
BUILD = """\
steps = [
  { name = "configure", cmd = "sh -c 'echo configure >> ../count; echo WARNING: old compiler'" },
  { name = "build", cmd = "sh -c 'echo build >> ../count; test -e ../fixed'" },
  { name = "check", cmd = "sh -c 'echo check >> ../count'" },
]
[rules]
[[rules.patterns]]
regex = "^WARNING"
status = "WARN"
step = "configure"
"""
ONE = ("--target", "linux", "--runname", "r")


@pytest.fixture
def steps_area(tmp_path: Path) -> Path:
    area = tmp_path / "steps"
    write(area / "megarun.toml", 'keys = ["os"]\ndefault_site = "local"\n'
          "[launcher]\nretries = 0\nidle_exit = 3\n")
    write(area / "tests" / "build" / "test.toml", BUILD)
    return area


def test_rerun_step_runs_from_that_step_on_keeping_the_earlier_outputs(steps_area: Path) -> None:
    first = megarun_process(steps_area, "run", *ONE, "--json", timeout=120)
    assert first.returncode == 1, first.stderr
    run_dir = steps_area / "runs" / "linux" / "r"
    count = run_dir / "count"
    assert count.read_text().split() == ["configure", "build"]
    configure = (run_dir / "build" / "configure.out").stat().st_mtime_ns
    (run_dir / "fixed").touch()
    again = run_ok(steps_area, "rerun", *ONE, "--step", "build")
    assert count.read_text().split() == ["configure", "build", "build", "check"]
    assert (run_dir / "build" / "configure.out").stat().st_mtime_ns == configure
    # the kept step's log still counts for the rules: its WARNING makes the test WARN
    assert [(i["state"], i["status"]) for i in again["items"]] == [("COMPLETED", "WARN")]
    steps = run_ok(steps_area, "status", *ONE)["items"][0]["steps"]
    assert [(s["name"], s["state"], s["exit_code"]) for s in steps] == [
        ("configure", "KEPT", None), ("build", "COMPLETED", 0), ("check", "COMPLETED", 0)]
    whole = run_ok(steps_area, "rerun", *ONE, "--status", "WARN")  # no --step: every step
    assert count.read_text().split()[4:] == ["configure", "build", "check"]
    assert [i["status"] for i in whole["items"]] == ["WARN"]
    steps = run_ok(steps_area, "status", *ONE)["items"][0]["steps"]
    assert [s["state"] for s in steps] == ["COMPLETED"] * 3


def test_the_retries_of_a_rerun_step_start_at_that_step_too(steps_area: Path) -> None:
    config = steps_area / "megarun.toml"
    config.write_text(config.read_text().replace("retries = 0", "retries = 1"))
    assert megarun_process(steps_area, "run", *ONE, timeout=120).returncode == 1
    count = steps_area / "runs" / "linux" / "r" / "count"
    assert count.read_text().split() == ["configure", "build"] * 2  # a retry runs every step
    rerun = megarun_process(steps_area, "rerun", *ONE, "--step", "build", timeout=120)
    assert rerun.returncode == 1, rerun.stderr  # still broken: the rerun and its retry fail
    assert count.read_text().split()[4:] == ["build", "build"]
    steps = json.loads(megarun_process(steps_area, "status", *ONE, "--json").stdout
                       )["items"][0]["steps"]  # exit code 1: the run failed
    assert [(s["name"], s["state"], s["status"], s["exit_code"]) for s in steps] == [
        ("configure", "KEPT", "n/a", None), ("build", "COMPLETED", "FAIL", 1),
        ("check", "NOT_STARTED", "n/a", None)]
    junit = megarun_process(steps_area, "runs", "export", *ONE, "--format", "junit").stdout
    assert 'name="failing_step" value="build"' in junit


def test_rerun_step_refuses_a_step_the_test_does_not_have(steps_area: Path) -> None:
    assert megarun_process(steps_area, "run", *ONE, timeout=120).returncode == 1
    wrong = megarun_process(steps_area, "rerun", *ONE, "--step", "nosuch")
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [
        "megarun: error: test 'build' has no step 'nosuch'; its steps: configure, build, check"]
    both = megarun_process(steps_area, "rerun", *ONE, "--step", "build", "--clean")
    assert both.returncode == 2 and "--clean" in both.stderr
    shown = megarun_process(steps_area, "status", *ONE, "--json")
    assert shown.returncode == 1, shown.stderr  # status exits like run: the run failed
    assert [(i["state"], i["status"]) for i in json.loads(shown.stdout)["items"]] == [
        ("COMPLETED", "FAIL")]


# -- item 10: attempts after a rerun, logs after a clean --------------------------------------
def test_a_rerun_grants_the_attempts_it_uses(steps_area: Path) -> None:
    config = steps_area / "megarun.toml"
    config.write_text(config.read_text().replace("retries = 0", "retries = 1"))
    assert megarun_process(steps_area, "run", *ONE, timeout=120).returncode == 1
    job = json.loads(megarun_process(steps_area, "job", "show", "1", "--json").stdout)
    assert (job["attempt"], job["runs"], job["max_attempts"]) == (2, 2, 2)  # one retry
    assert megarun_process(steps_area, "rerun", *ONE, timeout=120).returncode == 1
    job = json.loads(megarun_process(steps_area, "job", "show", "1", "--json").stdout)
    assert (job["attempt"], job["runs"], job["max_attempts"]) == (4, 4, 4)
    shown = megarun_process(steps_area, "job", "show", "1").stdout
    assert re.search(r"max_attempts\s+4\b", shown) and re.search(r"\battempt\s+4\b", shown)


def test_job_logs_after_clean_keep_records_says_clean_removed_them(steps_area: Path) -> None:
    assert megarun_process(steps_area, "run", *ONE, timeout=120).returncode == 1
    assert megarun_process(steps_area, "job", "logs", "1").returncode == 0
    assert megarun_process(steps_area, "clean", *ONE, "--keep-records").returncode == 0
    logs = megarun_process(steps_area, "job", "logs", "1")
    assert logs.returncode == 2
    assert "removed by `megarun clean`" in logs.stderr and "yet" not in logs.stderr
    shown = json.loads(megarun_process(steps_area, "job", "show", "1", "--json").stdout)
    assert shown["events"][-1]["message"] == "run path removed by clean"
    assert shown["events"][-1]["from"] == shown["events"][-1]["to"] == "COMPLETED"

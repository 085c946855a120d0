"""What a run's results mean: continuing after an interruption, roll-ups while a run goes on,
the headline naming the root cause, and the exit codes of `run`, `rerun` and `status`.

Every run here is a real `megarun` process on the local site; interruptions are real signals.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import megarun_process, spawn_megarun

RUN = ("--target", "linux", "--runname", "r1")


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """An area whose tests are written by each test."""
    area = tmp_path / "suite"
    (area / "tests").mkdir(parents=True)
    (area / "megarun.toml").write_text(
        'name = "semantics"\nkeys = ["os"]\ndefault_site = "local"\n\n'
        "[launcher]\nretries = 0\nkill_grace = 1\nidle_exit = 3\n")
    return area


def write_test(area: Path, name: str, text: str) -> None:
    folder = area / "tests" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.toml").write_text(text)


def hold_until(flag: Path) -> str:
    """A step that waits until `flag` exists (the test decides when the step may end)."""
    return f"sh -c 'while ! test -e {flag}; do sleep 0.1; done'"


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not reached in {timeout:.0f} s")


def status_json(area: Path) -> dict[str, Any]:
    """`status --json` of the run, whatever its exit code (the code is checked where it matters)."""
    result = megarun_process(area, "status", *RUN, "--json")
    assert result.returncode in (0, 1, 75), result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def items(area: Path) -> dict[str, dict[str, Any]]:
    return {f"{i['test']}/{i['item'] or '-'}": i for i in status_json(area)["items"]}


def running_count(area: Path) -> int:
    result = megarun_process(area, "status", *RUN, "--json")
    if not result.stdout:  # the run does not exist yet
        return 0
    return sum(i["state"] == "RUNNING" for i in json.loads(result.stdout)["items"])


def holders(flag: Path) -> list[int]:
    """Live processes whose command line names `flag` (the held steps)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if str(flag).encode() in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def start_run_and_wait_running(area: Path, running: int = 1) -> subprocess.Popen[str]:
    run = spawn_megarun(area, "run", *RUN, "--quiet")

    def started() -> bool:
        if run.poll() is not None:
            raise AssertionError(f"the run ended early: {run.communicate()}")
        return running_count(area) >= running

    wait_for(started, f"{running} running item(s)")
    return run


def interrupted_suite(area: Path, flag: Path) -> None:
    """unit (4 items, held until `flag`) <- check (normal), report (toplevel)."""
    write_test(area, "unit", f'steps = ["{hold_until(flag)}"]\n[items]\nN = [1, 2, 3, 4]\n')
    write_test(area, "check", 'waiton = ["unit"]\nwaiton_mode = "itemmatch"\nsteps = ["true"]\n'
               '[items]\nN = [1, 2, 3, 4]\n')
    write_test(area, "report", 'waiton = ["unit", "check"]\nwaiton_mode = "toplevel"\n'
               'steps = ["sh -c \'echo report > $MEGARUN_RUN_DIR/../report.txt\'"]\n')


# -- item 2: toplevel (and normal) waiton after an interruption -------------------------------
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_continues_and_then_runs_the_toplevel_report(
        suite: Path, tmp_path: Path, signum: int) -> None:
    flag = tmp_path / "go"
    interrupted_suite(suite, flag)
    run = start_run_and_wait_running(suite)
    run.send_signal(signum)
    _out, err = run.communicate(timeout=60)
    after = items(suite)
    # Nothing was settled: the stopped items are READY again, their children still wait.
    assert after["report/-"]["state"] == "AWAITING_PARENTS", after["report/-"]
    assert {after[f"unit/{n}"]["state"] for n in range(1, 5)} == {"READY"}
    assert {after[f"check/{n}"]["state"] for n in range(1, 5)} == {"AWAITING_PARENTS"}
    assert run.returncode == 130, err
    assert "megarun run --target linux --runname r1" in err  # how to continue
    assert "run linux/r1 interrupted: 0 of 9 item(s) ended" in err  # what was interrupted
    assert running_count(suite) == 0
    wait_for(lambda: not holders(flag), "the job processes to be gone", timeout=10)
    flag.touch()
    again = megarun_process(suite, "run", *RUN, "--json", timeout=180)
    assert again.returncode == 0, again.stderr
    final = {(i["test"], i["item"]): (i["state"], i["status"])
             for i in json.loads(again.stdout)["items"]}
    assert set(final.values()) == {("COMPLETED", "PASS")} and len(final) == 9
    assert (suite / "runs" / "linux" / "r1" / "report.txt").read_text() == "report\n"


def test_toplevel_report_runs_once_its_prerequisites_ended_even_killed(suite: Path,
                                                                        tmp_path: Path) -> None:
    """A prerequisite KILLED by the user is final: the report does not wait for it, and runs."""
    flag = tmp_path / "go"
    write_test(suite, "unit", f'steps = ["{hold_until(flag)}"]\n')
    write_test(suite, "lint", 'steps = ["true"]\n')
    write_test(suite, "report", 'waiton = ["unit", "lint"]\nwaiton_mode = "toplevel"\n'
               'steps = ["true"]\n')
    run = start_run_and_wait_running(suite)
    killed = megarun_process(suite, "kill", *RUN, "--testpatt", "unit")
    assert killed.returncode == 0, killed.stderr
    run.communicate(timeout=60)
    final = items(suite)
    assert (final["unit/-"]["state"], final["unit/-"]["status"]) == ("KILLED", "ABORT")
    assert (final["report/-"]["state"], final["report/-"]["status"]) == ("COMPLETED", "PASS")


# -- item 3: never PASS while items are unfinished --------------------------------------------
def test_a_run_with_unfinished_items_is_shown_running_with_counts(suite: Path,
                                                                   tmp_path: Path) -> None:
    flag = tmp_path / "go"
    write_test(suite, "unit", "steps = [\"sh -c 'test $N = 1 || while ! test -e "
               f"{flag}; do sleep 0.1; done'\"]\n[items]\nN = [1, 2]\n")
    run = start_run_and_wait_running(suite)
    try:
        wait_for(lambda: [(i["state"], i["status"]) for i in status_json(suite)["items"]] == [
            ("COMPLETED", "PASS"), ("RUNNING", "n/a")], "unit/1 passed and unit/2 running")
        result = megarun_process(suite, "status", *RUN, "--json")
        assert result.returncode == 75, result.stderr  # not ended yet
        data = json.loads(result.stdout)
        assert data["status"] == "RUNNING"
        assert data["counts"] == {"RUNNING": 1, "PASS": 1}
        unit = {t["test"]: t for t in data["tests"]}["unit"]
        assert unit["status"] == "RUNNING" and unit["counts"] == {"RUNNING": 1, "PASS": 1}
        table = megarun_process(suite, "status", *RUN)
        assert "run status: RUNNING (1 RUNNING, 1 PASS)" in table.stdout
        listed = json.loads(megarun_process(suite, "runs", "ls", "--json").stdout)
        assert [r["status"] for r in listed] == ["RUNNING"]
    finally:
        flag.touch()
        run.communicate(timeout=60)
    assert run.returncode == 0
    done = megarun_process(suite, "status", *RUN)
    assert done.returncode == 0 and "run status: PASS (2 PASS)" in done.stdout


# -- item 4: the headline names the root cause, PREQ_FAIL names the prerequisite --------------
def test_headline_names_the_failure_and_preq_fail_names_its_prerequisite(suite: Path) -> None:
    write_test(suite, "build", 'steps = ["false"]\n')
    write_test(suite, "unit", 'waiton = ["build"]\nsteps = ["true"]\n[items]\nN = [1, 2]\n')
    write_test(suite, "integ", 'waiton = ["unit"]\nsteps = ["true"]\n')
    result = megarun_process(suite, "run", *RUN, timeout=120)
    assert result.returncode == 1
    assert "run status: FAIL (1 FAIL, 3 PREQ_FAIL)" in result.stdout
    data = status_json(suite)
    assert data["status"] == "FAIL" and data["counts"] == {"FAIL": 1, "PREQ_FAIL": 3}
    final = items(suite)
    assert final["unit/1"]["message"] == "prerequisite build/- did not pass (FAIL)"
    assert final["unit/2"]["message"] == "prerequisite build/- did not pass (FAIL)"
    # A chain names its direct prerequisite, whose own message names the next one.
    assert final["integ/-"]["message"] == "prerequisite unit/1 did not pass (PREQ_FAIL)"


def test_a_test_added_after_its_prerequisite_failed_names_it(suite: Path) -> None:
    write_test(suite, "build", 'steps = ["false"]\n')
    assert megarun_process(suite, "run", *RUN, timeout=120).returncode == 1
    write_test(suite, "unit", 'waiton = ["build"]\nsteps = ["true"]\n')
    assert megarun_process(suite, "run", *RUN, timeout=120).returncode == 1
    assert items(suite)["unit/-"]["message"] == "prerequisite build/- did not pass (FAIL)"


def test_plain_job_preq_fail_names_the_job_it_waited_on(suite: Path) -> None:
    def ok(*args: str) -> str:
        result = megarun_process(suite, *args, timeout=120)
        assert result.returncode in (0, 1), result.stderr
        return result.stdout

    ok("app", "add", "no", "--command", "false")
    ok("job", "create", "--app", "no")
    ok("job", "create", "--app", "no", "--after", "1")
    ok("launch", "--quiet")
    assert json.loads(ok("job", "show", "2", "--json"))["message"] == (
        "prerequisite job 1 did not pass (FAIL)")
    ok("job", "create", "--app", "no", "--after", "2")  # created after it failed
    assert json.loads(ok("job", "show", "3", "--json"))["message"] == (
        "prerequisite job 2 did not pass (PREQ_FAIL)")


# -- item 10: rerun's test pattern, run after kill, status exit codes -------------------------
def test_rerun_with_a_pattern_matching_no_test_is_refused(suite: Path) -> None:
    write_test(suite, "unit", 'steps = ["true"]\n')
    assert megarun_process(suite, "run", *RUN, "--quiet").returncode == 0
    result = megarun_process(suite, "rerun", *RUN, "--testpatt", "nosuch")
    assert result.returncode == 2
    assert "test pattern 'nosuch' matches no test" in result.stderr and "unit" in result.stderr
    assert "rerunning" not in result.stdout


def test_run_after_kill_says_how_to_run_the_killed_items_again(suite: Path,
                                                               tmp_path: Path) -> None:
    flag = tmp_path / "go"
    write_test(suite, "unit", f'steps = ["{hold_until(flag)}"]\n[items]\nN = [1, 2]\n')
    run = start_run_and_wait_running(suite)
    assert megarun_process(suite, "kill", *RUN).returncode == 0
    run.communicate(timeout=60)
    again = megarun_process(suite, "run", *RUN, timeout=60)
    assert again.returncode == 1
    lines = [line for line in again.stderr.splitlines() if "KILLED" in line]
    assert lines == ["2 item(s) of linux/r1 are KILLED: run them again with "
                     "megarun rerun --target linux --runname r1"], again.stderr
    flag.touch()
    rerun = megarun_process(suite, "rerun", *RUN, "--json", timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert {i["status"] for i in json.loads(rerun.stdout)["items"]} == {"PASS"}


def test_status_exits_like_run(suite: Path) -> None:
    write_test(suite, "unit", 'steps = ["true"]\n')
    assert megarun_process(suite, "run", *RUN, "--quiet").returncode == 0
    assert megarun_process(suite, "status", *RUN).returncode == 0
    write_test(suite, "bad", 'steps = ["false"]\n')
    assert megarun_process(suite, "run", *RUN, "--quiet").returncode == 1
    failed = megarun_process(suite, "status", *RUN)
    assert failed.returncode == 1 and "run status: FAIL (1 FAIL, 1 PASS)" in failed.stdout
    assert megarun_process(suite, "status", *RUN, "--json").returncode == 1


def test_rerun_of_preq_fail_items_whose_prerequisite_still_fails_settles_them(suite: Path) -> None:
    """Rerunning only the PREQ_FAIL items, with their prerequisite still failed, ends them
    PREQ_FAIL again at once: nothing is left waiting for a parent that will not run."""
    write_test(suite, "build", 'steps = ["false"]\n')
    write_test(suite, "unit", 'waiton = ["build"]\nsteps = ["true"]\n')
    write_test(suite, "integ", 'waiton = ["unit"]\nsteps = ["true"]\n')
    assert megarun_process(suite, "run", *RUN, "--quiet", timeout=120).returncode == 1
    rerun = megarun_process(suite, "rerun", *RUN, "--status", "PREQ_FAIL", "--json", timeout=120)
    assert rerun.returncode == 1, rerun.stderr
    final = {i["test"]: (i["state"], i["status"], i["message"])
             for i in json.loads(rerun.stdout)["items"]}
    assert final["unit"] == ("COMPLETED", "PREQ_FAIL", "prerequisite build/- did not pass (FAIL)")
    assert final["integ"] == ("COMPLETED", "PREQ_FAIL",
                              "prerequisite unit/- did not pass (PREQ_FAIL)")

"""Test-suite runs end to end on the worked example suite (examples/regression)."""

from __future__ import annotations

import json
import shutil
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, megarun_process, spawn_megarun

NIGHTLY = ("--target", "linux/x86_64", "--runname", "nightly")


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    area = tmp_path / "suite"
    shutil.copytree(REPO / "examples" / "regression", area)
    return area


def status(area: Path, *run: str) -> dict[str, Any]:
    result = megarun_process(area, "status", *(run or NIGHTLY), "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def by_item(data: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {f"{i['test']}/{i['item']}".rstrip("/"): (i["state"], i["status"]) for i in data["items"]}


def write_test(area: Path, name: str, text: str) -> None:
    folder = area / "tests" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.toml").write_text(text)


def test_example_suite_runs_and_continues(suite: Path) -> None:
    first = megarun_process(suite, "run", *NIGHTLY, "--json", timeout=180)
    assert first.returncode == 0, first.stderr
    items = by_item(json.loads(first.stdout))
    assert items["compile"] == ("COMPLETED", "PASS")
    assert items["unit/1/slow"] == ("COMPLETED", "WARN") and items["unit/2/fast"] == ("COMPLETED", "PASS")
    assert items["integration/3/fast"] == ("COMPLETED", "PASS")
    assert items["lint"] == ("COMPLETED", "WARN") and items["report"] == ("COMPLETED", "PASS")
    assert len(items) == 15
    out = suite / "runs" / "linux/x86_64" / "nightly" / "unit" / "2" / "slow" / "run.out"
    assert out.read_text() == "size=2 mode=slow\n"
    configure = suite / "runs" / "linux/x86_64" / "nightly" / "compile" / "configure.out"
    assert configure.read_text() == "configuring for linux/x86_64 with -O2\n"
    again = megarun_process(suite, "run", *NIGHTLY, "--json", timeout=120)
    assert again.returncode == 0, again.stderr
    ids = sorted(i["id"] for i in json.loads(again.stdout)["items"])
    assert ids == sorted(i["id"] for i in json.loads(first.stdout)["items"])  # nothing duplicated
    data = status(suite)
    assert data["status"] == "WARN"
    assert {t["test"]: t["status"] for t in data["tests"]}["unit"] == "WARN"


def test_skip_on_target_and_target_variables(suite: Path) -> None:
    result = megarun_process(suite, "run", "--target", "linux/arm64", "--runname", "r1", "--json",
                             timeout=180)
    assert result.returncode == 0, result.stderr
    assert by_item(json.loads(result.stdout))["lint"] == ("COMPLETED", "SKIP")
    configure = suite / "runs" / "linux/arm64" / "r1" / "compile" / "configure.out"
    assert configure.read_text() == "configuring for linux/arm64 with -O1\n"


def test_failure_fails_downstream_and_exits_one(suite: Path) -> None:
    write_test(suite, "compile", 'steps = ["false"]\n')
    result = megarun_process(suite, "run", *NIGHTLY, "--json", timeout=120)
    assert result.returncode == 1
    items = by_item(json.loads(result.stdout))
    assert items["compile"] == ("COMPLETED", "FAIL")
    assert items["unit/1/fast"] == ("COMPLETED", "PREQ_FAIL")
    assert items["integration/1/fast"] == ("COMPLETED", "PREQ_FAIL")
    assert items["report"] == ("COMPLETED", "PASS")  # toplevel: runs once they completed, however


def test_rerun_after_fix_and_stale_after_change(suite: Path) -> None:
    write_test(suite, "compile", 'steps = ["false"]\n')
    assert megarun_process(suite, "run", *NIGHTLY, timeout=120).returncode == 1
    write_test(suite, "compile", 'steps = ["true"]\n')
    rerun = megarun_process(suite, "rerun", *NIGHTLY, "--downstream", "--json", timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert set(by_item(json.loads(rerun.stdout)).values()) <= {("COMPLETED", "PASS"),
                                                              ("COMPLETED", "WARN")}
    write_test(suite, "lint", 'steps = ["echo changed"]\n')
    megarun_process(suite, "run", *NIGHTLY, "--testpatt", "report", "--quiet", timeout=120)
    assert by_item(status(suite))["lint"][0] == "STALE"
    stale = megarun_process(suite, "rerun", *NIGHTLY, "--stale", "--json", timeout=120)
    assert stale.returncode == 0, stale.stderr
    assert by_item(json.loads(stale.stdout))["lint"] == ("COMPLETED", "PASS")


def test_export_junit_and_runs_ls(suite: Path) -> None:
    assert megarun_process(suite, "run", *NIGHTLY, "--quiet", timeout=180).returncode == 0
    xml = megarun_process(suite, "runs", "export", *NIGHTLY, "--format", "junit").stdout
    root = ET.fromstring(xml)
    assert root.get("tests") == "15" and root.get("failures") == "0"
    assert {s.get("name") for s in root.iter("testsuite")} == {"compile", "unit", "integration",
                                                               "lint", "report"}
    listed = json.loads(megarun_process(suite, "runs", "ls", "--json").stdout)
    assert [(r["target"], r["runname"], r["jobs"]) for r in listed] == [("linux/x86_64", "nightly", 15)]


def test_clean_removes_files_then_records(suite: Path) -> None:
    assert megarun_process(suite, "run", *NIGHTLY, "--quiet", timeout=180).returncode == 0
    run_dir = suite / "runs" / "linux/x86_64" / "nightly"
    kept = megarun_process(suite, "clean", *NIGHTLY, "--testpatt", "unit", "--keep-records", "--json")
    assert json.loads(kept.stdout)["paths_removed"] == 6
    assert not (run_dir / "unit" / "1" / "fast").exists() and (run_dir / "compile").exists()
    assert len(status(suite)["items"]) == 15
    gone = megarun_process(suite, "clean", *NIGHTLY, "--json")
    assert json.loads(gone.stdout)["records_removed"] == 15
    assert megarun_process(suite, "status", *NIGHTLY).returncode == 2


@pytest.mark.parametrize(("name", "text", "message"), [
    ("a", 'steps = ["true"]\nwaiton = ["b"]\n', "waiton cycle"),
    ("a", 'steps = ["true"]\nwaiton = ["nosuch"]\n', "nosuch"),
    ("a", 'steps = ["true"]\nbogus = 1\n', "bogus"),
])
def test_bad_definitions_create_nothing(suite: Path, name: str, text: str, message: str) -> None:
    write_test(suite, name, text)
    write_test(suite, "b", 'steps = ["true"]\nwaiton = ["a"]\n')
    result = megarun_process(suite, "run", *NIGHTLY)
    assert result.returncode == 2 and message in result.stderr
    assert "test.toml" in result.stderr or "cycle" in result.stderr
    assert json.loads(megarun_process(suite, "runs", "ls", "--json").stdout) == []


def test_target_with_wrong_key_count_is_refused(suite: Path) -> None:
    result = megarun_process(suite, "run", "--target", "linux", "--runname", "x")
    assert result.returncode == 2 and "os/arch" in result.stderr


def test_item_values_with_metacharacters_never_execute(suite: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for name in ("compile", "unit", "integration", "lint", "report"):
        shutil.rmtree(suite / "tests" / name)
    write_test(suite, "meta", 'steps = ["sh -c \'echo \\"$V\\"\'"]\n[items]\n'
               f'V = ["$(touch {marker})", "a;b", "q\\"uote", "new\\nline"]\n')
    result = megarun_process(suite, "run", *NIGHTLY, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    outs = sorted(p.read_text() for p in (suite / "runs").rglob("step1.out"))
    assert outs == sorted([f"$(touch {marker})\n", "a;b\n", 'q"uote\n', "new\nline\n"])


def test_step_past_runtimelim_times_out_with_all_processes_gone(suite: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    for name in ("compile", "unit", "integration", "lint", "report"):
        shutil.rmtree(suite / "tests" / name)
    write_test(suite, "hang", f'runtimelim = "1s"\nsteps = ["sh -c \'sleep 300 & echo $! > {pids}; '
               f'echo $$ >> {pids}; wait\'"]\n')
    result = megarun_process(suite, "run", *NIGHTLY, "--json", timeout=120)
    assert result.returncode == 1
    assert by_item(json.loads(result.stdout))["hang"] == ("COMPLETED", "TIMEOUT")
    for pid in map(int, pids.read_text().split()):
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"


def test_kill_9_of_the_launcher_then_run_again_finishes_every_item_once(suite: Path) -> None:
    for name in ("compile", "integration", "lint", "report"):
        shutil.rmtree(suite / "tests" / name)
    write_test(suite, "unit", 'steps = ["sleep 0.3"]\n[items]\nN = [' +
               ", ".join(str(n) for n in range(12)) + "]\n")
    launcher = spawn_megarun(suite, "run", *NIGHTLY, "--quiet")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = megarun_process(suite, "status", *NIGHTLY, "--json")
        if listed.returncode != 2:  # the run exists (75 while it runs, see status)
            done = [i for i in json.loads(listed.stdout)["items"] if i["state"] == "COMPLETED"]
            if len(done) >= 2:
                break
        time.sleep(0.2)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    again = megarun_process(suite, "run", *NIGHTLY, "--json", timeout=180)
    assert again.returncode == 0, again.stderr
    items = json.loads(again.stdout)["items"]
    assert len(items) == 12 and {(i["state"], i["status"]) for i in items} == {("COMPLETED", "PASS")}
    outs = list((suite / "runs").rglob("step1.out"))
    assert len(outs) == 12


def test_run_detach_returns_at_once_and_the_run_finishes(suite: Path) -> None:
    started = time.monotonic()
    result = megarun_process(suite, "run", *NIGHTLY, "--detach", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    answer = json.loads(result.stdout)  # nothing but JSON on stdout
    assert answer["jobs"] == 15 and answer["created"] == 15
    log = Path(answer["log"])
    assert log.exists() and (log.stat().st_mode & 0o777) == 0o600
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and Path(f"/proc/{answer['pid']}").exists():
        stat = Path(f"/proc/{answer['pid']}/stat").read_text(errors="replace")
        if stat.split(")")[-1].split()[0] == "Z":
            break
        time.sleep(0.2)
    items = status(suite)["items"]
    assert len(items) == 15 and {i["state"] for i in items} == {"COMPLETED"}

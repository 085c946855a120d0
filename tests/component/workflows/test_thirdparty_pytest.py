"""End to end: a real third-party pytest suite (the tests toolz ships in its wheel) run through
megarun, one item per test file, on the local site; megarun's PASS/FAIL per file, the JUnit
export's counts and each item's own pytest summary are checked against pytest's own run of
the same files. A second test runs a file with a test made to fail, so FAIL is covered too."""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml

from tests.conftest import megarun_process

toolz = pytest.importorskip("toolz", reason="toolz is in the dev extras")

SUITE = Path(toolz.__file__).parent / "tests"
RUN = ("--target", "linux/x86_64", "--runname", "thirdparty")
INJECTED = '''
import toolz


def test_passes():
    assert toolz.first([1, 2]) == 1


def test_fails_on_purpose():
    assert toolz.last([1, 2]) == 1
'''
#: pytest without its cache (never writes into site-packages) and without bytecode files.
PYTEST = "-m pytest -q -p no:cacheprovider"


def suite_toml(folder: Path, files: list[str]) -> str:
    """One item per test file; the step runs pytest on that file alone."""
    items = ", ".join(json.dumps(f) for f in files)
    return ('steps = [{name = "pytest", cmd = "sh -c \'\\"$PYTHON\\" ' + PYTEST +
            ' \\"$SUITE/$FILE\\"\'"}]\n'
            f'env = {{PYTHON = {json.dumps(sys.executable)}, SUITE = {json.dumps(str(folder))}, '
            'PYTHONDONTWRITEBYTECODE = "1"}\n'
            f'[items]\nFILE = [{items}]\n')


def pytest_reference(tmp_path: Path, paths: list[Path]) -> dict[str, Counter[str]]:
    """pytest's own outcomes per file (from its --junitxml): passed, failed, skipped."""
    import subprocess

    report = tmp_path / "pytest.xml"
    subprocess.run([sys.executable, *PYTEST.split(), f"--junitxml={report}",
                    *map(str, paths)], capture_output=True, check=False, timeout=120,
                   env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"})
    per_file: dict[str, Counter[str]] = {}
    for case in ET.parse(report).iter("testcase"):
        # the module is the last dotted part that names a test file (a class may follow)
        module = [part for part in case.get("classname", "").split(".")
                  if part.startswith("test_")][-1]
        outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                   else "skipped" if case.find("skipped") is not None else "passed")
        per_file.setdefault(f"{module}.py", Counter())[outcome] += 1
    return per_file


def summary_counts(log: str) -> Counter[str]:
    """The counts of pytest -q's last line ("3 passed, 1 skipped in 0.1s")."""
    last = log.strip().splitlines()[-1]
    found = Counter({word.rstrip("s").replace("error", "failed"): int(n) for n, word in
                     re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)})
    return +found


@pytest.mark.slow
def test_a_third_party_pytest_suite_one_item_per_file(area: Path, tmp_path: Path) -> None:
    files = sorted(p.name for p in SUITE.glob("test_*.py"))
    assert len(files) >= 10
    injected_dir = tmp_path / "injected"
    injected_dir.mkdir()
    (injected_dir / "test_injected.py").write_text(INJECTED)
    for name, folder, names in (("toolz", SUITE, files),
                                ("injected", injected_dir, ["test_injected.py"])):
        (area / "tests" / name).mkdir(parents=True)
        (area / "tests" / name / "test.toml").write_text(suite_toml(folder, names))

    result = megarun_process(area, "run", *RUN, "--json", timeout=300)
    assert result.returncode == 1, result.stderr  # the injected failure fails the run
    items = {(i["test"], i["item"]): i for i in json.loads(result.stdout)["items"]}

    reference = pytest_reference(tmp_path, [SUITE / f for f in files] +
                                 [injected_dir / "test_injected.py"])
    assert set(reference) == set(files) | {"test_injected.py"}
    for (test, item), entry in items.items():
        expected = "FAIL" if reference[item]["failed"] else "PASS"
        assert (entry["state"], entry["status"]) == ("COMPLETED", expected), (test, item)
        log = area / "runs" / "linux" / "x86_64" / "thirdparty" / test / item / "pytest.out"
        ran = summary_counts(log.read_text())
        assert ran == +reference[item], (item, ran, reference[item])  # the same tests ran
    assert items["injected", "test_injected.py"]["status"] == "FAIL"
    shown = megarun_process(area, "job", "logs", str(items["injected", "test_injected.py"]["id"]),
                            "--step", "pytest")
    assert shown.stdout.startswith("==> pytest.out <==\n") and "1 failed, 1 passed" in shown.stdout
    assert sum(1 for i in items.values() if i["status"] == "PASS") == sum(
        1 for counts in reference.values() if not counts["failed"])

    export = megarun_process(area, "runs", "export", *RUN, "--format", "junit")
    assert export.returncode == 0, export.stderr
    xml = JUnitXml.fromstring(export.stdout)
    suites = {suite.name: suite for suite in xml}
    failed_files = {f for f, counts in reference.items() if counts["failed"]}
    assert (suites["toolz"].tests, suites["toolz"].failures) == (
        len(files), len(failed_files - {"test_injected.py"}))
    assert (suites["injected"].tests, suites["injected"].failures) == (1, 1)
    assert (xml.tests, xml.failures, xml.errors) == (len(files) + 1, len(failed_files), 0)
    [case] = list(suites["injected"])
    [failure] = case.result
    assert isinstance(failure, Failure)
    assert "1 failed, 1 passed" in case.system_out  # pytest's own summary, from the step's log
    assert "test_fails_on_purpose" in case.system_out

"""`runs export --format junit`: what Jenkins and GitLab read, checked with junitparser and a
strict schema of the format (tests/integration/data/junit.xsd), on a real run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import xmlschema
from junitparser import Error, Failure, JUnitXml, Properties, Skipped

from megarun.report.junit import JunitCase, junit_xml, xml_text
from megarun.suites.run_report import ItemStatus
from tests.conftest import megarun_process

RUN = ("--target", "linux/x86_64", "--runname", "r")
SCHEMA = Path(__file__).parent / "data" / "junit.xsd"


def write_test(area: Path, name: str, text: str) -> None:
    folder = area / "tests" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.toml").write_text(text)


def properties(element: Any) -> dict[str, str]:
    found = element.child(Properties)
    return {p.name: p.value for p in found} if found is not None else {}


@pytest.fixture
def exported(area: Path) -> str:
    """A run with a pass, a failure in a second step (300 lines of output, control characters
    on stderr), a PREQ_FAIL, a SKIP and two STALE results (a pass and a failure)."""
    write_test(area, "build", 'steps = ["true"]\n')
    write_test(area, "unit", 'steps = [{name = "prep", cmd = "true"},\n'
               '         {name = "check", cmd = "sh -c \'seq 1 300; if [ $N = 2 ]; then '
               'printf \\"bad \\\\001\\\\033[31m red\\\\n\\" >&2; exit 4; fi\'"}]\n'
               '[items]\nN = ["1", "2"]\n')
    write_test(area, "dep", 'waiton = ["unit"]\nsteps = ["true"]\n')
    write_test(area, "skipme", 'steps = ["true"]\nskip = { targets = ["linux/%"] }\n')
    write_test(area, "stalepass", 'steps = ["true"]\n')
    write_test(area, "stalefail", 'steps = ["false"]\n')
    assert megarun_process(area, "run", *RUN, "--quiet").returncode == 1
    write_test(area, "stalepass", 'description = "changed"\nsteps = ["true"]\n')
    write_test(area, "stalefail", 'description = "changed"\nsteps = ["false"]\n')
    megarun_process(area, "run", *RUN, "--testpatt", "stalepass,stalefail", "--quiet")
    result = megarun_process(area, "runs", "export", *RUN, "--format", "junit")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_export_is_valid_pretty_and_never_says_none(exported: str) -> None:
    xmlschema.XMLSchema(str(SCHEMA)).validate(exported)
    assert exported.endswith("</testsuites>\n")
    assert "\n  <testsuite " in exported and "\n    <testcase " in exported  # indented
    assert "None" not in exported
    assert "\x01" not in exported and "\x1b" not in exported


def test_counts_and_outcomes_as_junit_readers_see_them(exported: str) -> None:
    xml = JUnitXml.fromstring(exported)
    suites = {suite.name: suite for suite in xml}
    counts = {name: (s.tests, s.failures, s.errors, s.skipped) for name, s in suites.items()}
    assert counts == {"build": (1, 0, 0, 0), "unit": (2, 1, 0, 0), "dep": (1, 1, 0, 0),
                      "skipme": (1, 0, 0, 1), "stalepass": (1, 0, 0, 1),
                      "stalefail": (1, 0, 0, 1)}
    assert (xml.tests, xml.failures, xml.errors) == (7, 2, 0)
    for suite in suites.values():
        assert properties(suite) == {"target": "linux/x86_64", "runname": "r"}
        assert suite.time == pytest.approx(sum(case.time for case in suite), abs=0.01)
    cases = {(suite.name, case.name): case for suite in xml for case in suite}
    assert {case.classname for case in cases.values()} == {
        f"linux/x86_64.{name}" for name in suites}
    assert [type(r) for r in cases["stalepass", "stalepass"].result] == [Skipped]
    assert [type(r) for r in cases["stalefail", "stalefail"].result] == [Skipped]
    assert "stale" in cases["stalefail", "stalefail"].result[0].message
    assert "FAIL" in cases["stalefail", "stalefail"].result[0].message
    assert cases["build", "build"].result == [] and cases["build", "build"].system_out is None
    assert not any(isinstance(r, Error) for case in cases.values() for r in case.result)


def test_a_failure_names_its_step_and_carries_the_tail_of_its_logs(exported: str) -> None:
    xml = JUnitXml.fromstring(exported)
    case = next(c for suite in xml for c in suite if suite.name == "unit" and c.name == "2")
    [failure] = case.result
    assert isinstance(failure, Failure) and failure.type == "FAIL"
    assert failure.message.startswith("exit code 4 in step 'check'")
    assert "step 'check' COMPLETED FAIL, exit code 4" in failure.text
    props = properties(case)
    assert props["failing_step"] == "check" and props["exit_code"] == "4"
    assert props["item"] == "2" and props["state"] == "COMPLETED" and props["status"] == "FAIL"
    assert props["job_id"].isdigit()
    assert props["run_path"].endswith("/runs/linux/x86_64/r/unit/2")
    assert case.system_out.splitlines() == [str(n) for n in range(201, 301)]  # the last 100
    assert case.system_err == "bad [31m red\n"  # what XML 1.0 forbids is dropped
    dep = next(c for suite in xml for c in suite if suite.name == "dep")
    [preq] = dep.result
    assert isinstance(preq, Failure) and preq.type == "PREQ_FAIL"
    assert dep.system_out is None and "failing_step" not in properties(dep)


def item(job_id: int, state: str, status: str, exit_code: int | None = None,
         message: str = "", runtime: float | None = None) -> JunitCase:
    return JunitCase(ItemStatus(job_id, "t", f"i{job_id}", state, status, exit_code, message,
                                runtime), f"/runs/t/i{job_id}", 1, None, None, None)


def test_killed_dead_and_unfinished_items() -> None:
    text = junit_xml("linux", "r", [item(1, "KILLED", "ABORT", message="killed by user"),
                                    item(2, "DEAD", "DEAD"),
                                    item(3, "RUNNING", "n/a"), item(4, "READY", "n/a"),
                                    item(5, "COMPLETED", "TIMEOUT", -9, "runtime limit", 2.5),
                                    item(6, "COMPLETED", "WARN", 0, runtime=1.0)])
    xmlschema.XMLSchema(str(SCHEMA)).validate(text)
    assert "None" not in text
    suite = next(iter(JUnitXml.fromstring(text)))
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (6, 1, 2, 2)
    results = {case.name: case.result for case in suite}
    assert [type(r) for r in results["i1"]] == [Error] and results["i1"][0].type == "ABORT"
    assert [type(r) for r in results["i2"]] == [Error]
    assert results["i3"][0].message == "not finished: RUNNING"
    assert isinstance(results["i5"][0], Failure) and results["i5"][0].type == "TIMEOUT"
    assert results["i6"] == []
    assert suite.time == pytest.approx(3.5)


def test_xml_text_drops_what_xml_forbids() -> None:
    assert xml_text("a\x00b\x08c\x0bd\tf\ng\rh\ud800i\ufffej\U0001f600") == "abcd\tf\ng\rhij\U0001f600"

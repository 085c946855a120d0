"""JUnit XML of a run (`runs export --format junit`), as Jenkins and GitLab read it.

One `testsuite` per test with the run's target and runname as properties; one `testcase` per
item with the job id, item, run path, attempt, state and status as properties. A failing or
erroring item names the step that ended it, and carries the tail of that step's stdout and
stderr (`system-out`, `system-err`: the last lines, bounded, read in one round trip per SSH
site). Outcomes map to JUnit's as docs/cli.md says (`runs export`); STALE results, whatever
their status, are `skipped`: they belong to a test definition that has changed since.
Every text is made safe for XML 1.0 (characters it forbids are dropped), nothing reads
"None", and the document is indented and ends with a newline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from peewee import SqliteDatabase

from megarun.campaign.steps import job_steps
from megarun.core.states import JobState, JobStatus
from megarun.core.steps import StepResult, failing_step
from megarun.suites.run_report import ItemStatus

#: How much of a failing step's logs a testcase carries: its last lines, at most these bytes.
TAIL_LINES = 100
TAIL_BYTES = 16 << 10

FAILURES = frozenset({JobStatus.FAIL, JobStatus.TIMEOUT, JobStatus.CHECK, JobStatus.PREQ_FAIL})
ERRORS = frozenset({JobStatus.ABORT, JobStatus.DEAD})
_ENDED = frozenset({JobState.COMPLETED, JobState.KILLED, JobState.DEAD})
#: Characters XML 1.0 does not allow anywhere (not even escaped).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class JunitCase:
    """One item of the run with what its testcase shows."""

    item: ItemStatus
    run_path: str
    attempt: int
    step: StepResult | None  # the step that ended it badly
    stdout: str | None  # tail of that step's logs; None: not there (or not read)
    stderr: str | None


@dataclass(frozen=True)
class JobPlace:
    """Where one job ran: its run path, attempt and site (None: no site yet)."""

    run_path: str
    attempt: int
    site: str | None


def xml_text(text: str) -> str:
    """`text` without the characters XML 1.0 forbids (control characters, lone surrogates,
    U+FFFE/U+FFFF): a log may hold anything."""
    return _NOT_XML.sub("", text)


def outcome(item: ItemStatus) -> str:
    """The JUnit element of an item: failure, error, skipped, or '' for a pass."""
    state, status = JobState(item.state), JobStatus(item.status)
    if state is JobState.STALE:
        return "skipped"
    if state not in _ENDED:
        return "skipped"  # not finished: no result yet
    if status in FAILURES:
        return "failure"
    if status in ERRORS or state is not JobState.COMPLETED:
        return "error"
    if status is JobStatus.SKIP:
        return "skipped"
    return ""


def _message(item: ItemStatus, kind: str) -> str:
    state = JobState(item.state)
    if state is JobState.STALE:
        return (f"stale: the test's definition changed after this result "
                f"({item.status}); rerun it (megarun rerun --stale)")
    if state not in _ENDED:
        return f"not finished: {item.state}"
    return item.message or (item.status if kind else "")


def _details(case: JunitCase) -> str:
    """The body of a failure or error element: what ended the item, in plain lines."""
    item = case.item
    lines = [f"status {item.status} (state {item.state})"]
    if case.step is not None:
        step = case.step
        code = "" if step.exit_code is None else f", exit code {step.exit_code}"
        took = "" if step.duration is None else f", {step.duration:.3f} s"
        lines.append(f"step {step.name!r} {step.state.value} {step.status.value}{code}{took}")
    elif item.exit_code is not None:
        lines.append(f"exit code {item.exit_code}")
    if item.message:
        lines.append(item.message)
    lines.append(f"job {item.id}, attempt {case.attempt}, run path {case.run_path}")
    return "\n".join(lines)


def _properties(parent: ET.Element, values: Sequence[tuple[str, str]]) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in values:
        ET.SubElement(props, "property", name=name, value=xml_text(value))


def _testcase(suite: ET.Element, target: str, case: JunitCase) -> tuple[str, float]:
    item = case.item
    seconds = item.runtime or 0.0
    element = ET.SubElement(suite, "testcase", classname=xml_text(f"{target}.{item.test}"),
                            name=xml_text(item.item or item.test), time=f"{seconds:.3f}")
    values = [("job_id", str(item.id)), ("item", item.item), ("run_path", case.run_path),
              ("attempt", str(case.attempt)), ("state", item.state), ("status", item.status)]
    if case.step is not None:
        values.append(("failing_step", case.step.name))
    if item.exit_code is not None:
        values.append(("exit_code", str(item.exit_code)))
    _properties(element, values)
    kind = outcome(item)
    if kind:
        detail = ET.SubElement(element, kind, message=xml_text(_message(item, kind)))
        if kind != "skipped":
            detail.set("type", item.status)
            detail.text = xml_text(_details(case))
    if case.stdout is not None:
        ET.SubElement(element, "system-out").text = xml_text(case.stdout)
    if case.stderr is not None:
        ET.SubElement(element, "system-err").text = xml_text(case.stderr)
    return kind, seconds


_COUNTED = {"failure": "failures", "error": "errors", "skipped": "skipped"}


def junit_xml(target: str, runname: str, cases: Sequence[JunitCase],
              created: float | None = None) -> str:
    """The JUnit XML document of a run's items (in the order given, grouped by test)."""
    root = ET.Element("testsuites", name=xml_text(f"{target}/{runname}"))
    by_test: dict[str, list[JunitCase]] = {}
    for case in cases:
        by_test.setdefault(case.item.test, []).append(case)
    totals = {"tests": 0, "failures": 0, "errors": 0, "time": 0.0}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) if created else None
    for test, members in by_test.items():
        suite = ET.SubElement(root, "testsuite", name=xml_text(test))
        _properties(suite, [("target", target), ("runname", runname)])
        counts = {"tests": len(members), "failures": 0, "errors": 0, "skipped": 0}
        seconds = 0.0
        for case in members:
            kind, took = _testcase(suite, target, case)
            seconds += took
            if kind:
                counts[_COUNTED[kind]] += 1
        for key, value in counts.items():
            suite.set(key, str(value))
        suite.set("time", f"{seconds:.3f}")
        if stamp:
            suite.set("timestamp", stamp)
        for key in ("tests", "failures", "errors"):
            totals[key] += counts[key]
        totals["time"] += seconds
    for key in ("tests", "failures", "errors"):
        root.set(key, str(int(totals[key])))
    root.set("time", f"{totals['time']:.3f}")
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def job_places(db: SqliteDatabase, run_id: int) -> dict[int, JobPlace]:
    """Each job of the run: its run path, attempt and site name."""
    rows = db.execute_sql(
        "SELECT job.id, job.workdir, job.attempt, site.name FROM job "
        "LEFT JOIN site ON site.id = job.site_id WHERE job.run_id = ?", (run_id,)).fetchall()
    return {int(i): JobPlace(str(w or ""), int(a or 0), s) for i, w, a, s in rows}


def log_paths(run_path: str, step: StepResult) -> tuple[str, str]:
    """The stdout and stderr logs of one step of a job (megarun/agent/runner.py names them)."""
    return f"{run_path}/{step.name}.out", f"{run_path}/{step.name}.err"


#: Reads the tails of some logs of one site's jobs (site name, None: no site): path -> text.
TailReader = Callable[[str | None, list[str]], dict[str, str]]


def build_cases(db: SqliteDatabase, run_id: int, items: Sequence[ItemStatus],
                read_tails: TailReader) -> list[JunitCase]:
    """The testcases of a run's items: the failing step of each failure or error and the
    tail of its logs (one read per site for all of them)."""
    places = job_places(db, run_id)
    steps = job_steps(db, [i.id for i in items if outcome(i) in ("failure", "error")])
    failing = {job_id: step for job_id, results in steps.items()
               if (step := failing_step(results)) is not None}
    wanted: dict[str | None, list[str]] = {}
    for job_id, step in failing.items():
        place = places[job_id]
        if place.run_path:
            wanted.setdefault(place.site, []).extend(log_paths(place.run_path, step))
    tails: dict[str, str] = {}
    for site, paths in wanted.items():
        tails.update(read_tails(site, paths))
    cases = []
    for item in items:
        place = places.get(item.id, JobPlace("", 0, None))
        step = failing.get(item.id)
        out, err = log_paths(place.run_path, step) if step and place.run_path else ("", "")
        cases.append(JunitCase(item, place.run_path, place.attempt, step, tails.get(out),
                               tails.get(err)))
    return cases

"""The Python examples of docs/python-api.md and docs/quickstart.md run as written on a real
area (in a fresh interpreter, from the area's folder)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, megarun_process


def python_blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)


def run_python(area: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=area, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False,
                          timeout=120)


def prepared(area: Path) -> Path:
    """An area with the app `sim`, a failed job tagged june, and a run linux/x86_64/nightly."""
    for args in (("app", "add", "sim", "--command", "test {{ size }} != bad", "--param",
                  "size=ok"),
                 ("job", "create", "--app", "sim", "-p", "size=bad", "-t", "campaign=june")):
        assert megarun_process(area, *args).returncode == 0
    assert megarun_process(area, "launch", "--quiet").returncode == 1  # the job failed
    folder = area / "tests" / "hello"
    folder.mkdir(parents=True)
    (folder / "test.toml").write_text('steps = ["echo $N"]\n[items]\nN = [1, 2]\n')
    run = megarun_process(area, "run", "--target", "linux/x86_64", "--runname", "nightly",
                          "--quiet")
    assert run.returncode == 0, run.stderr
    return area


def test_the_notebook_session_runs_as_written(area: Path) -> None:
    prepared(area)
    session = python_blocks(REPO / "docs" / "python-api.md")[0]
    assert 'megarun.open_area("path/to/area")' in session
    done = run_python(area, session.replace("path/to/area", str(area)))
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("1 sim local JobState.COMPLETED JobStatus.FAIL 1 ")
    assert first.endswith("{'campaign': 'june'}")
    assert second == ("PASS [('hello', '1', <JobStatus.PASS: 'PASS'>), "
                      "('hello', '2', <JobStatus.PASS: 'PASS'>)]")
    made = json.loads(megarun_process(area, "job", "ls", "--app", "sim", "--json").stdout)
    assert [(job["id"], job["tags"]) for job in made] == [
        (1, {"campaign": "june"}), (4, {"campaign": "june"}), (5, {"campaign": "june"})]


def test_the_quickstart_snippet_runs_in_the_areas_folder(area: Path) -> None:
    prepared(area)
    snippet = next(block for block in python_blocks(REPO / "docs" / "quickstart.md")
                   if "open_area" in block)
    done = run_python(area, snippet)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("1 1 ") and "==> job.out <==" in done.stdout

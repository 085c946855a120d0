"""`job ls`: a default limit that says what it left out, and --json/--csv streamed row by row
(the CLI's peak RSS stays flat whatever the number of jobs)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, megarun_process


def run_ok(area: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = megarun_process(area, *args)
    assert result.returncode == 0, result.stderr
    return result


def make_jobs(area: Path, count: int) -> None:
    run_ok(area, "app", "add", "noop", "--command", "true")
    run_ok(area, "job", "create", "--app", "noop", "--count", str(count))


def test_default_limit_says_what_it_left_out(area: Path) -> None:
    make_jobs(area, 1005)
    listed = run_ok(area, "job", "ls", "--json")
    rows = json.loads(listed.stdout)
    assert [row["id"] for row in rows] == list(range(1, 1001))  # oldest first, as before
    assert listed.stderr.strip() == "... 5 more; --limit 0 for all"
    table = run_ok(area, "job", "ls")
    assert len(table.stdout.splitlines()) == 1 + 1000  # header + rows
    assert table.stderr.strip() == "... 5 more; --limit 0 for all"
    everything = run_ok(area, "job", "ls", "--json", "--limit", "0")
    assert len(json.loads(everything.stdout)) == 1005 and everything.stderr == ""
    exact = run_ok(area, "job", "ls", "--csv", "--limit", "1005")
    assert len(list(csv.reader(io.StringIO(exact.stdout)))) == 1 + 1005
    assert exact.stderr == ""  # nothing was left out: no note
    some = run_ok(area, "job", "ls", "--csv", "--limit", "3")
    assert some.stderr.strip() == "... 1,002 more; --limit 0 for all"


def test_streamed_json_is_the_same_text_as_before(area: Path) -> None:
    make_jobs(area, 3)
    out = run_ok(area, "job", "ls", "--json").stdout
    rows = json.loads(out)
    assert out == json.dumps(rows) + "\n"  # the shape and text of a one-shot json.dumps
    assert list(rows[0]) == ["id", "name", "state", "status", "attempt", "exit_code", "tags",
                             "created", "started", "ended", "message", "app", "site", "run",
                             "test", "item", "created_at", "started_at", "ended_at"]
    # run, test, item: added after the others; then the times in ISO 8601
    empty = run_ok(area, "job", "ls", "--json", "--state", "KILLED")
    assert empty.stdout == "[]\n"


def test_json_written_in_batches_is_the_text_of_one_json_dumps() -> None:
    """Across batch boundaries, for a terminal (indented) and for a pipe (one line)."""
    from megarun.cli import output

    class Screen(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    many = [{"id": n, "tags": {"k": [n, "v"]}} for n in range(2500)]
    for rows in (many, many[:1000], many[:1001], many[:1], []):
        for tty, indent in ((True, 2), (False, None)):
            screen = Screen(tty)
            old, sys.stdout = sys.stdout, screen
            try:
                written = output.print_json_rows(iter(rows))
            finally:
                sys.stdout = old
            assert written == len(rows)
            assert screen.getvalue() == json.dumps(rows, indent=indent) + "\n"


def peak_rss_mb(area: Path, *args: str) -> tuple[float, int]:
    """(peak RSS in MB, stdout bytes) of one `megarun ARGS` process, run by a fresh parent so
    that RUSAGE_CHILDREN holds only it."""
    code = ("import resource, subprocess, sys\n"
            "out = open(sys.argv[1], 'wb')\n"
            "rc = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.DEVNULL).returncode\n"
            "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    target = area.parent / "listing.json"
    result = subprocess.run([sys.executable, "-c", code, str(target), sys.executable, "-m",
                             "megarun", "--area", str(area), *args], capture_output=True,
                            text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    rc, kilobytes = (int(x) for x in result.stdout.split())
    assert rc == 0
    return kilobytes / 1024, target.stat().st_size


def test_json_of_every_job_streams_in_flat_memory(area: Path) -> None:
    count = 200_000
    make_jobs(area, count)
    small, _ = peak_rss_mb(area, "job", "ls", "--json", "--limit", "10")
    peak, size = peak_rss_mb(area, "job", "ls", "--json", "--limit", "0")
    assert size > 40 << 20  # ~250 bytes a job: the whole list was written
    with open(area.parent / "listing.json", encoding="utf-8") as handle:
        assert len(json.load(handle)) == count
    assert peak < small + 20, (peak, small)  # a list of 200,000 dicts took ~300 MB
    csv_peak, _ = peak_rss_mb(area, "job", "ls", "--csv", "--limit", "0")
    assert csv_peak < small + 20, (csv_peak, small)

"""Bounded memory on big data: `job logs` of a 400 MB log and `job ls --json --limit 0` of
1,000,000 jobs, each with the CLI process's peak RSS (target: < 150 MB), against plain tools
reading the same data in the same run (`cat` and `tail -c` of the log; a bare Python + sqlite3
loop writing the same rows as JSON).

Peak RSS is the kernel's high-water mark of the measured process: a fresh Python parent runs it
and reads `getrusage(RUSAGE_CHILDREN).ru_maxrss`, which then covers that one child only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import ENV, Row, megarun, new_area

_MEASURE = ("import resource, subprocess, sys, time\n"
            "start = time.perf_counter()\n"
            "with open(sys.argv[1], 'wb') as out:\n"
            "    rc = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.DEVNULL).returncode\n"
            "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
            " time.perf_counter() - start)\n")


def measure(argv: list[str], stdout: str = os.devnull) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one process running argv, its stdout sent to `stdout`."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, stdout, *argv], env=ENV,
                            capture_output=True, text=True, check=True)
    rc, kilobytes, seconds = result.stdout.split()
    if int(rc) != 0:
        raise RuntimeError(f"{argv[:6]}... exited {rc}")
    return int(kilobytes) / 1024, float(seconds)


def _cli(area: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "megarun", "--area", str(area), *args]


def bench_logs(root: Path, megabytes: int = 400) -> list[Row]:
    """`job logs` of a job whose stdout is `megabytes` MB of text lines."""
    area = new_area(root, "logs")
    line = "0123456789" * 7 + "x"  # 72 bytes with its newline
    megarun(area, "app", "add", "big", "--command",
            f"sh -c 'yes {line} | head -c {megabytes << 20}'")
    megarun(area, "job", "create", "--app", "big")
    megarun(area, "launch", "--quiet")
    shown = json.loads(megarun(area, "job", "show", "1", "--json").stdout)
    log = Path(shown["workdir"]) / "job.out"
    if log.stat().st_size != megabytes << 20:
        raise RuntimeError(f"bench log is {log.stat().st_size} bytes")
    plain, plain_s = measure(_cli(area, "job", "logs", "1"))
    cat, cat_s = measure(["cat", str(log)])
    as_json, json_s = measure(_cli(area, "job", "logs", "1", "--json"))
    tail, tail_s = measure(_cli(area, "job", "logs", "1", "--tail", "100"))
    tail_c, tail_c_s = measure(["tail", "-c", str(64 << 10), str(log)])
    return [
        Row(f"job logs of a {megabytes} MB log: peak RSS", plain, "MB", "< 150 MB", plain < 150,
            f"cat {cat:.1f} MB, {cat_s:.2f} s; megarun {plain_s:.2f} s",
            f"{plain_s / cat_s:.1f}x cat's time"),
        Row(f"job logs --json of the {megabytes} MB log: peak RSS", as_json, "MB", "< 150 MB",
            as_json < 150, f"tail -c 64K {tail_c:.1f} MB, {tail_c_s:.3f} s; megarun "
            f"{json_s:.2f} s", ""),
        Row(f"job logs --tail 100 of the {megabytes} MB log", tail_s, "s", "< 0.5 s",
            tail_s < 0.5, f"tail -c 64K {tail_c_s:.3f} s; peak RSS {tail:.1f} MB", ""),
    ]


_DUMP = ("import json, sqlite3, sys\n"
         "db = sqlite3.connect(sys.argv[1])\n"
         "out = sys.stdout\n"
         "cols = ('id', 'name', 'app_id', 'site_id', 'state', 'status', 'attempt', 'exit_code',"
         " 'tags', 'created', 'started', 'ended', 'message')\n"
         "out.write('[')\n"
         "for n, row in enumerate(db.execute('SELECT ' + ', '.join(cols) + ' FROM job ORDER BY id')):\n"
         "    out.write((', ' if n else '') + json.dumps(dict(zip(cols, row))))\n"
         "out.write(']\\n')\n")


def _timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def bench_listing(root: Path, count: int = 1_000_000) -> list[Row]:
    """`job ls` of `count` jobs, made by one `job create --count` (rows generated in SQL)."""
    from bench.archive import working_db

    area = new_area(root, "listing")
    megarun(area, "job", "create", "--app", "noop", "--count", str(count))
    listing = root / "listing.json"
    peak, seconds = measure(_cli(area, "job", "ls", "--json", "--limit", "0"), str(listing))
    with open(listing, encoding="utf-8") as handle:
        listed = sum(1 for _ in json.load(handle))
    base, base_s = measure([sys.executable, "-c", _DUMP, str(working_db(area))])
    default = min(_timed(lambda: megarun(area, "job", "ls")) for _ in range(3))
    version = min(_timed(lambda: megarun(None, "--version")) for _ in range(3))
    return [
        Row(f"job ls --json --limit 0, {count:,} jobs: peak RSS", peak, "MB", "< 150 MB",
            peak < 150 and listed == count,
            f"python+sqlite3 loop {base:.0f} MB, {base_s:.1f} s; megarun {seconds:.1f} s",
            f"{seconds / base_s:.1f}x the loop's time"),
        Row(f"job ls (default limit 1,000), {count:,} jobs", default, "s", "< 0.5 s",
            default < 0.5, f"--version {version:.3f} s", f"{default / version:.1f}x"),
    ]


_API_SCAN = ("import sys, megarun\n"
             "with megarun.open_area(sys.argv[1]) as area:\n"
             "    print(sum(1 for job in area.jobs() if job.started is None))\n")
_BARE_SCAN = ("import sqlite3, sys\n"
              "db = sqlite3.connect(sys.argv[1])\n"
              "print(sum(1 for row in db.execute('SELECT id, name, app_id, site_id, state, status,"
              " attempt, exit_code, tags, params, created, started, ended, message, run_id, test,"
              " item FROM job ORDER BY id') if row[11] is None))\n")


def bench_api(root: Path, count: int = 1_000_000) -> list[Row]:
    """`area.jobs()` of the Python API over `count` jobs: its process's peak RSS and time,
    against a bare Python + sqlite3 loop reading the same columns."""
    from bench.archive import working_db

    area = new_area(root, "api")
    megarun(area, "job", "create", "--app", "noop", "--count", str(count))
    counted = root / "api-count.txt"
    peak, seconds = measure([sys.executable, "-c", _API_SCAN, str(area)], str(counted))
    if int(counted.read_text()) != count:
        raise RuntimeError(f"area.jobs() yielded {counted.read_text().strip()} of {count}")
    base, base_s = measure([sys.executable, "-c", _BARE_SCAN, str(working_db(area))])
    return [Row(f"area.jobs() over {count:,} jobs: peak RSS", peak, "MB", "< 150 MB",
                peak < 150, f"python+sqlite3 loop {base:.0f} MB, {base_s:.1f} s; "
                f"area.jobs() {seconds:.1f} s", f"{seconds / base_s:.1f}x the loop's time")]

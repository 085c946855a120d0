"""Report bench: `megarun report` of a 10,000-item run (200 tests x 50 items that ran for real,
each with its logs), first in full and then again with nothing changed, and `sync` with the
report present; against `status --json` of the same run and `sync` without a report, measured
in the same run.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import Row, megarun, timed, write_suite

RUN = ("--target", "linux", "--runname", "r1")


def bench_report(root: Path, tests: int = 200, items: int = 50) -> list[Row]:
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else root
    scratch = Path(tempfile.mkdtemp(prefix="megarun-report-bench-", dir=shm))
    count = tests * items
    try:
        area = root / "report-suite"
        megarun(None, "init", str(area), "--keys", "os")
        config = area / "megarun.toml"  # a top-level key goes before the first [table]
        config.write_text(f'runroot = "{scratch / "runs"}"\n' + config.read_text())
        write_suite(area, tests, items)
        megarun(area, "site", "add", "ram", "--preset", "local", "--workdir", str(scratch / "s"))
        megarun(area, "run", *RUN, "--site", "ram", "--quiet")
        out = scratch / "report"
        status = statistics.median(timed(lambda: megarun(area, "status", *RUN, "--json"))
                                   for _ in range(3))
        sync_bare = statistics.median(timed(lambda: megarun(area, "sync")) for _ in range(3))
        full = timed(lambda: megarun(area, "report", "--out", str(out)))
        again = statistics.median(timed(lambda: megarun(area, "report", "--out", str(out)))
                                  for _ in range(3))
        megarun(area, "report")  # at the default place, which sync refreshes
        sync_with = statistics.median(timed(lambda: megarun(area, "sync")) for _ in range(3))
        pages = sum(1 for _ in out.rglob("*.html"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [
        Row(f"report of a {count}-item run ({pages} pages)", full, "s", "< 5 s", full < 5.0,
            f"status --json {status:.2f} s", f"{full / status:.1f}x"),
        Row("  report again, nothing changed", again, "s", "< 0.3 s", again < 0.3,
            f"status --json {status:.2f} s", f"{again / status:.2f}x"),
        Row("  sync with the report present, nothing changed", sync_with, "s",
            "refresh < 0.3 s", sync_with - sync_bare < 0.3,
            f"sync without a report {sync_bare:.2f} s", f"{sync_with / sync_bare:.2f}x"),
    ]

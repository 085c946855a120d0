"""Report bench: `megarun report` of a 10,000-item run (200 tests x 50 items that ran for real,
each with its logs), first in full and then again with nothing changed, and `sync` with the
report present; against `status --json` of the same run and `sync` without a report, measured
in the same run. The refresh `sync` does is also timed inside one process (its imports on top
of sync's own, and the build that finds nothing changed), where process start-up noise on a
loaded machine does not drown it.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import ENV, Row, megarun, ram_scratch, ram_suite, timed

RUN = ("--target", "linux", "--runname", "r1")

_REFRESH = (
    "import sys, time\n"
    "import megarun.archive.automation, megarun.cli.engine_deps\n"
    "from megarun.homehost.context import Context\n"
    "ctx = Context(area_override=sys.argv[1])\n"
    "ctx.db\n"
    "start = time.perf_counter()\n"
    "from megarun.report.html.build import refresh_report\n"
    "result = refresh_report(ctx.db, ctx.area)\n"
    "assert result is not None and not result.written, result\n"
    "print(time.perf_counter() - start)\n"
)


def _refresh_in_sync(area: Path) -> float:
    """Seconds the report's refresh adds to a sync process that has loaded its own modules."""
    out = subprocess.run([sys.executable, "-c", _REFRESH, str(area)], env=ENV,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def bench_report(root: Path, tests: int = 200, items: int = 50) -> list[Row]:
    scratch = ram_scratch(root, "report")
    count = tests * items
    try:
        area = ram_suite(root / "report-suite", scratch, tests, items)
        megarun(area, "run", *RUN, "--site", "ram", "--quiet")
        out = scratch / "report"
        status = statistics.median(timed(lambda: megarun(area, "status", *RUN, "--json"))
                                   for _ in range(3))
        sync_bare = statistics.median(timed(lambda: megarun(area, "sync")) for _ in range(5))
        full = timed(lambda: megarun(area, "report", "--out", str(out)))
        again = statistics.median(timed(lambda: megarun(area, "report", "--out", str(out)))
                                  for _ in range(5))
        megarun(area, "report")  # at the default place, which sync refreshes
        sync_with = statistics.median(timed(lambda: megarun(area, "sync")) for _ in range(5))
        inside = statistics.median(_refresh_in_sync(area) for _ in range(5))
        pages = sum(1 for _ in out.rglob("*.html"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [
        Row(f"report of a {count}-item run ({pages} pages)", full, "s", "< 5 s", full < 5.0,
            f"status --json {status:.2f} s", f"{full / status:.1f}x"),
        Row("  report again, nothing changed (a new process)", again, "s", "< 0.3 s",
            again < 0.3, f"status --json {status:.2f} s", f"{again / status:.2f}x"),
        Row("  sync with the report present, nothing changed", sync_with, "s", "(context)",
            True, f"sync without a report {sync_bare:.2f} s", f"{sync_with / sync_bare:.2f}x"),
        Row("  the refresh inside sync (its imports and checks)", inside, "s", "< 0.3 s",
            inside < 0.3, f"sync without a report {sync_bare:.2f} s",
            f"{inside / sync_bare:.2f}x"),
    ]

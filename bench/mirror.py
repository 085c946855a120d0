"""Mirror refresh of a 1,000,000-job working database (target: under 10 s), against a plain
file copy of the same database in the same command."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.archive import populate, working_db
from bench.run import Row, new_area, timed


def bench_mirror(root: Path, runs: int = 1_000, jobs_per_run: int = 1_000) -> list[Row]:
    from megarun.db.integrity import snapshot_problems
    from megarun.homehost import mirror

    area = new_area(root, "mirror")
    work = working_db(area)
    populate(work, runs, jobs_per_run, time.time() - 86400)
    target = area / ".megarun" / "megarun.db"
    copy = root / "plain-copy.db"
    plain = timed(lambda: shutil.copyfile(work, copy))
    refresh = timed(lambda: mirror.refresh(work, target, force=True))
    idle = timed(lambda: mirror.refresh(work, target))
    # the part of a refresh that verifies the copy before it is published (quick_check)
    check = timed(lambda: snapshot_problems(target))
    size = target.stat().st_size / 1e6
    jobs = runs * jobs_per_run
    return [
        Row(f"mirror refresh, {jobs:,} jobs ({size:,.0f} MB)", refresh, "s", "< 10 s",
            refresh < 10, f"cp {plain:.2f} s", f"{refresh / plain:.1f}x"),
        Row("mirror refresh, nothing changed", idle * 1000, "ms", "< 50 ms", idle < 0.05,
            f"cp {plain:.2f} s", f"{plain / max(idle, 1e-6):.0f}x faster"),
        Row(f"  of which the copy's check (quick_check), {jobs:,} jobs", check, "s",
            "< half the refresh", check < refresh / 2, f"refresh {refresh:.2f} s",
            f"{check / refresh:.0%}"),
    ]

"""Follow bench: one look of `status --follow` at a 10,000-item run (the counts, one aggregate
query) against reading the run's items as `status` does, and one look of `watch` at a
100,000-job tagged campaign against listing the same jobs, each in one process, medians of 15.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import ENV, Row, megarun, write_suite
from megarun.cli.follow import LOOK_SHARE, POLL_SECONDS

LOOKS = """
import json, statistics, sys, time
from megarun.campaign.query import JobFilter, count_by_place, iter_jobs
from megarun.homehost.context import Context
from megarun.sites.registry import ensure_default_site
from megarun.suites.run_prepare import prepare_run
from megarun.suites.run_report import item_counts, run_items
from megarun.suites.run_state import run_progress

def median(func):
    times = []
    for _ in range(15):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)

ctx = Context(area_override=sys.argv[1])
run_id = prepare_run(ctx.db, ctx.area, "linux", "r1", None, ensure_default_site(ctx)).run_id
flt = JobFilter(tags={"campaign": "bench"})
print(json.dumps({
    "run_look": median(lambda: run_progress(ctx.db, run_id)),
    "run_items": median(lambda: item_counts(run_items(ctx.db, run_id))),
    "watch_look": median(lambda: count_by_place(ctx.db, ctx.area, flt)),
    "watch_list": median(lambda: sum(1 for _ in iter_jobs(ctx.db, ctx.area, flt))),
}))
"""


def bench_follow(root: Path, tests: int = 200, items: int = 50, jobs: int = 100_000) -> list[Row]:
    area = root / "follow"
    megarun(None, "init", str(area), "--keys", "os")
    megarun(area, "app", "add", "noop", "--command", "true")
    write_suite(area, tests, items)
    megarun(area, "job", "create", "--app", "noop", "--count", str(jobs), "-t", "campaign=bench")
    out = subprocess.run([sys.executable, "-c", LOOKS, str(area)], env=ENV, capture_output=True,
                         text=True, check=True)
    t = json.loads(out.stdout)
    count = tests * items
    # the share of a core a follower takes: a look, then a wait (megarun.cli.follow.Pace.look)
    share = t["watch_look"] / max(POLL_SECONDS, LOOK_SHARE * t["watch_look"])
    return [
        Row(f"status --follow: one look at a {count}-item run", t["run_look"], "s",
            f"< {POLL_SECONDS / LOOK_SHARE:g} s (a look a second)",
            t["run_look"] < POLL_SECONDS / LOOK_SHARE, f"its items read {t['run_items']:.3f} s",
            f"{t['run_look'] / t['run_items']:.2f}x"),
        Row(f"watch: one look at a {jobs}-job tagged campaign", t["watch_look"], "s",
            "<= 0.5x listing them", t["watch_look"] <= 0.5 * t["watch_list"],
            f"listed {t['watch_list']:.3f} s", f"{t['watch_look'] / t['watch_list']:.2f}x"),
        Row("  watch's share of a core while following it", 100 * share, "%",
            f"<= {100 / LOOK_SHARE:g} %", share <= 1 / LOOK_SHARE + 1e-9),
    ]

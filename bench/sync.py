"""Sync bench: one idle `megarun sync` cycle over N local sites that have run jobs and N SSH
sites with nothing to do (no connection is opened for them), with the area's rules on
(`[archive] auto-reduce` and an `[[auto-migrate]]` rule that finds nothing to move), against
`megarun --version` measured in the same run.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import Row, megarun, new_area, timed

RULES = """
[archive]
auto-reduce = "30d"

[[auto-migrate]]
destination = "{dest}"
older-than = "30d"
"""


def build_area(root: Path, sites: int, jobs_per_site: int) -> Path:
    """An area with `sites` local sites that ran jobs and `sites` idle SSH sites."""
    area = new_area(root, "sync")
    dest = new_area(root, "sync-dest")
    with (area / "megarun.toml").open("a") as config:
        config.write(RULES.format(dest=dest))
    for n in range(sites):
        megarun(area, "site", "add", f"local{n}", "--preset", "local", "--workdir",
                str(root / "sync-sites" / f"local{n}"))
        megarun(area, "job", "create", "--app", "noop", "--site", f"local{n}", "--count",
                str(jobs_per_site))
        megarun(area, "launch", "--site", f"local{n}", "--quiet")
        # A port nothing listens on: an idle SSH site must cost no connection at all.
        megarun(area, "site", "add", f"ssh{n}", "--preset", "local", "--host",
                "bench@127.0.0.1:9", "--workdir", f"/nonexistent/megarun-bench/ssh{n}")
    return area


def bench_sync(root: Path, sites: int = 10, jobs_per_site: int = 20) -> list[Row]:
    area = build_area(root, sites, jobs_per_site)
    megarun(area, "sync")  # the first cycle takes in the launches' last events
    cycles = [timed(lambda: megarun(area, "sync")) for _ in range(7)]
    version = statistics.median(timed(lambda: megarun(None, "--version")) for _ in range(7))
    total = statistics.median(cycles)
    count = 2 * sites
    per_site = total / count
    return [
        Row(f"idle sync cycle, per site ({sites} local + {sites} SSH, rules on)", per_site, "s",
            "< 0.5 s", per_site < 0.5, f"--version {version:.3f} s",
            f"{per_site / version:.2f}x"),
        Row(f"idle sync cycle, whole ({count} sites)", total, "s", "(context)", True,
            f"--version {version:.3f} s", f"{total / version:.2f}x"),
    ]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        from bench.run import print_table

        print_table(bench_sync(Path(folder)))

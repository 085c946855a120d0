"""Elastic bench: the elastic decision and `queue backlog --json` on a 1,000,000-job backlog
(each under 0.2 s), and 10,000 no-op jobs on the real single-node Slurm run by `sync` cycles
alone against the same jobs with one hand-made `queue submit` of the same pilot (elastic at
least 0.8x its rate).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import Row, megarun, new_area, real_slurm, timed

#: The elastic settings of both benches' sites.
ELASTIC = ("--set", "elastic.max_batch_jobs=4", "--set", "elastic.nodes=1..8",
           "--set", "elastic.walltime=10m..2h", "--set", "elastic.backlog_per_node=64")


def bench_elastic(root: Path) -> list[Row]:
    return bench_decision(root) + bench_slurm(root)


def bench_decision(root: Path, batches: int = 10, per_batch: int = 100_000) -> list[Row]:
    """The decision in process (its SQL and the policy), and `queue backlog --json` as a
    command, against `--version` (the cost of starting megarun at all)."""
    from megarun.cli.engine_deps import site_scope
    from megarun.engine.elastic_run import backlog_reports, plan
    from megarun.homehost.context import Context

    area = new_area(root, "elastic-decision")
    megarun(area, "site", "add", "hpc", "--preset", "generic-slurm", "--workdir",
            str(root / "hpc-work"), *ELASTIC)
    for index in range(batches):
        walltime = ("--walltime", f"{10 + index}m")
        megarun(area, "job", "create", "--app", "noop", "--site", "hpc", "--count",
                str(per_batch), *walltime)
    jobs = batches * per_batch
    scope = site_scope(Context(area_override=str(area)), "hpc")
    decision = plan(scope)
    if not decision.submit:
        raise RuntimeError(f"elastic bench: the decision submits nothing: {decision}")
    decide = statistics.median(timed(lambda: plan(scope)) for _ in range(5))
    query = statistics.median(timed(lambda: backlog_reports(scope.db, [scope]))
                              for _ in range(5))
    report = statistics.median(timed(lambda: megarun(area, "queue", "backlog", "--json"))
                               for _ in range(5))
    listing = statistics.median(timed(lambda: megarun(area, "queue", "ls", "--json"))
                                for _ in range(5))
    shown = json.loads(megarun(area, "queue", "backlog", "--json").stdout)
    [hpc] = [site for site in shown["sites"] if site["site"] == "hpc"]
    if hpc["ready"] != jobs:
        raise RuntimeError(f"elastic bench: queue backlog counts {hpc['ready']} READY jobs")
    return [
        Row(f"elastic decision, {jobs:,}-job backlog (in process)", decide * 1000, "ms", "< 200 ms",
            decide < 0.2, f"{len(decision.submit)} pilot(s) of "
            f"{decision.submit[0].nodes} node(s) decided", ""),
        Row(f"queue backlog's queries, {jobs:,} jobs (in process)", query * 1000, "ms", "< 200 ms",
            query < 0.2),
        Row(f"queue backlog --json, {jobs:,} jobs (the whole command)", report, "s",
            "<= 1.2x an empty queue ls", report <= 1.2 * listing,
            f"queue ls --json (no batch job) {listing:.3f} s", f"{report / listing:.2f}x"),
    ]


def bench_slurm(root: Path, count: int = 10_000) -> list[Row]:
    """`count` no-op jobs from `job create` to all COMPLETED by `sync` cycles on the real
    Slurm: with the elastic policy alone, and with one hand-made pilot of the same shape."""
    with real_slurm(root, "elastic") as folder:
        if folder is None:
            return [Row("elastic Slurm bench NOT RUN: no Slurm", 0.0, "", ">= 0.8x", False)]
        hand = _sync_rate(root, folder, "hand", count, elastic=False)
        elastic = _sync_rate(root, folder, "elastic", count, elastic=True)
    return [Row(f"{count:,} no-op jobs on Slurm by sync cycles alone (elastic pilots)", elastic,
                "jobs/s", ">= 0.8x hand-made", elastic >= 0.8 * hand,
                f"one hand-made queue submit {hand:,.1f}/s", f"{elastic / hand:.2f}x")]


def _sync_rate(root: Path, folder: Path, name: str, count: int, elastic: bool) -> float:
    """Jobs per second from `job create` until a `sync` cycle sees every job COMPLETED."""
    area = new_area(root, f"elastic-{name}")
    settings = ("--set", "elastic.max_batch_jobs=1", "--set", "elastic.walltime=30",
                "--set", "elastic.idle_exit=2") if elastic else ()
    megarun(area, "site", "add", "hpc", "--preset", "generic-slurm", "--workdir",
            str(folder / name), *settings)
    started = time.perf_counter()
    megarun(area, "job", "create", "--app", "noop", "--site", "hpc", "--count", str(count))
    if not elastic:
        megarun(area, "queue", "submit", "--site", "hpc", "--nodes", "1", "--walltime", "30",
                "--idle-exit", "2")
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        megarun(area, "sync", check=False)
        states = json.loads(megarun(area, "job", "ls", "--by-state", "--json").stdout)
        if [(row["state"], row["count"]) for row in states] == [("COMPLETED", count)]:
            return count / (time.perf_counter() - started)
    raise RuntimeError(f"elastic bench ({name}): not every job completed: {states}")


if __name__ == "__main__":
    from bench.run import print_table

    print_table(bench_elastic(Path(tempfile.mkdtemp(prefix="megarun-bench-"))))

#!/usr/bin/env python3
"""megarun's benchmarks: one command, a table with targets and ratios against baselines run in
the same process.

    python bench/run.py                 # everything (a few minutes)
    python bench/run.py launch version  # some of: version help create query launch agent suite memory
                                        #          ssh batch archive sync mirror logs listing appstale elastic
                                        #          follow report report_campaign

Each benchmark makes its own area in a temporary folder and runs the real `megarun` command.
"""

from __future__ import annotations

import argparse
import compileall
import importlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@dataclass
class Row:
    name: str
    value: float
    unit: str
    target: str
    ok: bool
    baseline: str = ""
    ratio: str = ""


def megarun(area: Path | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = [sys.executable, "-m", "megarun"] + (["--area", str(area)] if area else [])
    return subprocess.run([*prefix, *args], capture_output=True, text=True, env=ENV, check=check)


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def new_area(root: Path, name: str) -> Path:
    area = root / name
    megarun(None, "init", str(area))
    megarun(area, "app", "add", "noop", "--command", "true")
    return area


def bench_version(root: Path) -> list[Row]:
    runs = [timed(lambda: megarun(None, "--version")) for _ in range(7)]
    base = [timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
            for _ in range(7)]
    value, baseline = statistics.median(runs), statistics.median(base)
    return [Row("megarun --version", value, "s", "< 0.25 s", value < 0.25,
                f"python -c pass {baseline:.3f} s", f"{value / baseline:.1f}x")]


def cpu_timed(func: Callable[[], object]) -> float:
    """CPU seconds (user + system) of the child processes `func` ran: steadier than wall time
    on a loaded machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    func()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_help(root: Path) -> list[Row]:
    """`megarun --help` lists every command from the command table, no command module loaded."""
    def help_page() -> object:
        return megarun(None, "--help")

    def bare() -> object:
        return subprocess.run([sys.executable, "-c", "pass"], check=True)

    runs = [timed(help_page) for _ in range(7)]
    base = [timed(bare) for _ in range(7)]
    cpu = statistics.median(cpu_timed(help_page) for _ in range(7))
    cpu_base = statistics.median(cpu_timed(bare) for _ in range(7))
    value, baseline = statistics.median(runs), statistics.median(base)
    return [Row("megarun --help", value, "s", "< 0.25 s", value < 0.25,
                f"python -c pass {baseline:.3f} s", f"{value / baseline:.1f}x"),
            Row("megarun --help, CPU time", cpu, "s", "(context)", True,
                f"python -c pass {cpu_base:.3f} s", f"{cpu / cpu_base:.1f}x")]


def bench_create(root: Path) -> list[Row]:
    area = new_area(root, "create")
    value = timed(lambda: megarun(area, "job", "create", "--app", "noop", "--count", "100000"))
    return [Row("job create --count 100000", value, "s", "< 3 s", value < 3.0)]


def bench_query(root: Path) -> list[Row]:
    area = new_area(root, "query")
    for _ in range(10):
        megarun(area, "job", "create", "--app", "noop", "--count", "100000")
    # Mark a realistic sprinkling of jobs as ended, some failed, straight in SQL.
    import sqlite3

    db = sqlite3.connect(area / ".megarun" / "work.db")
    db.execute("UPDATE job SET state='COMPLETED', status='PASS' WHERE id % 3 = 0")
    db.execute("UPDATE job SET state='COMPLETED', status='FAIL' WHERE id % 1000 = 1")
    db.commit()
    db.close()
    failed = statistics.median(timed(lambda: megarun(area, "job", "ls", "--state", "FAILED",
                                                     "--limit", "20")) for _ in range(5))
    by_state = statistics.median(timed(lambda: megarun(area, "job", "ls", "--by-state"))
                                 for _ in range(5))
    version = statistics.median(timed(lambda: megarun(None, "--version")) for _ in range(5))
    return [
        Row("job ls --state FAILED --limit 20 (1M jobs)", failed, "s", "< 0.3 s", failed < 0.3,
            f"--version {version:.3f} s", f"{failed / version:.1f}x"),
        Row("job ls --by-state (1M jobs)", by_state, "s", "< 1 s", by_state < 1.0),
    ]


def create_rate(folder: Path, count: int = 500) -> float:
    """Job dirs with two log files created per second in `folder` (the file system's share)."""
    probe = Path(tempfile.mkdtemp(prefix="fs-probe-", dir=folder))
    start = time.perf_counter()
    for n in range(count):
        job = probe / str(n)
        job.mkdir()
        (job / "job.out").touch()
        (job / "job.err").touch()
    rate = count / (time.perf_counter() - start)
    shutil.rmtree(probe)
    return rate


def launch_rate(area: Path, site: str, count: int) -> tuple[float, int]:
    megarun(area, "job", "create", "--app", "noop", "--count", str(count), "--site", site)
    result: dict[str, object] = {}

    def run() -> None:
        out = megarun(area, "launch", "--site", site, "--json")
        result.update(json.loads(out.stdout))

    elapsed = timed(run)
    counts = megarun(area, "job", "ls", "--site", site, "--by-state", "--json")
    passed = sum(c["count"] for c in json.loads(counts.stdout) if c["status"] == "PASS")
    return int(str(result.get("done", 0))) / elapsed, passed


def xargs_rate(count: int) -> float:
    seq = subprocess.Popen(["seq", str(count)], stdout=subprocess.PIPE)
    elapsed = timed(lambda: subprocess.run(["xargs", "-P2", "-n1", "true"], stdin=seq.stdout,
                                           check=True))
    seq.wait()
    return count / elapsed


def bench_launch(root: Path, count: int = 10_000) -> list[Row]:
    """The launcher's own speed (job dirs on tmpfs), then the same on the bench disk.

    The xargs baseline touches no file; megarun creates a dir and two log files per job. On a
    disk whose metadata operations are slow, that alone can cap the rate, so the row held
    against the target puts the site's work dir on tmpfs (/dev/shm) and the second row shows
    the disk case with the disk's own create rate measured in the same run. The database is on
    the bench disk in both.
    """
    area = new_area(root, "launch")
    shm = Path("/dev/shm")
    rows = []
    base_rate = xargs_rate(count)
    if shm.is_dir():
        workdir = Path(tempfile.mkdtemp(prefix="megarun-bench-", dir=shm))
        try:
            megarun(area, "site", "add", "ram", "--preset", "local", "--workdir", str(workdir))
            rate, passed = launch_rate(area, "ram", count)
            fs = create_rate(workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        rows.append(Row(f"launch {count} no-op jobs, job dirs on tmpfs", rate, "jobs/s",
                        ">= 1000 and >= 0.7x xargs",
                        rate >= 1000 and rate >= 0.7 * base_rate and passed == count,
                        f"xargs -P2 -n1 true {base_rate:,.0f}/s; tmpfs {fs:,.0f} dirs/s",
                        f"{rate / base_rate:.2f}x"))
    rate, passed = launch_rate(area, "local", count)
    fs = create_rate(root)
    rows.append(Row(f"launch {count} no-op jobs, job dirs on the bench disk", rate, "jobs/s",
                    "(context: disk-bound)", passed == count,
                    f"xargs {base_rate:,.0f}/s; disk {fs:,.0f} dirs/s", f"{rate / base_rate:.2f}x"))
    return rows


def bench_agent(root: Path, count: int = 10_000) -> list[Row]:
    """The agent alone on prepared bundles (no launcher, no database), job dirs on tmpfs."""
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else root
    workdir = Path(tempfile.mkdtemp(prefix="megarun-agent-bench-", dir=shm))
    try:
        queue = workdir / "spool" / "queue"
        queue.mkdir(parents=True)
        for first in range(1, count + 1, 2000):
            lines = [json.dumps({"id": i, "attempt": 1, "workdir": f"{workdir}/jobs/{i // 1000}/{i}",
                                 "steps": [{"name": "job", "cmd": "true"}], "cpus": 1})
                     for i in range(first, min(first + 2000, count + 1))]
            (queue / f"{first:08d}.jsonl").write_text("\n".join(lines) + "\n")
        argv = [sys.executable, "-m", "megarun.agent", "run", "--workdir", str(workdir),
                "--agent-id", "bench", "--cpus", "2", "--idle-exit", "0.01"]
        elapsed = timed(lambda: subprocess.run(argv, env=ENV, check=True,
                                               stderr=subprocess.DEVNULL))
        events = (workdir / "spool" / "events" / "bench.jsonl").read_text().splitlines()
        passed = sum(1 for line in events if '"ev":"finished"' in line and '"rc":0,' in line)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rate, base_rate = count / elapsed, xargs_rate(count)
    return [Row(f"agent alone, {count} no-op jobs on tmpfs", rate, "jobs/s", "(context)",
                passed == count, f"xargs -P2 -n1 true {base_rate:,.0f}/s",
                f"{rate / base_rate:.2f}x")]


def write_suite(area: Path, tests: int, items: int) -> None:
    values = ", ".join(str(n) for n in range(items))
    for t in range(tests):
        folder = area / "tests" / f"t{t:03d}"
        folder.mkdir(parents=True)
        (folder / "test.toml").write_text(f'steps = ["true"]\n[items]\nN = [{values}]\n')


def ram_scratch(root: Path, name: str) -> Path:
    """A throwaway folder on tmpfs when there is one (else under `root`) for run paths."""
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else root
    return Path(tempfile.mkdtemp(prefix=f"megarun-{name}-bench-", dir=shm))


def ram_suite(area: Path, scratch: Path, tests: int, items: int) -> Path:
    """A suite area of `tests` x `items` whose run paths and site `ram` live in `scratch`."""
    megarun(None, "init", str(area), "--keys", "os")
    config = area / "megarun.toml"  # a top-level key goes before the first [table]
    config.write_text(f'runroot = "{scratch / "runs"}"\n' + config.read_text())
    write_suite(area, tests, items)
    megarun(area, "site", "add", "ram", "--preset", "local", "--workdir", str(scratch / "s1"))
    return area


def bench_suite(root: Path, tests: int = 200, items: int = 50) -> list[Row]:
    """A 200 x 50 suite: expansion, end to end against job create + launch, and status."""
    scratch = ram_scratch(root, "suite")
    count = tests * items
    try:
        suite = ram_suite(root / "suite", scratch, tests, items)
        config = suite / "megarun.toml"
        expand = _time_in_process(suite, "linux", "expand")
        megarun(suite, "clean", "--target", "linux", "--runname", "expand")
        run = timed(lambda: megarun(suite, "run", "--target", "linux", "--runname", "r1",
                                    "--site", "ram", "--quiet"))
        status = statistics.median(timed(lambda: megarun(
            suite, "status", "--target", "linux", "--runname", "r1", "--json")) for _ in range(3))
        check = statistics.median(_stale_check_in_process(suite, "linux", "r1") for _ in range(3))
        without, with_check = _status_paths_in_process(suite, "linux", "r1")
        config.write_text(config.read_text() + '\n[default]\nBENCH_STALE = "1"\n')
        stale = statistics.median(timed(lambda: megarun(
            suite, "status", "--target", "linux", "--runname", "r1", "--json")) for _ in range(3))
        shown = json.loads(megarun(suite, "status", "--target", "linux", "--runname", "r1",
                                   "--json").stdout)
        assert {i["state"] for i in shown["items"]} == {"STALE"}, "every item should read STALE"
        plain = new_area(root, "plain")
        megarun(plain, "site", "add", "ram", "--preset", "local", "--workdir", str(scratch / "s2"))
        baseline = timed(lambda: (megarun(plain, "job", "create", "--app", "noop", "--count",
                                          str(count), "--site", "ram"),
                                  megarun(plain, "launch", "--site", "ram", "--quiet")))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [
        Row(f"suite {tests}x{items}: expansion into jobs", expand, "s", "< 2 s", expand < 2.0),
        Row(f"suite {tests}x{items}: run end to end", run, "s", "<= 1.3x baseline",
            run <= 1.3 * baseline, f"job create + launch {baseline:.1f} s",
            f"{run / baseline:.2f}x"),
        Row(f"status of the {count}-job run", status, "s", "< 0.5 s", status < 0.5),
        Row(f"  its STALE check ({tests} test.toml files unchanged)", check, "s",
            "<= 0.25x status", check <= 0.25 * status, f"status {status:.2f} s",
            f"{check / status:.2f}x"),
        Row("  status's reading, in one process, with the STALE check", with_check, "s",
            "<= 1.5x without", with_check <= 1.5 * without, f"without: {without:.3f} s",
            f"{with_check / without:.2f}x"),
        Row(f"status of the {count}-job run, every item STALE", stale, "s", "< 0.5 s",
            stale < 0.5, f"status {status:.2f} s", f"{stale / status:.2f}x"),
    ]


def _time_in_process(area: Path, target: str, runname: str) -> float:
    """Seconds `prepare_run` takes (tests x items into jobs, one transaction), in a subprocess."""
    code = ("import sys, time\n"
            "from megarun.homehost.context import Context\n"
            "from megarun.suites.run_prepare import prepare_run\n"
            "from megarun.sites.registry import get_site\n"
            "ctx = Context(area_override=sys.argv[1])\n"
            "site = get_site(ctx, 'ram')\n"
            "start = time.perf_counter()\n"
            "setup = prepare_run(ctx.db, ctx.area, sys.argv[2], sys.argv[3], None, site)\n"
            "assert setup.created == setup.jobs, setup\n"
            "print(time.perf_counter() - start)\n")
    out = subprocess.run([sys.executable, "-c", code, str(area), target, runname], env=ENV,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def _stale_check_in_process(area: Path, target: str, runname: str) -> float:
    """Seconds `status` spends telling STALE results (every test.toml of the run read and its
    bytes hashed, the run's stored hashes compared), in a subprocess."""
    code = ("import sys, time\n"
            "from megarun.homehost.context import Context\n"
            "from megarun.suites.run_prepare import get_run\n"
            "from megarun.suites.stale import read_area_definitions, stale_in_run\n"
            "ctx = Context(area_override=sys.argv[1])\n"
            "run = get_run(ctx.db, sys.argv[2], sys.argv[3])\n"
            "start = time.perf_counter()\n"
            "area = read_area_definitions(ctx.area.tests_dir, ctx.area.config.raw,\n"
            "                             ctx.area.config.keys, ctx.area.root / 'megarun.toml')\n"
            "stale_in_run(ctx.db, int(run.id), sys.argv[2], area)\n"
            "print(time.perf_counter() - start)\n")
    out = subprocess.run([sys.executable, "-c", code, str(area), target, runname], env=ENV,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def _status_paths_in_process(area: Path, target: str, runname: str) -> tuple[float, float]:
    """Medians of `status`'s reading of a run without and with the STALE check (the run's
    items read and rolled up; the check first), alternated 15 times in one process."""
    code = ("import statistics, sys, time\n"
            "from megarun.homehost.context import Context\n"
            "from megarun.suites.run_prepare import get_run\n"
            "from megarun.suites.run_report import rollup, run_items\n"
            "from megarun.suites.stale import read_area_definitions, stale_in_run\n"
            "ctx = Context(area_override=sys.argv[1])\n"
            "run = get_run(ctx.db, sys.argv[2], sys.argv[3])\n"
            "old, new = [], []\n"
            "for _ in range(15):\n"
            "    start = time.perf_counter()\n"
            "    rollup(run_items(ctx.db, int(run.id)))\n"
            "    old.append(time.perf_counter() - start)\n"
            "    start = time.perf_counter()\n"
            "    area = read_area_definitions(ctx.area.tests_dir, ctx.area.config.raw,\n"
            "                                 ctx.area.config.keys, ctx.area.root / 'megarun.toml')\n"
            "    stale = stale_in_run(ctx.db, int(run.id), sys.argv[2], area)\n"
            "    rollup(run_items(ctx.db, int(run.id), None, stale))\n"
            "    new.append(time.perf_counter() - start)\n"
            "print(statistics.median(old), statistics.median(new))\n")
    out = subprocess.run([sys.executable, "-c", code, str(area), target, runname], env=ENV,
                         capture_output=True, text=True, check=True)
    without, with_check = out.stdout.split()
    return float(without), float(with_check)


def bench_memory(root: Path, count: int = 100_000) -> list[Row]:
    area = new_area(root, "memory")
    megarun(area, "job", "create", "--app", "noop", "--count", str(count))
    process = subprocess.Popen([sys.executable, "-m", "megarun", "--area", str(area), "launch",
                                "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=ENV)
    peak = [0]

    def sample() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                break
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    process.wait()
    sampler.join()
    mb = peak[0] / 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [Row(f"launcher peak RSS, {count} queued jobs", mb, "MB", "< 150 MB", mb < 150,
                f"this bench process {own:.0f} MB", f"{mb / own:.1f}x")]


def bench_ssh(root: Path, count: int = 10_000) -> list[Row]:
    """10,000 no-op jobs through an SSH site on a loopback sshd, against a local site.

    Both sites keep their job dirs on tmpfs so that the rows compare transport, not disks;
    the sshd is the test suite's own (tests/sshd.py), started for this bench.
    """
    sys.path.insert(0, str(REPO))
    from tests.sshd import ClientKey, SshdUnavailable, SshServer, ensure_openssh

    try:
        ensure_openssh()
        server = SshServer(root / "sshd", ClientKey.create(root / "client"))
        server.start()
    except SshdUnavailable as exc:
        return [Row(f"SSH bench NOT RUN: {exc}", 0.0, "", ">= 500 jobs/s", False)]
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else root
    folder = Path(tempfile.mkdtemp(prefix="megarun-bench-ssh-", dir=shm))
    try:
        area = new_area(root, "ssh")
        megarun(area, "site", "add", "ram", "--preset", "local", "--workdir", str(folder / "local"))
        megarun(area, "site", "add", "ssh", "--preset", "local", "--host", server.spec,
                "--workdir", str(folder / "remote"), "--identity", str(server.client_key.path),
                "--known-hosts", str(server.known_hosts))
        megarun(area, "site", "check", "ssh", "--install-agent")
        local_rate, _ = launch_rate(area, "ram", count)
        rate, passed = launch_rate(area, "ssh", count)
        remote_job = _last_job(area, "ssh")
        local_job = _last_job(area, "ram")
        logs = min(timed(lambda: megarun(area, "job", "logs", remote_job)) for _ in range(3))
        local_logs = min(timed(lambda: megarun(area, "job", "logs", local_job)) for _ in range(3))
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return [
        Row(f"launch {count} no-op jobs via an SSH site (loopback)", rate, "jobs/s",
            ">= 500 jobs/s", rate >= 500 and passed == count,
            f"local site {local_rate:,.0f}/s", f"{rate / local_rate:.2f}x"),
        Row("job logs of a finished remote job", logs, "s", "< 1 s", logs < 1.0,
            f"local job {local_logs:.3f} s", f"{logs / local_logs:.2f}x"),
    ]


def bench_batch(root: Path, pilot_jobs: int = 2_000, direct_jobs: int = 200,
                srun_jobs: int = 500) -> list[Row]:
    """No-op jobs on the real single-node Slurm the tests use (tests/slurmd.py): one pilot
    allocation packing them, against one sbatch per job (direct mode), and against one `srun`
    per job inside one allocation. Direct and srun run a sample (their cost per job is the
    scheduler's, the same for every job): rows compare jobs per second."""
    with real_slurm(root, "batch") as folder:
        if folder is None:
            return [Row("batch bench NOT RUN: no Slurm", 0.0, "", ">= 10x direct", False)]
        area = new_area(root, "batch")
        megarun(area, "site", "add", "hpc", "--preset", "generic-slurm", "--workdir",
                str(folder / "hpc"))
        pilot = _batch_rate(area, pilot_jobs, "--nodes", "1", "--walltime", "30",
                            "--idle-exit", "2")
        direct = _batch_rate(area, direct_jobs, "--mode", "direct", walltime="1")
        srun = _srun_rate(folder, srun_jobs)
    return [
        Row(f"{pilot_jobs} no-op jobs in one Slurm pilot (submit to done)", pilot, "jobs/s",
            ">= 10x direct", pilot >= 10 * direct,
            f"direct ({direct_jobs} sbatch) {direct:,.1f}/s", f"{pilot / direct:.1f}x"),
        Row("the same pilot, against one srun per job in one allocation", pilot, "jobs/s",
            ">= 5x srun", pilot >= 5 * srun, f"srun x{srun_jobs} {srun:,.1f}/s",
            f"{pilot / srun:.1f}x"),
    ]


@contextmanager
def real_slurm(root: Path, name: str) -> Iterator[Path | None]:
    """The test suite's single-node Slurm (tests/slurmd.py), held while the block runs, and a
    folder for job dirs on tmpfs; None (and a note on stderr) when there is no Slurm."""
    sys.path.insert(0, str(REPO))
    from tests.slurmd import SlurmUnavailable, start_slurm

    try:
        cluster = start_slurm()
    except SlurmUnavailable as exc:
        print(f"{name} bench: no Slurm: {exc}", file=sys.stderr)
        yield None
        return
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else root
    folder = Path(tempfile.mkdtemp(prefix=f"megarun-bench-{name}-", dir=shm))
    try:
        yield folder
    finally:
        cluster.release()
        shutil.rmtree(folder, ignore_errors=True)


def _batch_rate(area: Path, count: int, *submit: str, walltime: str = "") -> float:
    """Jobs per second from `queue submit` until `launch` saw every job PASS."""
    extra = ("--walltime", walltime) if walltime else ()
    megarun(area, "job", "create", "--app", "noop", "--site", "hpc", "--count", str(count),
            *extra)
    started = time.perf_counter()
    megarun(area, "queue", "submit", "--site", "hpc", *submit)
    summary = json.loads(megarun(area, "launch", "--site", "hpc", "--json").stdout)
    elapsed = time.perf_counter() - started
    if summary["by_status"] != {"PASS": count}:
        raise RuntimeError(f"batch bench: not every job passed: {summary}")
    return count / elapsed


def _srun_rate(folder: Path, count: int) -> float:
    """One allocation running `srun true` `count` times; timed inside the allocation."""
    script = folder / "srun.sh"
    out = folder / "srun.out"
    script.write_text("#!/bin/sh\nstart=$(date +%s.%N)\n"
                      f"for i in $(seq {count}); do srun -N1 -n1 true || exit 1; done\n"
                      'echo "$start $(date +%s.%N)"\n')
    subprocess.run(["sbatch", "--wait", "-N", "1", "-D", str(folder), "-o", str(out),
                    str(script)], check=True, capture_output=True, timeout=3600)
    start, end = (float(x) for x in out.read_text().split()[-2:])
    return count / (end - start)


def _last_job(area: Path, site: str) -> str:
    rows = json.loads(megarun(area, "job", "ls", "--site", site, "--json", "--limit", "0").stdout)
    return str(max(int(r["id"]) for r in rows))


def bench_appstale(root: Path, count: int = 100_000) -> list[Row]:
    """`app add --replace` of an app whose 100,000 COMPLETED jobs become STALE, against the
    same change of an app with no job and a bare SQL UPDATE of the same rows."""
    import sqlite3

    area = new_area(root, "appstale")
    megarun(area, "app", "add", "empty", "--command", "true")
    megarun(area, "job", "create", "--app", "noop", "--count", str(count))
    db = area / ".megarun" / "work.db"
    with sqlite3.connect(db) as conn:  # a launch of 100,000 jobs is not what is measured here
        conn.execute("UPDATE job SET state = 'COMPLETED', status = 'PASS'")
    copy = root / "appstale-copy.db"
    with sqlite3.connect(db) as source, sqlite3.connect(copy) as target:
        source.backup(target)  # the WAL's pages too, which a file copy could miss
    with sqlite3.connect(copy) as conn:
        start = time.perf_counter()
        conn.execute("UPDATE job SET state = 'STALE' WHERE state = 'COMPLETED'")
        conn.commit()
        plain = time.perf_counter() - start
    base = timed(lambda: megarun(area, "app", "add", "empty", "--command", "true # 2",
                                 "--replace"))
    value = timed(lambda: megarun(area, "app", "add", "noop", "--command", "true # 2",
                                  "--replace"))
    stale = megarun(area, "job", "ls", "--by-state", "--json").stdout
    done = json.loads(stale) == [{"state": "STALE", "status": "PASS", "count": count}]
    return [Row(f"app add --replace: {count:,} COMPLETED jobs to STALE, with events", value, "s",
                "< 2 s", value < 2.0 and done, f"app with no job {base:.3f} s; bare UPDATE "
                f"{plain:.3f} s", f"{value / base:.1f}x")]


def elsewhere(module: str, function: str) -> Callable[[Path], list[Row]]:
    """The benchmark `function` of bench/<module>.py, imported only when it runs."""
    def run(root: Path) -> list[Row]:
        sys.path.insert(0, str(REPO))
        bench: Callable[[Path], list[Row]] = getattr(
            importlib.import_module(f"bench.{module}"), function)
        return bench(root)

    return run


#: Benchmarks kept in modules of their own: name -> (module, function); what each measures.
ELSEWHERE = {
    # archive reduce and restore of 1,000,000 job rows (bench/archive.py).
    "archive": ("archive", "bench_archive"),
    # An idle sync cycle over local and SSH sites, rules on (bench/sync.py).
    "sync": ("sync", "bench_sync"),
    # Mirror refresh of a 1,000,000-job working database (bench/mirror.py).
    "mirror": ("mirror", "bench_mirror"),
    # `job logs` of a 400 MB log: peak RSS and time (bench/bounded.py).
    "logs": ("bounded", "bench_logs"),
    # `job ls --json --limit 0` of 1,000,000 jobs: peak RSS (bench/bounded.py).
    "listing": ("bounded", "bench_listing"),
    # The Python API's `area.jobs()` over 1,000,000 jobs: peak RSS (bench/bounded.py).
    "api": ("bounded", "bench_api"),
    # One look of `status --follow` and of `watch`, against reading the rows (bench/follow.py).
    "follow": ("follow", "bench_follow"),
    # `megarun report` of a 1,000,000-job campaign: time and peak RSS (bench/report_campaign.py).
    "report_campaign": ("report_campaign", "bench_report_campaign"),
    # The elastic decision and `queue backlog` on 1,000,000 jobs; elastic pilots on the real
    # Slurm against a hand-made one (bench/elastic.py).
    "elastic": ("elastic", "bench_elastic"),
    # `megarun report` of a 10,000-item run, again unchanged, and by sync (bench/report.py).
    "report": ("report", "bench_report"),
}


BENCHES: dict[str, Callable[[Path], list[Row]]] = {
    "version": bench_version, "help": bench_help, "create": bench_create, "query": bench_query,
    "launch": bench_launch, "agent": bench_agent, "suite": bench_suite, "memory": bench_memory,
    "ssh": bench_ssh, "batch": bench_batch, "appstale": bench_appstale,
    **{name: elsewhere(module, function) for name, (module, function) in ELSEWHERE.items()}}


def print_table(rows: list[Row]) -> None:
    header = ("benchmark", "value", "target", "baseline (same run)", "ratio", "ok")
    lines = [(r.name, f"{r.value:,.3f} {r.unit}" if r.value < 100 else f"{r.value:,.0f} {r.unit}",
              r.target, r.baseline, r.ratio, "yes" if r.ok else "NO") for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=False)]
    for line in (header, *lines):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=False)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"some of: {' '.join(BENCHES)} (default: all)")
    parser.add_argument("--dir", type=Path, default=REPO / ".bench",
                        help="where the throwaway areas go (default: .bench/ in the checkout; "
                             "/tmp on some machines creates files far slower than other dirs)")
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark {sorted(unknown)[0]!r}; choose from {', '.join(BENCHES)}")
    args.dir.mkdir(parents=True, exist_ok=True)
    # Byte-compiled as `pip install .` leaves megarun: a checkout run with
    # PYTHONDONTWRITEBYTECODE would compile every module again in every process measured.
    compileall.compile_dir(REPO / "megarun", quiet=1)
    root = Path(tempfile.mkdtemp(prefix="megarun-bench-", dir=args.dir))
    rows: list[Row] = []
    try:
        for name in args.names or list(BENCHES):
            rows.extend(BENCHES[name](root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(rows)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

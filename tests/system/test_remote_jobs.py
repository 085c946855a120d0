"""Jobs on SSH sites against the real sshd: launch, sync, logs, kill, faults, round trips."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from megarun.homehost.areas import init_area
from tests.component.agent.harness import OLDEST, find_oldest_python
from tests.conftest import REPO, megarun_process
from tests.sshd import SshServer


@pytest.fixture
def remote_area(tmp_path: Path, sshd: SshServer, home: Path, known_hosts: Path) -> Path:
    """An area with an SSH site `remote` on the loopback sshd and an `echo` app."""
    root = new_area(tmp_path)
    add_ssh_site(root, home, "remote", sshd, tmp_path / "remote-work", known_hosts)
    ok(root, home, "app", "add", "echo", "--command", "echo out {{ msg }}; echo err {{ msg }} >&2")
    return root


def new_area(tmp_path: Path) -> Path:
    root = tmp_path / "area"
    init_area(root, keys=["os"])
    return root


def add_ssh_site(area: Path, home: Path, name: str, server: SshServer, workdir: Path,
                 known_hosts: Path | None, *extra: str) -> None:
    known = ("--known-hosts", str(known_hosts)) if known_hosts else ()
    ok(area, home, "site", "add", name, "--preset", "local", "--host", server.spec,
       "--workdir", str(workdir), "--identity", str(server.client_key.path), *known, *extra)


def cli(area: Path, home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return megarun_process(area, *args, env={"HOME": str(home)}, timeout=timeout)


def ok(area: Path, home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = cli(area, home, *args, timeout=timeout)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def jobs(area: Path, home: Path) -> list[dict[str, object]]:
    return list(json.loads(ok(area, home, "job", "ls", "--json").stdout))


def test_jobs_run_on_the_ssh_site_and_logs_come_back(remote_area: Path, home: Path,
                                                     tmp_path: Path) -> None:
    ok(remote_area, home, "job", "create", "--app", "echo", "-p", "msg=a b;c", "--site",
       "remote", "--count", "12")
    summary = json.loads(ok(remote_area, home, "launch", "--site", "remote", "--json").stdout)
    assert summary["by_status"] == {"PASS": 12}, summary
    rows = jobs(remote_area, home)
    assert {r["state"] for r in rows} == {"COMPLETED"}
    first = rows[0]
    shown = json.loads(ok(remote_area, home, "job", "show", str(first["id"]), "--json").stdout)
    workdir = Path(str(shown["workdir"]))
    assert workdir.is_relative_to(tmp_path / "remote-work" / "jobs")
    assert (workdir / "job.out").read_text() == "out a b;c\n"
    logs = ok(remote_area, home, "job", "logs", str(first["id"])).stdout
    assert "out a b;c" in logs and "err a b;c" in logs
    # The mirror holds the events; nothing is left queued or claimed on either side.
    mirror = remote_area / ".megarun" / "sites" / "remote" / "spool"
    assert not list((mirror / "outbox").glob("*.jsonl"))
    assert not list((mirror / "sent").glob("*.jsonl"))
    assert not list((tmp_path / "remote-work" / "spool" / "queue").glob("*.jsonl"))


def hidden_run(hide: Path, argv: list[str], env: dict[str, str],
               timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run argv in a private mount namespace where `hide` is an empty tmpfs.

    The sshd still sees the real files, so whatever the command shows from `hide` came over SSH.
    """
    script = 'mount -t tmpfs megarun-hidden "$1" && shift && exec "$@"'
    return subprocess.run(["unshare", "-m", "--", "sh", "-c", script, "sh", str(hide), *argv],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_nothing_of_the_site_is_read_locally(remote_area: Path, home: Path,
                                             tmp_path: Path) -> None:
    """launch, logs and show work while the site's work dir is invisible to megarun."""
    remote_work = tmp_path / "remote-work"
    remote_work.mkdir()
    (remote_work / "marker").write_text("here")
    env = {"HOME": str(home)}
    probe = hidden_run(remote_work, ["ls", "-A", str(remote_work)], env)
    if probe.returncode != 0:
        pytest.fail(f"cannot hide a directory with a mount namespace: {probe.stderr}")
    assert probe.stdout == ""  # proves the hiding works
    megarun = [sys.executable, "-m", "megarun", "--area", str(remote_area)]
    ok(remote_area, home, "job", "create", "--app", "echo", "-p", "msg=hidden", "--site",
       "remote", "--count", "3")
    launched = hidden_run(remote_work, [*megarun, "launch", "--site", "remote", "--json"], env)
    assert launched.returncode == 0, launched.stderr
    assert json.loads(launched.stdout)["by_status"] == {"PASS": 3}
    job_id = str(jobs(remote_area, home)[0]["id"])
    logs = hidden_run(remote_work, [*megarun, "job", "logs", job_id, "--json"], env)
    assert logs.returncode == 0, logs.stderr
    texts = {name: log["text"] for name, log in json.loads(logs.stdout).items()}
    assert texts == {"job.out": "out hidden\n", "job.err": "err hidden\n"}


def test_jobs_run_on_a_second_host(tmp_path: Path, sshd_netns: SshServer, home: Path) -> None:
    root = new_area(tmp_path)
    known = tmp_path / "known_node2"
    known.write_text(sshd_netns.known_hosts_line)
    add_ssh_site(root, home, "node2", sshd_netns, tmp_path / "node2-work", known)
    ok(root, home, "app", "add", "where", "--command", "hostname > where.txt")
    ok(root, home, "job", "create", "--app", "where", "--site", "node2", "--count", "4")
    summary = json.loads(ok(root, home, "launch", "--site", "node2", "--json").stdout)
    assert summary["by_status"] == {"PASS": 4}
    for row in jobs(root, home):
        shown = json.loads(ok(root, home, "job", "show", str(row["id"]), "--json").stdout)
        assert Path(str(shown["workdir"]), "where.txt").read_text().strip() == "node2"


def test_unknown_host_key_refuses_launch_and_loses_nothing(tmp_path: Path, sshd: SshServer,
                                                           home: Path) -> None:
    root = new_area(tmp_path)
    add_ssh_site(root, home, "remote", sshd, tmp_path / "w", None)
    ok(root, home, "app", "add", "noop", "--command", "true")
    ok(root, home, "job", "create", "--app", "noop", "--site", "remote", "--count", "2")
    refused = cli(root, home, "launch", "--site", "remote")
    assert refused.returncode == 3
    assert "--accept-host-key" in refused.stderr and "Traceback" not in refused.stderr
    assert {r["state"] for r in jobs(root, home)} == {"READY"}
    assert not (tmp_path / "w").exists()


def sync_cycle(area: Path, home: Path) -> dict[str, object]:
    result = cli(area, home, "sync", "--json")
    rows = json.loads(result.stdout)
    assert len(rows) == 1, rows
    row: dict[str, object] = rows[0]
    assert result.returncode == (0 if row["ok"] else 3), result.stderr
    return row


def sync_until_done(area: Path, home: Path, limit: float = 240,
                    max_trips: int = 2) -> list[dict[str, object]]:
    """Run sync cycles until no job is open, checking how many round trips each costs."""
    cycles = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        row = sync_cycle(area, home)
        assert row["ok"], row
        assert 1 <= int(str(row["round_trips"])) <= max_trips, row
        cycles.append(row)
        states = {str(s) for (s,) in db_rows(area, "SELECT DISTINCT state FROM job")}
        if states <= {"COMPLETED", "DEAD", "KILLED"}:
            return cycles
        time.sleep(0.3)
    pytest.fail(f"jobs still open after {limit} s of sync cycles")


def db_rows(area: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(area / ".megarun" / "work.db") as db:
        return db.execute(sql, params).fetchall()


def completions_per_job(area: Path) -> dict[int, int]:
    rows = db_rows(area, "SELECT job, count(*) FROM event WHERE to_state = 'COMPLETED' "
                         "GROUP BY job")
    return {int(str(job)): int(str(n)) for job, n in rows}


def test_sync_after_a_launch_runs_new_jobs_and_an_idle_site_costs_nothing(
        remote_area: Path, home: Path) -> None:
    ok(remote_area, home, "app", "add", "noop", "--command", "true")
    ok(remote_area, home, "job", "create", "--app", "noop", "--site", "remote", "--count", "3")
    ok(remote_area, home, "launch", "--site", "remote")  # leaves its drain request behind
    # Once the launch's agent is seen gone, a site with nothing open is not even connected to.
    trips = [int(str(sync_cycle(remote_area, home)["round_trips"])) for _ in range(2)]
    time.sleep(3.5)  # the agent's idle exit
    trips += [int(str(sync_cycle(remote_area, home)["round_trips"])) for _ in range(2)]
    assert trips[-1] == 0 and max(trips) <= 1, trips
    ok(remote_area, home, "job", "create", "--app", "noop", "--site", "remote", "--count", "3")
    cycles = sync_until_done(remote_area, home)
    assert cycles[0]["dispatched"] == 3 and cycles[0]["started_agent"]
    assert db_rows(remote_area, "SELECT DISTINCT status FROM job") == [("PASS",)]


@pytest.mark.parametrize("count", [10, 10_000])
def test_sync_costs_at_most_two_round_trips(remote_area: Path, home: Path, count: int) -> None:
    # Shipping the agent (once per megarun version) is part of setting the site up.
    ok(remote_area, home, "site", "check", "remote", "--install-agent")
    ok(remote_area, home, "app", "add", "noop", "--command", "true")
    ok(remote_area, home, "job", "create", "--app", "noop", "--site", "remote",
       "--count", str(count))
    cycles = sync_until_done(remote_area, home)
    assert sum(int(str(c["dispatched"])) for c in cycles) == count
    assert any(c["started_agent"] for c in cycles)
    done = completions_per_job(remote_area)
    assert len(done) == count and set(done.values()) == {1}
    assert db_rows(remote_area, "SELECT count(*) FROM job WHERE status != 'PASS'") == [(0,)]


def remote_agent_pids(workdir: Path) -> list[int]:
    beats = [json.loads(p.read_text()) for p in (workdir / "spool" / "agents").glob("*.json")]
    return [int(b["pid"]) for b in beats if b.get("state") == "running"]


def wait_for(predicate: Callable[[], bool], what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_remote_agent_killed_jobs_become_dead_and_are_retried(remote_area: Path, home: Path,
                                                              tmp_path: Path) -> None:
    ok(remote_area, home, "app", "add", "nap", "--command",
       'if [ -e first-try-done ]; then exit 0; fi; touch first-try-done; sleep 30',
       "--retries", "1")
    # Two jobs: every machine this runs on has two CPUs for them to run side by side.
    ok(remote_area, home, "job", "create", "--app", "nap", "--site", "remote", "--count", "2",
       "--nodes", "1")
    first = sync_cycle(remote_area, home)
    assert first["dispatched"] == 2 and first["started_agent"]

    def running() -> bool:
        sync_cycle(remote_area, home)
        states = db_rows(remote_area, "SELECT DISTINCT state FROM job")
        return states == [("RUNNING",)]

    wait_for(running, "two RUNNING jobs")
    pids = remote_agent_pids(tmp_path / "remote-work")
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    settled = sync_cycle(remote_area, home)
    assert settled["agents_settled"] == [first["started_agent"]]
    assert settled["dispatched"] == 2  # retried at once: the second attempts are queued
    sync_until_done(remote_area, home)
    rows = db_rows(remote_area, "SELECT state, status, attempt FROM job")
    assert rows == [("COMPLETED", "PASS", 2)] * 2  # the second attempt passed
    dead = db_rows(remote_area, "SELECT job, count(*) FROM event WHERE to_state = 'DEAD' "
                                "GROUP BY job")
    assert [n for _, n in dead] == [1, 1]
    assert set(completions_per_job(remote_area).values()) == {1}
    for pid in pids_of_sleepers(tmp_path / "remote-work"):
        os.kill(pid, signal.SIGKILL)  # the first attempts' orphans


def pids_of_sleepers(workdir: Path) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "cwd").startswith(str(workdir)):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_sshd_stopped_between_cycles_then_recovery(tmp_path: Path, sshd: SshServer,
                                                   home: Path) -> None:
    server = SshServer(tmp_path / "own-sshd", sshd.client_key)
    server.start()
    try:
        root = new_area(tmp_path)
        known = tmp_path / "known"
        known.write_text(server.known_hosts_line)
        add_ssh_site(root, home, "remote", server, tmp_path / "w", known)
        ok(root, home, "app", "add", "nap", "--command", "sleep 2; echo done")
        ok(root, home, "job", "create", "--app", "nap", "--site", "remote", "--count", "5")
        first = sync_cycle(root, home)
        assert first["dispatched"] == 5 and first["started_agent"]
        server.stop()
        down = sync_cycle(root, home)
        assert not down["ok"] and "unreachable" in str(down["error"]).lower(), down
        time.sleep(3)  # the jobs finish on the site while it cannot be reached
        server.start()
        sync_until_done(root, home)
        assert db_rows(root, "SELECT DISTINCT state, status FROM job") == [("COMPLETED", "PASS")]
        assert set(completions_per_job(root).values()) == {1}
        # Every event line the agent wrote was taken in exactly once.
        remote_log = next((tmp_path / "w" / "spool" / "events").glob("*.jsonl"))
        lines = remote_log.read_text().splitlines()
        assert db_rows(root, "SELECT last_seq FROM agent") == [(len(lines),)]
        mirror = next((root / ".megarun" / "sites" / "remote" / "spool" / "events").glob("*"))
        assert mirror.read_text() == remote_log.read_text()
    finally:
        server.stop()


def test_the_remote_agent_runs_under_the_oldest_python(tmp_path: Path, sshd: SshServer,
                                                       home: Path, known_hosts: Path) -> None:
    oldest = find_oldest_python()
    if oldest is None:
        pytest.skip(f"REMOTE AGENT ON PYTHON {OLDEST} NOT TESTED: no python{OLDEST} here")
    root = new_area(tmp_path)
    add_ssh_site(root, home, "old", sshd, tmp_path / "w", known_hosts, "--python", oldest)
    ok(root, home, "app", "add", "ver", "--command", "python3 -c 'print(1)'; echo {{ n }}")
    ok(root, home, "job", "create", "--app", "ver", "-p", "n=7", "--site", "old", "--count", "3")
    summary = json.loads(ok(root, home, "launch", "--site", "old", "--json").stdout)
    assert summary["by_status"] == {"PASS": 3}
    beats = [json.loads(p.read_text()) for p in (tmp_path / "w" / "spool" / "agents").glob("*")]
    assert beats and all(str(b["python"]).startswith(OLDEST + ".") for b in beats), beats
    # `site check` records the site's Python: matching then knows this site is too old.
    ok(root, home, "site", "check", "old")
    ok(root, home, "app", "add", "modern", "--command", "true", "--require", "python>=3.10")
    ok(root, home, "job", "create", "--app", "modern")
    match = json.loads(ok(root, home, "job", "match", "--json").stdout)
    assert match["unmatched"] == 1, match
    assert f"site old has python={OLDEST}." in json.dumps(match)


def test_a_suite_runs_on_the_ssh_site_and_cleans_there(tmp_path: Path, sshd: SshServer,
                                                        home: Path, known_hosts: Path) -> None:
    suite = tmp_path / "suite"
    shutil.copytree(REPO / "examples" / "regression", suite)
    work = tmp_path / "remote-work"
    add_ssh_site(suite, home, "remote", sshd, work, known_hosts)
    run = ("--target", "linux/x86_64", "--runname", "nightly")
    first = cli(suite, home, "run", *run, "--site", "remote", "--json", timeout=300)
    assert first.returncode == 0, first.stderr
    items = {f"{i['test']}/{i['item']}".rstrip("/"): (i["state"], i["status"])
             for i in json.loads(first.stdout)["items"]}
    assert len(items) == 15 and items["unit/2/fast"] == ("COMPLETED", "PASS")
    out = work / "runs" / "linux/x86_64" / "nightly" / "unit" / "2" / "slow" / "run.out"
    assert out.read_text() == "size=2 mode=slow\n"
    assert not (suite / "runs").exists()  # nothing ran in the area's own run root
    cleaned = json.loads(ok(suite, home, "clean", *run, "--keep-records", "--json").stdout)
    assert cleaned["paths_removed"] == 15, cleaned
    assert not out.exists() and (work / "runs").is_dir()
    logs = cli(suite, home, "job", "logs", "1")
    assert logs.returncode == 2 and "removed by `megarun clean`" in logs.stderr, logs.stderr


def test_ctrl_c_in_a_run_on_the_ssh_site_hands_running_items_back(
        tmp_path: Path, sshd: SshServer, home: Path, known_hosts: Path) -> None:
    """The stop a run's interrupt asks for reaches the remote agent: its running items come
    back READY (not KILLED), the toplevel report still waits, and nothing runs on there."""
    suite = tmp_path / "suite"
    shutil.copytree(REPO / "examples" / "regression", suite)
    for name in ("compile", "unit", "integration", "lint", "report"):
        shutil.rmtree(suite / "tests" / name)
    for name, text in (("unit", 'steps = ["sleep 60"]\n[items]\nN = [1, 2, 3]\n'),
                       ("report", 'waiton = ["unit"]\nwaiton_mode = "toplevel"\n'
                                  'steps = ["true"]\n')):
        (suite / "tests" / name).mkdir()
        (suite / "tests" / name / "test.toml").write_text(text)
    work = tmp_path / "remote-work"
    add_ssh_site(suite, home, "remote", sshd, work, known_hosts)
    run = subprocess.Popen(
        [sys.executable, "-m", "megarun", "--area", str(suite), "run", "--target", "linux/x86_64",
         "--runname", "r1", "--site", "remote", "--quiet"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO),
                                                "HOME": str(home)})
    wait_for(lambda: (suite / ".megarun" / "work.db").exists() and db_rows(
        suite, "SELECT count(*) FROM job WHERE state = 'RUNNING'") >= [(1,)], "a running item")
    run.send_signal(signal.SIGINT)
    _out, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    states = dict(db_rows(suite, "SELECT test || '/' || item, state FROM job"))
    assert states == {"unit/1": "READY", "unit/2": "READY", "unit/3": "READY",
                      "report/": "AWAITING_PARENTS"}, states
    wait_for(lambda: not pids_of_sleepers(work / "runs"), "the remote job processes to end",
             limit=15)


def test_job_kill_reaches_a_remote_job(remote_area: Path, home: Path, tmp_path: Path) -> None:
    ok(remote_area, home, "app", "add", "long", "--command", "sleep 60")
    ok(remote_area, home, "job", "create", "--app", "long", "--site", "remote")
    assert sync_cycle(remote_area, home)["dispatched"] == 1

    def running() -> bool:
        sync_cycle(remote_area, home)
        return db_rows(remote_area, "SELECT state FROM job") == [("RUNNING",)]

    wait_for(running, "the job to run")
    killed = json.loads(ok(remote_area, home, "job", "kill", "1", "--json").stdout)
    assert killed["requested"] == [1] and "undelivered" not in killed
    # The kill request reached the site at once: the job's process ends with no sync cycle.
    wait_for(lambda: not pids_of_sleepers(tmp_path / "remote-work" / "jobs"),
             "the remote job process to end", limit=15)

    def ended() -> bool:
        sync_cycle(remote_area, home)
        return db_rows(remote_area, "SELECT state FROM job") == [("KILLED",)]

    wait_for(ended, "the job to be recorded KILLED", limit=30)
    # The request is forgotten on both sides once the job ended: it cannot hit a later attempt.
    sync_cycle(remote_area, home)
    mirror = remote_area / ".megarun" / "sites" / "remote" / "spool"
    assert not list((mirror / "control" / "kill").iterdir())
    assert not list((tmp_path / "remote-work" / "spool" / "control" / "kill").iterdir())


def test_ctrl_c_in_launch_kills_remote_jobs_and_takes_work_back(remote_area: Path, home: Path,
                                                                tmp_path: Path) -> None:
    ok(remote_area, home, "app", "add", "long", "--command", "sleep 60")
    ok(remote_area, home, "job", "create", "--app", "long", "--site", "remote", "--count", "6")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "megarun", "--area", str(remote_area), "launch", "--site",
         "remote", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "HOME": str(home)})
    wait_for(lambda: db_rows(remote_area, "SELECT count(*) FROM job WHERE state = 'RUNNING'")
             >= [(1,)], "a running remote job")
    launcher.send_signal(signal.SIGINT)
    _out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 130, err
    states = dict(db_rows(remote_area, "SELECT id, state FROM job"))
    assert set(states.values()) <= {"KILLED", "READY"} and "READY" in states.values(), states
    assert "KILLED" in states.values()
    spool = tmp_path / "remote-work" / "spool"
    assert not list((spool / "queue").glob("*.jsonl"))
    assert not [p for p in (spool / "claimed").glob("*/*.jsonl")]
    wait_for(lambda: not pids_of_sleepers(tmp_path / "remote-work" / "jobs"),
             "the remote job processes to end", limit=15)


def test_remote_logs_stream_and_ended_agents_are_tidied(remote_area: Path, home: Path,
                                                        tmp_path: Path) -> None:
    """`job logs --tail/--head/--json` slice on the site; after several launches the site and
    its mirror keep only the files of agents still to be taken in (housekeeping)."""
    ok(remote_area, home, "app", "add", "lines", "--command", "seq 1 50000")
    ok(remote_area, home, "job", "create", "--app", "lines", "--site", "remote")
    ok(remote_area, home, "launch", "--site", "remote", "--quiet")
    err = "\n==> job.err <==\n"  # the empty stderr log, after its header (on stdout)
    assert ok(remote_area, home, "job", "logs", "1", "--tail", "2").stdout == (
        "==> job.out <==\n49999\n50000\n" + err)
    assert ok(remote_area, home, "job", "logs", "1", "--head", "2").stdout == (
        "==> job.out <==\n1\n2\n" + err)
    assert ok(remote_area, home, "job", "logs", "1", "--step", "job", "--tail", "1").stdout == (
        "==> job.out <==\n50000\n" + err)
    whole = ok(remote_area, home, "job", "logs", "1").stdout.removeprefix("==> job.out <==\n")
    assert whole == "".join(f"{n}\n" for n in range(1, 50001)) + err
    whole = whole.removesuffix(err)
    excerpt = json.loads(ok(remote_area, home, "job", "logs", "1", "--json").stdout)["job.out"]
    assert excerpt["size"] == len(whole) and excerpt["truncated"] is True
    assert excerpt["text"].endswith("50000\n") and len(excerpt["text"]) <= 64 * 1024
    assert excerpt["path"].startswith(str(tmp_path / "remote-work" / "jobs"))
    for _ in range(2):
        ok(remote_area, home, "job", "create", "--app", "echo", "-p", "msg=x", "--site",
           "remote")
        ok(remote_area, home, "launch", "--site", "remote", "--quiet")
    site = tmp_path / "remote-work"
    mirror = remote_area / ".megarun" / "sites" / "remote" / "spool"

    def agent_files() -> list[Path]:
        return [p for folder in (site / "spool" / "events", site / "spool" / "agents",
                                 mirror / "events", mirror / "agents", mirror / "forget")
                for p in folder.glob("*")] + list((site / "logs").glob("agent-*.log"))

    deadline = time.monotonic() + 60
    while agent_files() and time.monotonic() < deadline:
        ok(remote_area, home, "sync")  # ingest, settle, mark to forget; the next one forgets
        time.sleep(0.3)
    assert agent_files() == []  # 3 agents ran: without housekeeping 3 x 5 files stay
    assert (site / "logs" / "ended-agents.log").read_text().count("==> agent ") == 3
    rows = jobs(remote_area, home)
    assert [(r["state"], r["status"]) for r in rows] == [("COMPLETED", "PASS")] * 3
    db = sqlite3.connect(remote_area / ".megarun" / "work.db")
    per_job = dict(db.execute("SELECT job, count(*) FROM event GROUP BY job").fetchall())
    db.close()
    assert per_job == {job: 5 for job in range(1, 4)}  # nothing ingested twice


def test_sync_stops_restarting_an_agent_that_keeps_dying(remote_area: Path, home: Path,
                                                         tmp_path: Path) -> None:
    """Each cron `sync` is a new process: the agents it started and their deaths are kept on
    the home host, and after five deaths in ten minutes it starts none and says why."""
    ok(remote_area, home, "app", "add", "nap", "--command", "sleep 30", "--retries", "20")
    ok(remote_area, home, "job", "create", "--app", "nap", "--site", "remote")
    workdir = tmp_path / "remote-work"
    started: list[str] = []
    refusals: list[dict[str, object]] = []
    deadline = time.monotonic() + 240
    while len(started) <= 5 and time.monotonic() < deadline:
        row = sync_cycle(remote_area, home)
        if row["started_agent"]:
            started.append(str(row["started_agent"]))
        if not row["ok"]:
            refusals.append(row)
            break
        newest = started[-1] if started else ""
        if (db_rows(remote_area, "SELECT state FROM agent WHERE id = ?", newest) == [("running",)]
                and db_rows(remote_area, "SELECT state FROM job") == [("RUNNING",)]):
            for pid in remote_agent_pids(workdir):
                os.kill(pid, signal.SIGKILL)  # the agent dies, as a crashing one would
        time.sleep(0.3)
    assert refusals, f"sync kept starting agents: {started}"
    error = str(refusals[0]["error"])
    assert "died 5 times" in error and started[-1] in error, error
    assert len(started) == 5 == len(set(started))
    assert not refusals[0]["started_agent"]
    again = sync_cycle(remote_area, home)  # the next cron cycle: still none started
    assert not again["ok"] and not again["started_agent"] and remote_agent_pids(workdir) == []
    assert db_rows(remote_area, "SELECT state FROM agent WHERE state = 'dead'") == [("dead",)] * 5
    assert db_rows(remote_area, "SELECT state FROM job")[0][0] in ("READY", "QUEUED")
    for pid in pids_of_sleepers(workdir):
        os.kill(pid, signal.SIGKILL)


def test_steps_and_junit_logs_of_a_suite_run_on_the_ssh_site(remote_area: Path, home: Path,
                                                             tmp_path: Path) -> None:
    """Step results come from the site's events, and the JUnit export reads the failing
    step's log tails on the site (one round trip for every failing item)."""
    folder = remote_area / "tests" / "multi"
    folder.mkdir(parents=True)
    (folder / "test.toml").write_text(
        'steps = [{name = "prep", cmd = "echo ready"},\n'
        '         {name = "check", cmd = "sh -c \'seq 1 150; echo \\"broken $N\\" >&2; '
        'exit 5\'"}]\n[items]\nN = ["a", "b"]\n')
    result = cli(remote_area, home, "run", "--target", "linux", "--runname", "r", "--site",
                 "remote", "--json")
    assert result.returncode == 1, result.stderr
    for entry in json.loads(result.stdout)["items"]:
        assert [(s["name"], s["state"], s["status"], s["exit_code"]) for s in entry["steps"]] == [
            ("prep", "COMPLETED", "PASS", 0), ("check", "COMPLETED", "FAIL", 5)]
    xml = ok(remote_area, home, "runs", "export", "--target", "linux", "--runname", "r",
             "--format", "junit").stdout
    from junitparser import JUnitXml

    cases = {case.name: case for suite in JUnitXml.fromstring(xml) for case in suite}
    assert set(cases) == {"a", "b"}
    for name, case in cases.items():
        assert case.system_out.splitlines() == [str(n) for n in range(51, 151)]
        assert case.system_err == f"broken {name}\n"
    assert str(tmp_path / "remote-work" / "runs" / "linux" / "r" / "multi" / "a") in xml
    step = ok(remote_area, home, "job", "logs", "1", "--step", "prep").stdout
    assert step == "==> prep.out <==\nready\n\n==> prep.err <==\n"

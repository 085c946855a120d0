"""The agent as a real process on a real spool: every rule of docs/spool-protocol.md."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.component.agent.harness import Site, of, process_gone, wait_until


def test_version_reports_the_interpreter(site: Site) -> None:
    out = subprocess.run([site.python, "-m", "megarun.agent", "version"], check=True,
                         capture_output=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    info = json.loads(out.stdout)
    from megarun import __version__
    assert info["version"] == __version__
    expected = subprocess.run([site.python, "-c", "import platform;print(platform.python_version())"],
                              check=True, capture_output=True, text=True).stdout.strip()
    assert info["python"] == expected


def test_jobs_run_and_report_every_step_of_their_life(site: Site) -> None:
    bundle = site.queue(site.job(1, "echo hello"),
                        site.job(2, "sh -c 'echo out; echo err >&2; exit 3'"),
                        site.job(3, 'sh -c \'echo "$MEGARUN_JOB_ID $MEGARUN_ATTEMPT $OMP_NUM_THREADS $FOO"\'',
                                 env={"FOO": "bar baz"}, threads=4))
    events = site.run()
    kinds = [e["ev"] for e in events]
    assert kinds[0] == "agent_started" and kinds[-1] == "agent_exited"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for kind in ("claimed", "started", "finished"):
        assert set(of(events, kind)) == {1, 2, 3}, kind
    finished = of(events, "finished")
    assert finished[1]["reason"] == "exit" and finished[1]["rc"] == 0
    assert finished[2]["rc"] == 3 and "exit code 3" in finished[2]["message"]
    assert "err" in finished[2]["message"]  # the last line of stderr says why
    assert (site.job_dir(1) / "job.out").read_text() == "hello\n"
    assert (site.job_dir(2) / "job.err").read_text() == "err\n"
    assert (site.job_dir(3) / "job.out").read_text() == "3 1 4 bar baz\n"
    assert (site.job_dir(2) / "megarun.exit").read_text() == "3\n"
    assert not bundle.exists()
    assert not (site.spool / "claimed" / "a1").exists()
    beat = site.heartbeat()
    assert beat["state"] == "exited" and beat["running"] == []
    assert oct((site.job_dir(1) / "job.out").stat().st_mode & 0o777) == "0o600"
    assert oct((site.spool / "events" / "a1.jsonl").stat().st_mode & 0o777) == "0o600"


def test_missing_command_fails_with_127_and_says_so(site: Site) -> None:
    site.queue(site.job(1, "no-such-command-anywhere --flag"),
               site.job(2, "sh -c 'no-such-command-either'"))
    finished = of(site.run(), "finished")
    for job_id in (1, 2):
        assert finished[job_id]["rc"] == 127
        assert "command not found" in finished[job_id]["message"]
    assert "command not found" in (site.job_dir(1) / "job.err").read_text()


def test_steps_run_in_order_and_stop_at_the_first_failure(site: Site, tmp_path: Path) -> None:
    marker = tmp_path / "never"
    site.queue(site.job(1, ["echo one", "sh -c 'echo two; pwd'"]),
               site.job(2, ["false", f"touch {marker}"]))
    finished = of(site.run(), "finished")
    assert finished[1]["rc"] == 0
    assert (site.job_dir(1) / "s1.out").read_text() == "one\n"
    assert (site.job_dir(1) / "s2.out").read_text() == f"two\n{site.job_dir(1)}\n"
    assert finished[2]["rc"] == 1 and "step 's1'" in finished[2]["message"]
    assert not marker.exists()
    assert not (site.job_dir(2) / "s2.out").exists()


def test_metacharacters_in_a_plain_command_are_never_expanded(site: Site, tmp_path: Path) -> None:
    # A rendered command quotes every value; the agent runs it under /bin/sh as it stands.
    target = tmp_path / "pwned"
    site.queue(site.job(1, f"echo '$(touch {target})' ';' 'a\nb'"))
    finished = of(site.run(), "finished")
    assert finished[1]["rc"] == 0
    assert not target.exists()
    assert (site.job_dir(1) / "job.out").read_text() == f"$(touch {target}) ; a\nb\n"


def test_timeout_kills_the_whole_process_group(site: Site, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    site.queue(site.job(1, f"sh -c 'sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait'",
                        timeout=0.5))
    started = time.monotonic()
    finished = of(site.run(), "finished")
    assert finished[1]["reason"] == "timeout"
    assert "runtime limit" in finished[1]["message"]
    assert time.monotonic() - started < 10
    for pid in map(int, pids.read_text().split()):
        assert process_gone(pid), pid


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(site: Site, tmp_path: Path) -> None:
    stubborn = tmp_path / "stubborn"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM\necho ready\nsleep 300\n")
    stubborn.chmod(0o755)
    site.queue(site.job(1, str(stubborn), timeout=0.5))
    finished = of(site.run(), "finished")
    assert finished[1]["reason"] == "timeout"
    assert finished[1]["rc"] == -signal.SIGKILL and finished[1]["signal"] == signal.SIGKILL


def test_kill_file_stops_a_running_job_and_a_queued_one(site: Site) -> None:
    site.queue(site.job(1, "sleep 300"), site.job(2, "sleep 300"))
    agent = site.start(cpus=1)
    wait_until(lambda: 1 in of(site.events(), "started"))
    site.kill(2)  # claimed, waiting for the only slot
    site.kill(1)
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    events = site.events()
    finished = of(events, "finished")
    assert finished[1]["reason"] == "killed" and finished[1]["rc"] == -signal.SIGTERM
    assert finished[2]["reason"] == "killed"
    assert 2 not in of(events, "started")
    assert list((site.spool / "control" / "kill").iterdir()) == []


def test_stop_drain_returns_queued_jobs_and_lets_running_ones_finish(site: Site) -> None:
    site.queue(site.job(1, "sleep 1"), site.job(2, "true"), site.job(3, "true"))
    agent = site.start(cpus=1, idle_exit=0)
    wait_until(lambda: 1 in of(site.events(), "started"))
    site.stop("drain", "a1")
    agent.communicate(timeout=30)
    events = site.events()
    assert of(events, "finished")[1]["rc"] == 0
    assert set(of(events, "returned")) == {2, 3}
    assert events[-1]["ev"] == "agent_exited" and "drain" in events[-1]["message"]


def test_stop_kill_and_sigterm_kill_running_jobs(site: Site) -> None:
    site.queue(site.job(1, "sleep 300"), site.job(2, "sleep 300"), site.job(3, "true"))
    agent = site.start(cpus=2, idle_exit=0)
    wait_until(lambda: len(of(site.events(), "started")) == 2)
    agent.send_signal(signal.SIGTERM)
    agent.communicate(timeout=30)
    assert agent.returncode == 0
    events = site.events()
    assert {j: e["reason"] for j, e in of(events, "finished").items()} == {1: "killed", 2: "killed"}
    assert set(of(events, "returned")) == {3}
    assert site.heartbeat()["state"] == "exited"


def test_stop_return_stops_running_jobs_and_hands_them_back(site: Site) -> None:
    """`return` (an interrupted `megarun run`): running jobs are stopped but reported
    `returned`, started, with no megarun.exit: they did not end, the run continues them."""
    site.queue(site.job(1, "sleep 300"), site.job(2, "sleep 300"), site.job(3, "true"))
    agent = site.start(cpus=2, idle_exit=0)
    wait_until(lambda: len(of(site.events(), "started")) == 2)
    site.stop("return")
    agent.communicate(timeout=30)
    assert agent.returncode == 0
    events = site.events()
    assert of(events, "finished") == {}
    returned = of(events, "returned")
    assert set(returned) == {1, 2, 3}
    assert returned[1]["started"] is True and returned[1]["rc"] == -signal.SIGTERM
    assert "interrupted" in returned[2]["message"] and "started" not in returned[3]
    assert not (site.job_dir(1) / "megarun.exit").exists()
    assert events[-1]["ev"] == "agent_exited" and "return" in events[-1]["message"]


def _span(site: Site, job_id: int) -> tuple[float, float, str]:
    """(start, end, CUDA_VISIBLE_DEVICES) as the job itself wrote them."""
    first, devices, last = (site.job_dir(job_id) / "job.out").read_text().split("\n")[:3]
    return float(first), float(last), devices


def test_jobs_are_packed_by_cpus_and_gpus(site: Site) -> None:
    record = "sh -c 'date +%s.%N; echo $CUDA_VISIBLE_DEVICES; sleep 0.3; date +%s.%N'"
    site.queue(*[site.job(i, record, gpus=1) for i in range(1, 5)],
               site.job(5, record, cpus=3), site.job(6, "true", gpus=3),
               site.job(7, "true", nodes=2), site.job(8, record, cpus=2))
    finished = of(site.run("--gpus", "0,1", cpus=3), "finished")
    assert {j: finished[j]["reason"] for j in (6, 7)} == {6: "error", 7: "error"}
    assert "needs 3 gpus" in finished[6]["message"] and "needs 2 nodes" in finished[7]["message"]
    spans = {j: _span(site, j) for j in (1, 2, 3, 4, 5, 8)}
    assert {spans[j][2] for j in range(1, 5)} == {"0", "1"}
    assert spans[5][2] == spans[8][2] == ""  # no GPU asked for: none visible
    size = {5: 3, 8: 2}
    for start, _, _ in spans.values():  # at no start do the running jobs exceed 3 cpus or 2 gpus
        live = [j for j, (s, e, _) in spans.items() if s <= start < e]
        assert sum(size.get(j, 1) for j in live) <= 3, live
        assert sum(1 for j in live if j <= 4) <= 2, live


def test_max_jobs_caps_concurrency(site: Site) -> None:
    record = "sh -c 'date +%s.%N; echo; sleep 0.2; date +%s.%N'"
    site.queue(*[site.job(i, record) for i in range(1, 5)])
    site.run("--max-jobs", "1", cpus=4)
    spans = sorted(_span(site, j)[:2] for j in range(1, 5))
    for before, after in itertools.pairwise(spans):
        assert before[1] <= after[0]


def test_bundles_are_taken_in_order_and_bad_lines_skipped(site: Site) -> None:
    site.queue(site.job(1, "true"), raw_lines=("not json", '{"no": "id"}'))
    site.queue(site.job(2, "true"))
    events = site.run(cpus=1)
    claimed = [e["job"] for e in events if e["ev"] == "claimed"]
    assert claimed == [1, 2]
    assert of(events, "finished")[2]["rc"] == 0


def test_restart_continues_sequence_and_finishes_leftover_work(site: Site) -> None:
    site.queue(site.job(1, "true"))
    first = site.run()
    # A crash after claiming a second bundle: it sits in claimed/ with an unfinished job, and
    # the log ends in a line cut short.
    leftover = site.spool / "claimed" / "a1"
    leftover.mkdir()
    (leftover / "000009.jsonl").write_text(json.dumps(site.job(2, "echo again")) + "\n")
    with open(site.spool / "events" / "a1.jsonl", "a") as log:
        log.write('{"seq": 99999, "ev": "cut')
    events = site.run()
    seqs = [e["seq"] for e in events[len(first):]]
    assert seqs == list(range(first[-1]["seq"] + 1, first[-1]["seq"] + 1 + len(seqs)))
    assert of(events, "finished")[2]["rc"] == 0
    assert not leftover.exists()


def test_stale_heartbeat_is_refreshed_while_jobs_run(site: Site) -> None:
    site.queue(site.job(1, "sleep 1.5"))
    agent = site.start()
    wait_until(lambda: 1 in of(site.events(), "started"))
    first = site.heartbeat()
    wait_until(lambda: site.heartbeat()["time"] > first["time"] + 0.3)
    beat = site.heartbeat()
    assert beat["state"] == "running" and beat["running"] == [1] and beat["pid"] == agent.pid
    agent.communicate(timeout=30)


def test_bad_agent_id_is_refused(site: Site) -> None:
    process = site.start("../escape")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and b"agent id" in err


def test_rules_judge_exit_codes_and_log_patterns(site: Site) -> None:
    rules = {"exit": {"3": "SKIP"}, "patterns": [
        {"regex": "^WARNING:", "status": "WARN", "step": None},
        {"regex": "checksum mismatch", "status": "FAIL", "step": "s2"}]}
    site.queue(site.job(1, ["echo fine", "echo done"], rules=rules),
               site.job(2, ["echo WARNING: slow", "true"], rules=rules),
               site.job(3, "sh -c 'exit 3'", rules=rules),
               site.job(4, ["echo checksum mismatch", "true"], rules=rules),  # wrong step
               site.job(5, ["true", "sh -c 'echo checksum mismatch >&2'"], rules=rules),
               site.job(6, "true"))
    finished = of(site.run(), "finished")
    assert {j: finished[j].get("status") for j in finished} == {
        1: "PASS", 2: "WARN", 3: "SKIP", 4: "PASS", 5: "FAIL", 6: None}


def test_kept_steps_are_not_run_but_their_logs_count_for_the_rules(site: Site) -> None:
    rules = {"patterns": [{"regex": "^WARNING:", "status": "WARN", "step": "s1"}]}
    for job_id in (1, 2):
        site.job_dir(job_id).mkdir(parents=True)
        (site.job_dir(job_id) / "s1.out").write_text("WARNING: kept from the first attempt\n")
    site.queue(site.job(1, [], steps=[{"name": "s2", "cmd": "true"}], kept_steps=["s1"],
                        rules=rules),
               site.job(2, [], steps=[{"name": "s2", "cmd": "false"}], kept_steps=["s1"]),
               site.job(3, [], steps=[{"name": "s2", "cmd": "true"}], kept_steps="s1"))
    finished = of(site.run(), "finished")
    assert finished[1]["rc"] == 0 and finished[1]["status"] == "WARN"
    assert finished[2]["message"].startswith("exit code 1 in step 's2'")
    assert finished[3]["message"] == "bad job spec: kept_steps is not a list of step names"
    assert (site.job_dir(1) / "s1.out").read_text() == "WARNING: kept from the first attempt\n"
    assert (site.job_dir(1) / "s2.out").exists()


def test_fast_multi_step_jobs_all_finish(site: Site) -> None:
    # A next step that ends within the same reaping pass as its predecessor must be seen.
    site.queue(*[site.job(i, ["true", "true", "true"]) for i in range(1, 41)])
    finished = of(site.run(timeout=60), "finished")
    assert sorted(finished) == list(range(1, 41))
    assert all(e["rc"] == 0 for e in finished.values())
    assert all((site.job_dir(i) / "s3.out").exists() for i in range(1, 41))

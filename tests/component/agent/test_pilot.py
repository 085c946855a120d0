"""The agent as a pilot in a batch allocation: node lists, placement, launchers, walltime, pools."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.component.agent.harness import Site, of, wait_until
from tests.conftest import REPO

FAKES = Path(__file__).parent / "fakes"
HOST = socket.gethostname()


def in_agent_python(python: str, code: str, env: dict[str, str] | None = None) -> Any:
    """Run `code` (which prints JSON) under the agent's interpreter; return what it printed."""
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False,
                         env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def read_nodes(python: str, kind: str, env: dict[str, str], drop: bool = False) -> Any:
    code = ("import json, os\nfrom megarun.agent.nodes import read_nodes, NodeListError\n"
            "try:\n"
            f"    print(json.dumps(read_nodes({kind!r}, os.environ, 'thishost', {drop!r})))\n"
            "except NodeListError as exc:\n"
            "    print(json.dumps({'error': str(exc)}))\n")
    clean = {k: "" for k in ("SLURM_JOB_NODELIST", "SLURM_NODELIST", "PBS_NODEFILE",
                             "LSB_MCPU_HOSTS", "LSB_HOSTS", "COBALT_PARTNAME")}
    return in_agent_python(python, code, {**clean, **env})


def test_slurm_host_lists_are_expanded(python: str) -> None:
    assert read_nodes(python, "slurm", {"SLURM_JOB_NODELIST": "nid[001-003,007]"}) == [
        "nid001", "nid002", "nid003", "nid007"]
    assert read_nodes(python, "slurm", {"SLURM_NODELIST": "login1,gpu[8-10]-ib,c[1-2]n[01-02]"}) == [
        "login1", "gpu8-ib", "gpu9-ib", "gpu10-ib", "c1n01", "c1n02", "c2n01", "c2n02"]
    assert read_nodes(python, "slurm", {"SLURM_JOB_NODELIST": "a,b", "SLURM_NODELIST": "c"}) == [
        "a", "b"]
    assert "SLURM_JOB_NODELIST" in read_nodes(python, "slurm", {})["error"]
    assert "bad range" in read_nodes(python, "slurm", {"SLURM_JOB_NODELIST": "n[1-x]"})["error"]
    assert "unbalanced" in read_nodes(python, "slurm", {"SLURM_JOB_NODELIST": "n[1-2"})["error"]


def test_pbs_nodefile_gives_unique_nodes_in_order(python: str, tmp_path: Path) -> None:
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("x3001c0s13b0n0.hsn\nx3001c0s13b0n0.hsn\nx3002c0s1b0n0.hsn\n\n"
                        "x3001c0s13b0n0.hsn\nx3000c0s7b0n0.hsn\n")
    assert read_nodes(python, "pbs", {"PBS_NODEFILE": str(nodefile)}) == [
        "x3001c0s13b0n0.hsn", "x3002c0s1b0n0.hsn", "x3000c0s7b0n0.hsn"]
    missing = read_nodes(python, "pbs", {"PBS_NODEFILE": str(tmp_path / "gone")})
    assert "cannot read PBS_NODEFILE" in missing["error"]


def test_lsf_hosts_and_the_launch_host(python: str) -> None:
    mcpu = {"LSB_MCPU_HOSTS": "batch3 1 a01n01 42 a01n02 42", "LSB_HOSTS": "ignored"}
    assert read_nodes(python, "lsf", mcpu) == ["batch3", "a01n01", "a01n02"]
    assert read_nodes(python, "lsf", mcpu, drop=True) == ["a01n01", "a01n02"]
    assert read_nodes(python, "lsf", {"LSB_HOSTS": "h1 h1 h1 h2 h2"}) == ["h1", "h2"]
    assert "LSB_MCPU_HOSTS" in read_nodes(python, "lsf", {})["error"]


def test_cobalt_partition_names_node_ids(python: str) -> None:
    assert read_nodes(python, "cobalt", {"COBALT_PARTNAME": "1-3,7"}) == ["1", "2", "3", "7"]
    assert read_nodes(python, "cobalt", {"COBALT_PARTNAME": "3826-3827"}) == ["3826", "3827"]
    assert read_nodes(python, "none", {}) == ["thishost"]


def test_launcher_argv_of_every_launcher(python: str) -> None:
    code = ("import json\nfrom megarun.agent.mpi import Placement, launch_argv\n"
            "where = Placement(['n1', 'n2'], 2, 4, 1)\nout = {}\n"
            "for name in ('srun', 'mpiexec', 'mpirun', 'aprun', 'jsrun'):\n"
            "    out[name] = launch_argv(name, where, ['--x'], ['a.out', '-v'], ['FOO'])\n"
            "try:\n    launch_argv('none', where, [], ['a.out'])\n"
            "except ValueError as exc:\n    out['none'] = str(exc)\n"
            "print(json.dumps(out))\n")
    argv = in_agent_python(python, code)
    assert argv["srun"] == ["srun", "--nodes=2", "--ntasks=4", "--ntasks-per-node=2",
                            "--cpus-per-task=4", "--nodelist=n1,n2", "--x", "a.out", "-v"]
    assert argv["mpiexec"] == ["mpiexec", "-n", "4", "-ppn", "2", "--hosts", "n1,n2", "--x",
                               "a.out", "-v"]
    assert argv["mpirun"] == ["mpirun", "-n", "4", "--host", "n1:2,n2:2", "--map-by",
                              "ppr:2:node", "-x", "FOO", "--x", "a.out", "-v"]
    assert argv["aprun"] == ["aprun", "-n", "4", "-N", "2", "-d", "4", "-L", "n1,n2", "--x",
                             "a.out", "-v"]
    assert argv["jsrun"] == ["jsrun", "-n", "4", "-a", "1", "-c", "4", "-g", "1", "-r", "2",
                             "--x", "a.out", "-v"]
    assert "no MPI launcher named 'none'" in argv["none"]


# -- the agent on an allocation of several nodes (one real, two through a fake srun) -------------

def launcher_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}",
            "MEGARUN_FAKE_LAUNCHES": str(tmp_path / "launches.jsonl")}


def launches(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "launches.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


RECORD = "sh -c 'date +%s.%N; echo ${SLURMD_NODENAME:-own} $CUDA_VISIBLE_DEVICES; sleep 0.4; date +%s.%N'"


def spans(site: Site, job_ids: list[int]) -> dict[int, tuple[float, float, str, str]]:
    """(start, end, node as the job saw it, CUDA_VISIBLE_DEVICES) per job."""
    out = {}
    for job_id in job_ids:
        first, where, last = (site.job_dir(job_id) / "job.out").read_text().split("\n")[:3]
        node, _, devices = where.partition(" ")
        out[job_id] = (float(first), float(last), node, devices)
    return out


def test_single_node_jobs_share_nodes_by_packing(site: Site, tmp_path: Path) -> None:
    site.queue(*[site.job(i, RECORD, packing=2) for i in range(1, 9)])
    events = site.run("--nodelist", f"n1,{HOST},n2", "--mpi-launcher", "srun", cpus=4,
                      env=launcher_env(tmp_path))
    started = of(events, "started")
    assert all(of(events, "finished")[j]["rc"] == 0 for j in range(1, 9))
    seen = spans(site, list(range(1, 9)))
    for job_id, (_, _, node, _) in seen.items():  # the event and the job agree on the node
        assert started[job_id]["host"] == (HOST if node == "own" else node)
    own = [j for j in seen if seen[j][2] == "own"]
    assert own and all("launcher" not in started[j] for j in own)  # spawned directly
    assert {seen[j][2] for j in seen} == {"own", "n1", "n2"}
    for start, _, node, _ in seen.values():  # packing 2: never three jobs on one node
        live = [j for j, (s, e, n, _) in seen.items() if n == node and s <= start < e]
        assert len(live) <= 2, (node, live)
    argvs = launches(tmp_path)
    assert len(argvs) == 8 - len(own)
    assert all(argv[:5] == ["--nodes=1", "--ntasks=1", "--ntasks-per-node=1",
                            "--cpus-per-task=1", argv[4]] for argv in argvs)
    assert {argv[4] for argv in argvs} == {"--nodelist=n1", "--nodelist=n2"}


def test_gpus_are_given_per_node(site: Site, tmp_path: Path) -> None:
    site.queue(*[site.job(i, RECORD, gpus=1) for i in range(1, 5)])
    site.run("--nodelist", f"{HOST},n1", "--mpi-launcher", "srun", "--gpus", "0,1", cpus=2,
             env=launcher_env(tmp_path))
    seen = spans(site, [1, 2, 3, 4])
    for start, _, node, devices in seen.values():
        live = [j for j, (s, e, n, _) in seen.items() if n == node and s <= start < e]
        assert len({seen[j][3] for j in live}) == len(live), live  # no GPU given twice
        assert devices in ("0", "1")


def test_multi_node_jobs_take_whole_idle_nodes(site: Site, tmp_path: Path) -> None:
    ranks = "sh -c 'echo $SLURM_PROCID $SLURMD_NODENAME $OMP_NUM_THREADS; sleep 0.5'"
    site.queue(site.job(1, ranks, nodes=2, ranks_per_node=2, threads=2, cpus=4),
               *[site.job(i, RECORD) for i in range(2, 6)])
    events = site.run("--nodelist", f"{HOST},n1,n2", "--mpi-launcher", "srun", cpus=4,
                      env=launcher_env(tmp_path))
    started = of(events, "started")
    assert started[1]["nodes"] == ["n1", "n2"] and started[1]["ranks"] == 4
    assert started[1]["launcher"] == "srun"
    lines = sorted((site.job_dir(1) / "job.out").read_text().splitlines())
    assert lines == ["0 n1 2", "1 n1 2", "2 n2 2", "3 n2 2"]
    assert ["--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--cpus-per-task=2",
            "--nodelist=n1,n2", "/bin/sh", "-c"] == launches(tmp_path)[0][:7]
    # n1 and n2 were job 1's alone: the four one-cpu jobs all fit on the agent's own node.
    assert {node for *_, node, _ in spans(site, [2, 3, 4, 5]).values()} == {"own"}


def test_a_multi_node_job_waits_for_idle_nodes(site: Site, tmp_path: Path) -> None:
    site.queue(site.job(1, RECORD), site.job(2, RECORD),
               site.job(3, "sh -c 'date +%s.%N'", nodes=2))
    site.run("--nodelist", f"{HOST},n1", "--mpi-launcher", "srun", cpus=1,
             env=launcher_env(tmp_path))
    seen = spans(site, [1, 2])
    big_start = float((site.job_dir(3) / "job.out").read_text().split()[0])
    assert big_start >= max(end for _, end, _, _ in seen.values())


def test_without_a_launcher_jobs_that_need_one_fail_and_others_stay_home(site: Site) -> None:
    site.queue(site.job(1, "true", nodes=2), site.job(2, "true", ranks_per_node=2, cpus=2),
               *[site.job(i, RECORD) for i in range(3, 6)])
    events = site.run("--nodelist", f"{HOST},n1,n2", cpus=3)
    finished = of(events, "finished")
    assert finished[1]["reason"] == "error" and "needs 2 nodes" in finished[1]["message"]
    assert finished[2]["reason"] == "error" and "needs 2 ranks" in finished[2]["message"]
    assert {spans(site, [j])[j][2] for j in (3, 4, 5)} == {"own"}
    assert {of(events, "started")[j]["host"] for j in (3, 4, 5)} == {HOST}


def test_a_node_list_without_this_host_and_no_launcher_is_refused(site: Site) -> None:
    bundle = site.queue(site.job(1, "true"))
    process = site.start("a1", "--nodelist", "n1,n2")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and b"is not one of the nodes (n1,n2)" in err
    assert bundle.exists()  # nothing claimed


def test_nodes_from_slurm_reads_the_allocation(site: Site, tmp_path: Path) -> None:
    site.queue(site.job(1, RECORD), site.job(2, RECORD))
    env = {**launcher_env(tmp_path), "SLURM_JOB_NODELIST": "n[1-2]", "SLURMD_NODENAME": "n2"}
    events = site.run("--nodes-from", "slurm", "--mpi-launcher", "srun", cpus=1, env=env)
    assert events[0]["nodes"] == ["n2", "n1"]  # the agent's own node (SLURMD_NODENAME) first
    seen = spans(site, [1, 2])
    assert sorted(node for *_, node, _ in seen.values()) == ["n1", "n2"]  # n2 ran it itself
    assert [argv[4] for argv in launches(tmp_path)] == ["--nodelist=n1"]


def test_nodes_from_a_batch_system_that_is_not_there_is_an_error(site: Site) -> None:
    process = site.start("a1", "--nodes-from", "pbs", env={"PBS_NODEFILE": ""})
    _, err = process.communicate(timeout=30)
    assert process.returncode == 3 and b"PBS_NODEFILE is not set" in err


# -- walltime end -------------------------------------------------------------------------------

def test_walltime_end_stops_and_returns_running_and_queued_jobs(site: Site) -> None:
    site.queue(site.job(1, "sleep 300"), site.job(2, "sleep 300"), site.job(3, "true"))
    end = time.time() + 2.5
    started = time.monotonic()
    events = site.run("--walltime-end", str(end), "--end-grace", "1", cpus=2)
    assert time.monotonic() - started < 10
    returned = of(events, "returned")
    assert set(returned) == {1, 2, 3}
    for job_id in (1, 2):
        assert returned[job_id]["message"] == "allocation walltime reached"
        assert returned[job_id]["started"] is True and returned[job_id]["rc"] == -15
        assert 0.5 < returned[job_id]["runtime"] < 5
        assert not (site.job_dir(job_id) / "megarun.exit").exists()
    assert "started" not in returned[3]
    assert not of(events, "finished")
    stopped_at = of(events, "returned")[1]["t"]
    assert end - 1 - 0.3 <= stopped_at <= end
    assert events[-1]["ev"] == "agent_exited"
    assert events[-1]["message"] == "allocation walltime reached"


def test_jobs_that_cannot_end_in_time_never_start(site: Site) -> None:
    site.queue(site.job(1, "true", timeout=3600), site.job(2, "sleep 0.5", timeout=5),
               site.job(3, "true"), site.job(4, "true", timeout=120))
    events = site.run("--walltime-end", str(time.time() + 60), "--end-grace", "10")
    finished = of(events, "finished")
    assert {j: finished[j]["rc"] for j in finished} == {2: 0, 3: 0}
    returned = of(events, "returned")
    assert set(returned) == {1, 4}
    assert "walltime end" in returned[1]["message"]
    assert not of(events, "started").keys() & {1, 4}
    assert "no claimed job fits" in events[-1]["message"]


def test_idle_exit_ends_a_pilot_before_its_walltime(site: Site) -> None:
    site.queue(site.job(1, "true"))
    started = time.monotonic()
    events = site.run("--walltime-end", str(time.time() + 600), "--batch-job", "4242")
    assert time.monotonic() - started < 10
    assert of(events, "finished")[1]["rc"] == 0
    assert events[0]["batch_job"] == "4242" and events[0]["walltime_end"] > time.time()
    assert "idle" in events[-1]["message"]


# -- pools ------------------------------------------------------------------------------------------

def test_pools_split_the_queue(site: Site) -> None:
    site.queue(site.job(1, "true"), pool="p1")
    site.queue(site.job(2, "true"))
    site.queue(site.job(3, "true"), pool="p2")
    site.queue(site.job(4, "true"), pool="p1")
    in_pool = site.run("--pool", "p1", "--batch-job", "77", agent_id="pilot")
    assert sorted(of(in_pool, "finished")) == [1, 4]
    beat = site.heartbeat("pilot")
    assert beat["batch_job"] == "77" and beat["pool"] == "p1" and beat["nodes"] == 1
    plain = site.run(agent_id="plain")
    assert sorted(of(plain, "finished")) == [2]
    assert site.heartbeat("plain")["batch_job"] is None
    assert [p.name for p in (site.spool / "queue").iterdir()] == ["p2~000003.jsonl"]


@pytest.mark.parametrize("pool", ["a~b", "../x", "all"])
def test_bad_pool_names_are_refused(site: Site, pool: str) -> None:
    process = site.start("a1", "--pool", pool)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and b"pool" in err


def test_a_kill_request_reaches_a_job_on_another_node(site: Site, tmp_path: Path) -> None:
    site.queue(site.job(1, "sleep 300"), site.job(2, "sleep 300"))
    agent = site.start("a1", "--nodelist", f"{HOST},n1", "--mpi-launcher", "srun", cpus=1,
                       env=launcher_env(tmp_path))
    wait_until(lambda: len(of(site.events(), "started")) == 2)
    assert of(site.events(), "started")[2]["host"] == "n1"
    site.kill(2)
    site.kill(1)
    agent.communicate(timeout=30)
    finished = of(site.events(), "finished")
    assert {j: finished[j]["reason"] for j in finished} == {1: "killed", 2: "killed"}


def test_the_shipped_zipapp_runs_a_pilot(site: Site, tmp_path: Path) -> None:
    from megarun.sites.agentzip import agent_zipapp

    zipapp = tmp_path / agent_zipapp().name
    zipapp.write_bytes(agent_zipapp().data)
    site.queue(site.job(1, RECORD), site.job(2, RECORD, ranks_per_node=2), pool="p")
    argv = [site.python, str(zipapp), "run", "--workdir", str(site.workdir), "--agent-id", "z",
            "--cpus", "2", "--idle-exit", "0.3", "--pool", "p", "--nodelist", f"{HOST},n1",
            "--mpi-launcher", "srun", "--walltime-end", str(time.time() + 600)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(argv, env={**env, **launcher_env(tmp_path)}, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    finished = of(site.events("z"), "finished")
    assert {j: finished[j]["rc"] for j in finished} == {1: 0, 2: 0}
    assert len(launches(tmp_path)) == 1 and "--ntasks=2" in launches(tmp_path)[0]

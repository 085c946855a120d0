"""The Python API on a real area: jobs made and queried with every filter, a real run of a
small suite and its items, a local job's logs, and the mirror read on another host."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest

import megarun
from megarun.core.states import JobState, JobStatus
from megarun.errors import NotFoundError, UsageError
from megarun.homehost.areas import init_area
from tests.conftest import REPO, megarun_process

ENV_PATH = {"PYTHONPATH": str(REPO)}
HAS_PANDAS = importlib.util.find_spec("pandas") is not None


def ok(area: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = megarun_process(area, *args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def write_test(area: Path, name: str, text: str) -> None:
    folder = area / "tests" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.toml").write_text(text)


@pytest.fixture
def jobs_area(area: Path) -> Path:
    """Two apps; jobs 1-2 of sim (tagged june), 3 of post (tagged july), 4 of sim on a
    second site; job 1 ran and passed, job 2 ran and failed."""
    ok(area, "app", "add", "sim", "--command", "echo size={{ size }}; test {{ size }} != bad",
       "--param", "size=0")
    ok(area, "app", "add", "post", "--command", "echo post")
    ok(area, "site", "add", "other", "--preset", "local")
    with megarun.open_area(area) as api:
        assert api.create_jobs("sim", params=[{"size": "small"}, {"size": "bad"}],
                               tags={"campaign": "june"}) == [1, 2]
        assert api.create_jobs("post", tags={"campaign": "july"}) == [3]
    assert megarun_process(area, "launch", "--quiet").returncode == 1  # job 2 failed
    ok(area, "job", "create", "--app", "sim", "-p", "size=late", "--site", "other")
    return area


def ids(jobs: Any) -> list[int]:
    return [job.id for job in jobs]


def test_create_then_query_with_each_filter(jobs_area: Path) -> None:
    with megarun.open_area(jobs_area) as api:
        assert not api.read_only and api.root == jobs_area
        assert ids(api.jobs()) == [1, 2, 3, 4]
        assert ids(api.jobs(state="COMPLETED")) == [1, 2, 3]
        assert ids(api.jobs(state=JobState.READY)) == [4]
        assert ids(api.jobs(status="fail")) == [2]
        assert ids(api.jobs(state="FAILED")) == [2]  # any failing status, as `job ls`
        assert ids(api.jobs(status=JobStatus.PASS)) == [1, 3]
        assert ids(api.jobs(app="post")) == [3]
        assert ids(api.jobs(site="other")) == [4]
        assert ids(api.jobs(tags={"campaign": "june"})) == [1, 2]
        assert ids(api.jobs(tags={"campaign": "june"}, status="PASS")) == [1]
        assert ids(api.jobs(limit=2)) == [1, 2]
        assert ids(api.jobs(state="COMPLETED", status="FAIL", tags={"campaign": "june"},
                            limit=100)) == [2]
        failed = next(api.jobs(status="FAIL"))
    assert (failed.app, failed.site, failed.state, failed.status) == (
        "sim", "local", JobState.COMPLETED, JobStatus.FAIL)
    assert failed.exit_code == 1 and failed.params == {"size": "bad"}
    assert dict(failed.tags) == {"campaign": "june"} and failed.run is None
    assert failed.started is not None and failed.ended is not None
    assert failed.started.tzinfo == timezone.utc and failed.ended >= failed.started
    listed = json.loads(ok(jobs_area, "job", "ls", "--json", "--status", "FAIL"))[0]
    assert failed.started.timestamp() == listed["started"]  # the CLI's very row
    assert failed.ended.isoformat().startswith(listed["ended_at"][:-1])


def test_the_api_and_job_ls_list_the_same_jobs(jobs_area: Path) -> None:
    listed = json.loads(ok(jobs_area, "job", "ls", "--json"))
    with megarun.open_area(jobs_area) as api:
        jobs = list(api.jobs())
        shown = api.job(2)
    assert [(j.id, j.app, j.site, j.state.value, j.status.value, j.exit_code, dict(j.tags))
            for j in jobs] == [(r["id"], r["app"], r["site"], r["state"], r["status"],
                                r["exit_code"], r["tags"]) for r in listed]
    assert shown == jobs[1]  # one job read alone is the listed one
    assert len({*jobs, shown}) == 4  # hashable: in sets, as dict keys


def test_bad_filters_are_the_clis_errors(jobs_area: Path) -> None:
    cli = megarun_process(jobs_area, "job", "ls", "--state", "BOGUS")
    with megarun.open_area(jobs_area) as api:
        with pytest.raises(UsageError) as state:
            api.jobs(state="BOGUS")  # refused before any job is read
        assert cli.returncode == 2 and cli.stderr.strip() == f"megarun: error: {state.value}"
        with pytest.raises(UsageError, match="unknown status 'nope'"):
            api.jobs(status="nope")
        with pytest.raises(NotFoundError, match="sim"):
            api.jobs(app="nosuch")  # the message lists the apps there are
        with pytest.raises(NotFoundError):
            api.jobs(site="nosuch")
        for limit in (0, -1, 2**63, True, "5"):
            with pytest.raises(UsageError, match="limit"):
                api.jobs(limit=limit)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="state"):
            api.jobs(state=3)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="tags"):
            api.jobs(tags={"campaign": 1})  # type: ignore[dict-item]
        with pytest.raises(NotFoundError, match="no job 99"):
            api.job(99)


def test_create_jobs_validates_all_before_creating_any(jobs_area: Path) -> None:
    with megarun.open_area(jobs_area) as api:
        with pytest.raises(UsageError, match=r"params\[1\].*must be a string or a number"):
            api.create_jobs("sim", params=[{"size": "a"}, {"size": [1]}])
        with pytest.raises(UsageError, match="NUL"):
            api.create_jobs("sim", params=[{"size": "a\0b"}])
        with pytest.raises(NotFoundError, match="nosuch"):
            api.create_jobs("nosuch")
        with pytest.raises(UsageError, match="params is empty"):
            api.create_jobs("sim", params=[])
        assert ids(api.jobs()) == [1, 2, 3, 4]  # nothing half-made
        made = api.create_jobs("sim", params=[{"size": 7}], site="other", nodes=1,
                               walltime=5, after=[1], priority=3)
        job = api.job(made[0])
    assert (job.params, job.site, job.state) == ({"size": 7}, "other", JobState.READY)


def test_logs_of_a_local_job_as_job_logs_prints_them(jobs_area: Path) -> None:
    printed = ok(jobs_area, "job", "logs", "1")
    with megarun.open_area(jobs_area) as api:
        job = api.job(1)
        assert job.logs() == printed
        assert "==> job.out <==\nsize=small\n" in printed
        assert job.logs(tail=1) == ok(jobs_area, "job", "logs", "1", "--tail", "1")
        with pytest.raises(UsageError, match="no step 'nope'"):
            job.logs(step="nope")
        with pytest.raises(UsageError, match="tail"):
            job.logs(tail=-1)
        with pytest.raises(UsageError, match="not been dispatched"):
            api.job(4).logs()


def test_a_run_of_a_small_suite_and_its_items(area: Path) -> None:
    write_test(area, "hello", 'steps = [{ name = "say", cmd = "echo hi $N" }]\n'
               "[items]\nN = [1, 2]\n")
    write_test(area, "broken", 'steps = ["false"]\n')
    result = megarun_process(area, "run", "--target", "linux/x86_64", "--runname", "r1",
                             "--quiet", "--json")
    assert result.returncode == 1, result.stderr  # broken failed
    status = json.loads(megarun_process(area, "status", "--target", "linux/x86_64",
                                        "--runname", "r1", "--json").stdout)
    with megarun.open_area(area) as api:
        run = api.run("linux/x86_64", "r1")
        items = run.items()
        listed = api.runs()
        hello = api.jobs(run="linux/x86_64/r1", test="hello")
        assert [j.item for j in hello] == ["1", "2"]
        with pytest.raises(NotFoundError, match="r1"):
            api.run("linux/x86_64", "nosuch")  # the message names the runs there are
        assert listed[0].items() == items  # read now, from the open area
    assert run.items() == items  # read with the run by area.run
    with pytest.raises(UsageError, match="closed"):
        listed[0].items()
    assert (run.status, dict(run.counts)) == (status["status"], status["counts"])
    assert run.status == "FAIL" and (run.jobs, run.done, run.stale) == (3, 3, 0)
    assert [(i.test, i.item, i.status) for i in items] == [
        ("broken", "", JobStatus.FAIL), ("hello", "1", JobStatus.PASS),
        ("hello", "2", JobStatus.PASS)]
    assert [(i.id, i.state.value, i.status.value) for i in items] == [
        (i["id"], i["state"], i["status"]) for i in status["items"]]
    assert run.started is not None and run.ended is not None and run.started <= run.ended
    assert run.started.tzinfo == timezone.utc
    assert listed == [run]  # runs() lists the same run (its items read when asked)
    assert {run: 1}[listed[0]] == 1 and len(set(items)) == 3


def test_runs_ls_json_carries_the_rollup_counts(area: Path) -> None:
    write_test(area, "broken", 'steps = ["false"]\n')
    megarun_process(area, "run", "--target", "linux/x86_64", "--runname", "r1", "--quiet")
    rows = json.loads(ok(area, "runs", "ls", "--json"))
    assert rows[0]["counts"] == {"FAIL": 1} and rows[0]["status"] == "FAIL"


def test_another_host_reads_the_mirror_and_writes_are_refused_as_the_cli_refuses(
        area: Path, tmp_path: Path) -> None:
    node9 = {"MEGARUN_HOSTNAME": "node9"}  # the area's home host is node9, not this host
    ok(area, "app", "add", "sim", "--command", "echo {{ size }}", "--param", "size=0",
       env=node9)
    ok(area, "job", "create", "--app", "sim", "-p", "size=1", "-t", "k=v", env=node9)
    work = Path(json.loads((area / ".megarun" / "homehost").read_text())["db"])
    before = work.stat().st_mtime_ns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api = megarun.open_area(area)
    with api:
        told = [str(w.message) for w in caught if issubclass(w.category, megarun.ReadingMirror)]
        assert len(told) == 1 and told[0].startswith(
            "reading the mirror of node9's working database, written ")
        assert caught[0].filename == __file__  # the warning points at the caller
        assert api.read_only and api.home_host == "node9"
        assert [(j.id, dict(j.tags)) for j in api.jobs(tags={"k": "v"})] == [(1, {"k": "v"})]
        with pytest.raises(megarun.NotHomeHost) as refused:
            api.create_jobs("sim", params=[{"size": "2"}])
    assert work.stat().st_mtime_ns == before
    # The CLI refuses a write into this area from this host with the very same words.
    other = tmp_path / "other"
    init_area(other, keys=["os"])
    cli = megarun_process(other, "migrate", "--destination", str(area), "--dry-run")
    assert cli.returncode == refused.value.exit_code == 3
    assert cli.stderr.strip() == f"megarun: error: {refused.value}"


def test_open_area_errors_are_the_clis(tmp_path: Path) -> None:
    with pytest.raises(megarun.AreaNotFound) as missing:
        megarun.open_area(tmp_path)
    cli = subprocess.run([sys.executable, "-m", "megarun", "--area", str(tmp_path), "job", "ls"],
                         capture_output=True, text=True, env={**os.environ, **ENV_PATH}, check=False)
    assert cli.stderr.strip() == f"megarun: error: {missing.value}"


def test_hostile_paths_and_a_closed_area_are_clear_errors(area: Path) -> None:
    for path in ("a\0b", b"/tmp", ""):
        with pytest.raises(UsageError, match="open_area"):
            megarun.open_area(path)  # type: ignore[arg-type]
    api = megarun.open_area(area)
    assert repr(api) == f"<megarun.Area {area}>"
    api.close()
    api.close()  # twice is harmless
    with pytest.raises(UsageError, match="closed"):
        api.jobs()
    assert repr(api) == "<megarun.Area (closed)>"


def test_open_area_finds_the_area_from_the_working_directory(
        area: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (area / "tests").mkdir(exist_ok=True)
    monkeypatch.chdir(area / "tests")
    with megarun.open_area() as api:
        assert api.root == area and list(api.jobs()) == []


def test_import_megarun_stays_light() -> None:
    code = ("import sys, megarun; assert megarun.__version__; "
            "heavy = [m for m in ('peewee', 'paramiko', 'rich', 'typer', 'megarun.api') "
            "if m in sys.modules]; assert not heavy, heavy; "
            "assert megarun.open_area.__module__ == 'megarun.api.area'; "
            "assert 'peewee' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **ENV_PATH}, check=False)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        megarun.nosuch  # noqa: B018


@pytest.mark.skipif(HAS_PANDAS, reason="pandas is installed: its absence cannot be tested")
def test_frames_without_pandas_say_how_to_install_it(jobs_area: Path) -> None:
    with megarun.open_area(jobs_area) as api:
        with pytest.raises(ImportError, match="pip install pandas"):
            api.job_frame()


@pytest.mark.skipif(not HAS_PANDAS, reason="pandas is not installed here (megarun does not "
                    "depend on it); the frame of jobs needs it")
def test_job_frame_with_pandas(jobs_area: Path) -> None:
    with megarun.open_area(jobs_area) as api:
        frame = api.job_frame(tags={"campaign": "june"})
    assert list(frame["id"]) == [1, 2] and list(frame["status"]) == [JobStatus.PASS,
                                                                      JobStatus.FAIL]

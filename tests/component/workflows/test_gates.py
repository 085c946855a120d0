"""Launch gates end to end: max_concurrent_jobs, jobgroup caps, minspace, the launch limiter."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from megarun.homehost.areas import init_area
from tests.conftest import megarun_process

RUN = ("--target", "linux/x86_64", "--runname", "r1")


def make_area(tmp_path: Path, limits: str, tests: dict[str, str]) -> Path:
    root = tmp_path / "area"
    init_area(root, keys=["os", "arch"])
    config = root / "megarun.toml"
    config.write_text(config.read_text() + "\n" + limits)
    for name, text in tests.items():
        folder = root / "tests" / name
        folder.mkdir(parents=True)
        (folder / "test.toml").write_text(text)
    return root


def intervals(area: Path, where: str = "1") -> list[tuple[float, float]]:
    with sqlite3.connect(area / ".megarun" / "work.db") as db:
        rows = db.execute(f"SELECT started, ended FROM job WHERE {where}").fetchall()
    assert all(s and e for s, e in rows), rows
    return [(float(s), float(e)) for s, e in rows]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of spans that overlap at one instant."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def sleeper(items: int, seconds: float, extra: str = "") -> str:
    values = ", ".join(str(n) for n in range(items))
    return f'{extra}steps = ["sleep {seconds}"]\n[items]\nN = [{values}]\n'


def test_max_concurrent_jobs_caps_what_runs_at_once(tmp_path: Path) -> None:
    area = make_area(tmp_path, "[limits]\nmax_concurrent_jobs = 2\n", {"t": sleeper(6, 0.4)})
    result = megarun_process(area, "run", *RUN, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    spans = intervals(area)
    assert len(spans) == 6
    assert most_at_once(spans) == 2  # the agent has more cpus than that: the cap held it back


def test_jobgroup_cap_limits_its_group_only(tmp_path: Path) -> None:
    area = make_area(tmp_path, "[jobgroups]\nheavy = 1\n", {
        "big": sleeper(3, 0.4, 'jobgroup = "heavy"\n'),
        "small": sleeper(3, 0.4, 'jobgroup = "light"\n'),
    })
    result = megarun_process(area, "run", *RUN, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    assert most_at_once(intervals(area, "jobgroup = 'heavy'")) == 1
    assert len(intervals(area, "jobgroup = 'light'")) == 3


def test_minspace_refuses_to_launch_and_loses_nothing(tmp_path: Path) -> None:
    area = make_area(tmp_path, '[limits]\nminspace = "900T"\n', {"t": sleeper(3, 0)})
    result = megarun_process(area, "run", *RUN, "--json", timeout=60)
    assert result.returncode == 3
    assert "not launching: only" in result.stderr and "limits.minspace" in result.stderr
    assert {i["state"] for i in json.loads(result.stdout)["items"]} == {"READY"}
    config = area / "megarun.toml"
    config.write_text(config.read_text().replace('"900T"', '"1M"'))
    again = megarun_process(area, "run", *RUN, "--json", timeout=60)
    assert again.returncode == 0, again.stderr
    items = json.loads(again.stdout)["items"]
    assert len(items) == 3 and {i["status"] for i in items} == {"PASS"}


def test_launch_limiter_holds_then_lets_go(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    limiter = tmp_path / "limiter.sh"
    # Each call records when it answered: a job can only start after the answer that let it go.
    limiter.write_text(f"""#!/bin/sh
echo "$MEGARUN_SITE $MEGARUN_READY_JOBS $MEGARUN_ACTIVE_JOBS $(date +%s.%N)" >> {calls}
n=$(wc -l < {calls})
if [ "$n" -le 2 ]; then echo "machine busy ($n)" >&2; exit 1; fi
echo 1
""")
    limiter.chmod(0o755)
    area = make_area(tmp_path, f'[limits]\nlaunch_limiter = "{limiter}"\nlaunch_limiter_interval = 0.2\n',
                     {"t": sleeper(3, 0.2)})
    result = megarun_process(area, "run", *RUN, "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line.rsplit(" ", 1) for line in calls.read_text().splitlines()]
    assert len(lines) >= 5  # two holds, then one job per answer
    assert lines[0][0] == "local 3 0"
    answered = [float(when) for _, when in lines]
    lets_go = answered[2:]  # the first two calls held
    starts = sorted(s for s, _ in intervals(area))
    # one job per answer: the k-th job started after the k-th answer that let one go
    assert all(start > go for start, go in zip(starts, lets_go, strict=False)), (starts, lets_go)
    # asked at most every 0.2 s: n calls span at least (n - 1) intervals (0.1 s for the
    # shell's own start-up jitter at both ends)
    assert answered[-1] - answered[0] >= (len(answered) - 1) * 0.2 - 0.1, answered


def test_launch_limiter_that_cannot_run_is_refused_before_anything_starts(tmp_path: Path) -> None:
    area = make_area(tmp_path, '[limits]\nlaunch_limiter = "./nosuch.sh --flag"\n',
                     {"t": sleeper(1, 0)})
    result = megarun_process(area, "run", *RUN, timeout=60)
    assert result.returncode == 2
    assert "launch_limiter" in result.stderr and "nosuch.sh" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("limits", "message"), [
    ('[limits]\nminspace = "lots"\n', "limits.minspace"),
    ("[limits]\nmax_concurrent_jobs = -1\n", "max_concurrent_jobs"),
    ("[limits]\nmax_jobs = 3\n", "unknown key 'max_jobs'"),
    ("[jobgroups]\nheavy = 0\n", "jobgroups.heavy"),
    ('[jobgroups]\nheavy = "two"\n', "jobgroups.heavy"),
])
def test_bad_limits_are_refused(tmp_path: Path, limits: str, message: str) -> None:
    area = make_area(tmp_path, limits, {"t": sleeper(1, 0)})
    result = megarun_process(area, "run", *RUN)
    assert result.returncode == 2 and message in result.stderr, result.stderr

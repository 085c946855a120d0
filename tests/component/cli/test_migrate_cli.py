"""`megarun migrate` end to end: runs made by `megarun run` move to another area, which lists
them; commands on a MOVED run here name the destination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megarun.homehost.areas import init_area
from tests.conftest import megarun_process


def _ok(area: Path, *args: str) -> str:
    done = megarun_process(area, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture
def areas(tmp_path: Path) -> tuple[Path, Path]:
    source = init_area(tmp_path / "source", keys=["os"])
    for test, body in (("t1", 'steps = ["echo one"]\n[items]\nN = [1, 2]\n'),
                       ("t2", 'steps = ["echo two"]\nwaiton = ["t1"]\n')):
        (source / "tests" / test).mkdir()
        (source / "tests" / test / "test.toml").write_text(body)
    dest = init_area(tmp_path / "dest", keys=["os"])
    for target in ("linux", "mac"):
        _ok(source, "run", "--target", target, "--runname", "r1", "-q")
    return source, dest


def test_migrate_moves_runs_the_destination_lists(areas: tuple[Path, Path]) -> None:
    source, dest = areas
    dry = json.loads(_ok(source, "migrate", "--destination", str(dest), "--target", "lin*",
                         "--dry-run", "--json"))
    assert [(m["target"], m["jobs"]) for m in dry["moved"]] == [("linux", 3)] and dry["dry_run"]
    before = json.loads(_ok(source, "status", "--target", "linux", "--runname", "r1", "--json"))

    out = megarun_process(source, "migrate", "--destination", str(dest), "--target", "linux")
    assert out.returncode == 0, out.stderr
    assert "moved 1 run(s), 3 job(s)" in out.stderr and "linux" in out.stdout

    listed = json.loads(_ok(dest, "runs", "ls", "--json"))
    assert [(r["target"], r["runname"], r["jobs"], r["status"]) for r in listed] == [
        ("linux", "r1", 3, "PASS")]
    there = json.loads(_ok(dest, "status", "--target", "linux", "--runname", "r1", "--json"))
    assert [(i["test"], i["item"], i["state"], i["status"]) for i in there["items"]] == [
        (i["test"], i["item"], i["state"], i["status"]) for i in before["items"]]
    here = {r["target"]: r for r in json.loads(_ok(source, "runs", "ls", "--json"))}
    assert here["linux"]["status"] == "MOVED" and here["linux"]["moved_to"] == str(dest)
    assert here["linux"]["jobs"] == 0 and here["mac"]["jobs"] == 3


@pytest.mark.parametrize("command", [
    ("status",), ("rerun",), ("clean",), ("kill",), ("runs", "export"), ("run", "-q")])
def test_commands_on_a_moved_run_name_the_destination(areas: tuple[Path, Path],
                                                      command: tuple[str, ...]) -> None:
    source, dest = areas
    _ok(source, "migrate", "--destination", str(dest), "--target", "linux")
    done = megarun_process(source, *command, "--target", "linux", "--runname", "r1")
    assert done.returncode == 2
    assert f"run linux/r1 was moved to the area {dest}; use it there" in done.stderr


def test_second_migrate_refuses_what_the_destination_has(areas: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    source, dest = areas
    twin = init_area(tmp_path / "twin", keys=["os"])
    (twin / "tests").rmdir()
    (twin / "tests").symlink_to(source / "tests")
    _ok(twin, "run", "--target", "linux", "--runname", "r1", "-q")
    _ok(source, "migrate", "--destination", str(dest))
    result = json.loads(_ok(twin, "migrate", "--destination", str(dest), "--json"))
    assert result["moved"] == []
    assert [r["reason"] for r in result["refused"]] == [
        "the destination already has a run linux/r1"]
    assert json.loads(_ok(twin, "runs", "ls", "--json"))[0]["jobs"] == 3


def test_bad_options(areas: tuple[Path, Path], tmp_path: Path) -> None:
    source, dest = areas
    bad_age = megarun_process(source, "migrate", "--destination", str(dest), "--older-than", "x")
    assert bad_age.returncode == 2 and "'x': expected a duration" in bad_age.stderr
    itself = megarun_process(source, "migrate", "--destination", str(source))
    assert itself.returncode == 2 and "is this area itself" in itself.stderr
    nowhere = megarun_process(source, "migrate", "--destination", str(tmp_path / "none"))
    assert nowhere.returncode == 2 and "not a megarun area" in nowhere.stderr

"""`megarun archive ...` and `--full-db` through the real CLI, on a run of the example suite."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from bench.archive import populate
from megarun.config.area import locate_area
from megarun.homehost.home import working_db_path
from tests.conftest import REPO, megarun_process

NIGHTLY = ("--target", "linux/x86_64", "--runname", "nightly")


def _json(area: Path, *args: str) -> Any:
    result = megarun_process(area, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    area = tmp_path / "suite"
    shutil.copytree(REPO / "examples" / "regression", area)
    return area


def test_archived_run_is_listed_with_full_db_and_restored(suite: Path) -> None:
    ran = megarun_process(suite, "run", *NIGHTLY, "--json", timeout=180)
    assert ran.returncode == 0, ran.stderr
    status = json.loads(ran.stdout)
    jobs = len(status["items"])

    dry = _json(suite, "archive", "reduce", "--older-than", "0", "--dry-run")
    assert dry["dry_run"] and dry["jobs"] == jobs
    assert _json(suite, "runs", "ls") != []  # still here after the dry run

    moved = _json(suite, "archive", "reduce", "--older-than", "0")
    assert [(r["target"], r["runname"], r["jobs"]) for r in moved["runs"]] == [
        ("linux/x86_64", "nightly", jobs)]
    assert _json(suite, "runs", "ls") == []
    gone = megarun_process(suite, "status", *NIGHTLY)
    assert gone.returncode == 2 and "no run 'nightly'" in gone.stderr

    assert _json(suite, "status", *NIGHTLY, "--full-db") == status
    assert [r["runname"] for r in _json(suite, "runs", "ls", "--full-db")] == ["nightly"]
    assert len(_json(suite, "job", "ls", "--full-db")) == jobs
    assert _json(suite, "job", "ls") == []
    first = status["items"][0]["id"]
    shown = _json(suite, "job", "show", str(first), "--full-db")
    assert shown["id"] == first and shown["events"][-1]["to"] == "COMPLETED"
    junit = megarun_process(suite, "runs", "export", *NIGHTLY, "--format", "junit", "--full-db")
    assert junit.returncode == 0 and junit.stdout.count("<testcase") == jobs

    listed = _json(suite, "archive", "ls")
    assert [(r["runname"], r["jobs"]) for r in listed] == [("nightly", jobs)]
    table = megarun_process(suite, "archive", "ls", "--target", "linux/*")
    assert "nightly" in table.stdout and "PASS:" in table.stdout

    back = _json(suite, "archive", "restore", "--runname", "night*")
    assert back["jobs"] == jobs and back["direction"] == "restore"
    assert _json(suite, "status", *NIGHTLY) == status
    assert _json(suite, "archive", "ls") == []


def test_reduce_reports_in_a_table(area: Path) -> None:
    megarun_process(area, "job", "ls")
    populate(working_db_path(locate_area(str(area))), 2, 3, time.time() - 40 * 86400)
    recent = populate(working_db_path(locate_area(str(area))), 1, 3, time.time(), prefix="new")
    result = megarun_process(area, "archive", "reduce")  # default: idle for 30 days
    assert result.returncode == 0, result.stderr
    assert "moved 2 run(s), 6 job(s) to completed-runs.db" in result.stdout
    assert [r["runname"] for r in _json(area, "runs", "ls")] == [f"new{recent[0]}"]
    nothing = megarun_process(area, "archive", "restore", "--runname", "nothing-like-this")
    assert nothing.returncode == 0 and "no run to move" in nothing.stderr


def test_full_db_without_archive_reads_the_working_db(area: Path) -> None:
    assert _json(area, "runs", "ls", "--full-db") == []
    assert _json(area, "job", "ls", "--full-db") == []
    assert _json(area, "archive", "ls") == []


@pytest.mark.parametrize("age", ["soon", "-3d", "3x"])
def test_bad_age_is_a_usage_error(area: Path, age: str) -> None:
    result = megarun_process(area, "archive", "reduce", "--older-than", age)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("megarun: error: --older-than")
    assert len(result.stderr.strip().splitlines()) == 1


def test_another_host_reads_the_archive_through_the_mirror(area: Path) -> None:
    """On a host that is not the home, --full-db and `archive ls` read the mirror and the
    archive read-only (immutable): nothing is written, no lock is taken."""
    from megarun.homehost.home import HOSTNAME_ENV

    megarun_process(area, "job", "ls")
    ids = populate(working_db_path(locate_area(str(area))), 2, 3, time.time() - 40 * 86400)
    assert _json(area, "archive", "reduce", "--runname", "r1")["jobs"] == 3
    archive = area / ".megarun" / "completed-runs.db"
    stamp = archive.stat().st_mtime_ns
    (area / ".megarun" / "locks" / "moves.lock").unlink(missing_ok=True)
    other = {HOSTNAME_ENV: "node2-of-the-test"}

    def elsewhere(*args: str) -> Any:
        result = megarun_process(area, *args, "--json", env=other)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert [r["runname"] for r in elsewhere("runs", "ls")] == ["r2"]
    assert [r["runname"] for r in elsewhere("runs", "ls", "--full-db")] == ["r1", "r2"]
    assert [r["id"] for r in elsewhere("archive", "ls")] == [ids[0]]
    assert len(elsewhere("job", "ls", "--full-db")) == 6
    assert archive.stat().st_mtime_ns == stamp
    assert not (area / ".megarun" / "locks" / "moves.lock").exists()
    assert not list((area / ".megarun").glob("completed-runs.db-*"))


def test_a_run_named_exactly_moves_whatever_its_age(area: Path) -> None:
    """Issue 14, item 6: `--target T --runname R` moved nothing because of the 30-day default."""
    megarun_process(area, "job", "ls")
    [young] = populate(working_db_path(locate_area(str(area))), 1, 3, time.time(), prefix="young")
    moved = _json(area, "archive", "reduce", "--target", "linux/x0", "--runname", f"young{young}")
    assert [(r["target"], r["runname"]) for r in moved["runs"]] == [("linux/x0", f"young{young}")]
    assert moved["older_than"] is None and moved["jobs"] == 3
    assert _json(area, "runs", "ls") == []


def test_runs_left_out_of_a_named_reduce_are_counted_with_what_to_do(area: Path) -> None:
    megarun_process(area, "job", "ls")
    db_path = working_db_path(locate_area(str(area)))
    first, _ = populate(db_path, 2, 3, time.time(), prefix="nightly-")
    kept = megarun_process(area, "archive", "reduce", "--runname", "nightly-*")  # a glob: 30d
    assert kept.returncode == 0, kept.stderr
    assert "no run to move" in kept.stderr
    assert ("2 runs matched but are younger than 30 d; add --older-than 0 to move them"
            in kept.stderr)
    dry = _json(area, "archive", "reduce", "--runname", "nightly-*", "--dry-run")
    assert dry["runs"] == [] and dry["older_than"] == 30 * 86400
    assert dry["matched_but_left"] == {"too_young": 2, "unfinished": 0}
    with sqlite3.connect(db_path) as db:  # one job of the first run still runs
        db.execute("UPDATE job SET state = 'RUNNING' WHERE id = "
                   "(SELECT min(id) FROM job WHERE run_id = ?)", (first,))
    moved = megarun_process(area, "archive", "reduce", "--runname", "nightly-*",
                            "--older-than", "0")
    assert moved.returncode == 0, moved.stderr
    assert "moved 1 run(s), 3 job(s)" in moved.stdout
    assert "1 run matched but is not finished: jobs still wait or run" in moved.stderr
    assert "younger" not in moved.stderr
    assert [r["runname"] for r in _json(area, "runs", "ls")] == [f"nightly-{first}"]

"""Several megarun processes writing the same area at once: no lock error leaks, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import megarun_process, spawn_megarun


def test_parallel_writers_lose_nothing(area: Path) -> None:
    assert megarun_process(area, "app", "add", "noop", "--command", "true").returncode == 0
    writers = [spawn_megarun(area, "job", "create", "--app", "noop", "--count", "2000",
                             "-t", f"writer={n}") for n in range(4)]
    readers = [spawn_megarun(area, "job", "ls", "--by-state", "--json") for _ in range(4)]
    for process in writers + readers:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
    listed = megarun_process(area, "job", "ls", "--by-state", "--json")
    assert json.loads(listed.stdout) == [{"state": "READY", "status": "n/a", "count": 8000}]
    for n in range(4):
        tagged = megarun_process(area, "job", "ls", "-t", f"writer={n}", "--json", "--limit", "0")
        ids = [job["id"] for job in json.loads(tagged.stdout)]
        assert len(ids) == 2000
        assert ids == list(range(ids[0], ids[0] + 2000))  # each batch got consecutive ids


def test_lock_that_never_frees_is_a_clear_error(area: Path) -> None:
    import sqlite3

    assert megarun_process(area, "app", "add", "noop", "--command", "true").returncode == 0
    holder = sqlite3.connect(area / ".megarun" / "work.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = megarun_process(area, "job", "create", "--app", "noop",
                                 env={"MEGARUN_DB_TIMEOUT": "0.5"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 3
    assert result.stderr.startswith("megarun: error: the database stayed locked")
    assert len(result.stderr.strip().splitlines()) == 1
    after = megarun_process(area, "job", "ls", "--json")
    assert json.loads(after.stdout) == []

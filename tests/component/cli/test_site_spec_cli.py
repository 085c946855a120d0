"""A site whose stored settings no longer validate (saved by an earlier megarun, or edited in
the database) is one line naming the site and the key, exit 2, wherever it is read; it can
still be removed. Sites that validate show their settings as they were saved."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from megarun.config.area import locate_area
from megarun.homehost.home import working_db_path


def _store(area: Path, sql: str) -> None:
    with sqlite3.connect(working_db_path(locate_area(str(area)))) as db:
        db.execute(sql)


def _one_line(result: Any, *parts: str) -> None:
    assert result.code == 2, (result.out, result.err)
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    for part in parts:
        assert part in result.err, result.err


def test_a_stored_site_that_no_longer_validates_is_one_line(cli: Any, area: Path) -> None:
    assert cli("site", "add", "hpc", "--preset", "generic-slurm").code == 0
    _store(area, "UPDATE site SET settings = json_set(settings, '$.node.cpus', 'many')")
    for argv in (["site", "show", "hpc"], ["site", "ls"],
                 ["queue", "submit", "--site", "hpc", "--nodes", "1", "--walltime", "5"]):
        _one_line(cli(*argv), "site 'hpc' settings", "node.cpus", "megarun site rm hpc")
    assert cli("site", "rm", "hpc").code == 0
    assert cli("site", "ls", "--json").json() == []


def test_stored_settings_that_are_not_a_table_are_one_line(cli: Any, area: Path) -> None:
    assert cli("site", "add", "hpc", "--preset", "generic-slurm").code == 0
    _store(area, "UPDATE site SET settings = 'not json'")
    _one_line(cli("site", "show", "hpc", "--json"), "site 'hpc' settings", "not a JSON table")


def test_site_show_keeps_the_stored_table(cli: Any, area: Path) -> None:
    added = cli("site", "add", "p", "--preset", "polaris", "--set", "account=12345",
                "--set", "node.cpus=16")
    assert added.code == 0, added.err
    shown = cli("site", "show", "p", "--json").json()
    assert shown["settings"]["account"] == "12345" and shown["settings"]["node"]["cpus"] == 16
    assert shown["settings"]["queues"]["prod"] == {
        "min_nodes": 10, "max_nodes": 496, "max_walltime": 1440, "min_walltime": 5,
        "walltime_bins": [{"max_nodes": 24, "max_walltime": 180},
                          {"max_nodes": 99, "max_walltime": 360}],
        "project_max_queued": 100, "project_max_running": 10,
        "description": "Production, 10-496 nodes; 3 h up to 24 nodes, 6 h up to 99, 24 h above"}
    assert list(shown) == ["schema_version", "name", "preset", "scheduler", "host", "workdir",
                           "allocation", "workdir_from", "checked", "source", "settings"]
    assert (shown["checked"], shown["source"]) == (
        "2026-11", "https://docs.alcf.anl.gov/polaris/running-jobs/")


def test_site_presets_lists_when_and_against_what_each_was_checked(cli: Any, area: Path) -> None:
    rows = {row["name"]: row for row in cli("site", "presets", "--json").json()}
    assert rows["aurora"]["checked"] == "2026-11"
    assert rows["aurora"]["source"] == "https://docs.alcf.anl.gov/aurora/running-jobs-aurora/"
    assert {"crux", "bebop", "cooley", "cori-haswell", "cori-knl", "theta-gpu"} <= set(rows)
    assert rows["local"]["checked"] == "" and rows["local"]["source"] == ""
    table = cli("site", "presets")
    assert table.code == 0 and "2026-11" in table.out

"""Presets of your own: the area's site-presets/ and $XDG_CONFIG_HOME/megarun/presets/, listed
by `site presets` with their origin; the first folder that has a name wins and says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, megarun_process

MINE = '''description = "My workstation"
scheduler = "slurm"
mpi_launcher = "srun"
[queues.short]
max_nodes = 2
max_walltime = "1h30m"
'''


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary XDG_CONFIG_HOME; its megarun/presets/ is the user's preset folder."""
    home = tmp_path / "config"
    (home / "megarun" / "presets").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home / "megarun" / "presets"


def test_a_user_preset_is_listed_and_used(cli: Any, config_home: Path) -> None:
    (config_home / "mine.toml").write_text(MINE)
    rows = {row["name"]: row for row in cli("site", "presets", "--json").json()}
    assert rows["mine"]["origin"] == "user" and rows["mine"]["description"] == "My workstation"
    assert rows["mine"]["path"] == str(config_home / "mine.toml")
    assert rows["local"]["origin"] == "shipped" and rows["local"]["hides"] == ""
    added = cli("site", "add", "ws", "--preset", "mine", "--json")
    assert added.code == 0, added.err
    shown = cli("site", "show", "ws", "--json").json()
    assert shown["preset"] == "mine" and shown["settings"]["queues"]["short"]["max_walltime"] == 90


def test_a_user_preset_replaces_the_shipped_one_and_says_so(cli: Any, config_home: Path) -> None:
    (config_home / "polaris.toml").write_text(MINE)
    [row] = [row for row in cli("site", "presets", "--json").json() if row["name"] == "polaris"]
    assert (row["origin"], row["hides"], row["description"]) == ("user", "shipped",
                                                                 "My workstation")
    listed = cli("site", "presets")
    assert listed.code == 0
    assert (f"preset 'polaris' (user, {config_home / 'polaris.toml'}) replaces the shipped one "
            "of the same name") in listed.err


def test_the_areas_presets_win_over_the_users(cli: Any, area: Path, config_home: Path) -> None:
    (config_home / "mine.toml").write_text(MINE)
    (area / "site-presets").mkdir()
    (area / "site-presets" / "mine.toml").write_text(MINE.replace("My workstation", "Team box"))
    [row] = [row for row in cli("site", "presets", "--json").json() if row["name"] == "mine"]
    assert (row["origin"], row["hides"], row["description"]) == ("area", "user", "Team box")


def test_outside_an_area_the_users_presets_are_listed(tmp_path: Path, config_home: Path) -> None:
    (config_home / "mine.toml").write_text(MINE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MEGARUN_AREA", None)
    done = subprocess.run([sys.executable, "-m", "megarun", "site", "presets"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "mine" in done.stdout and "user" in done.stdout


def test_a_misspelt_preset_suggests_the_name(area: Path) -> None:
    done = megarun_process(area, "site", "add", "p", "--preset", "polaria")
    assert done.returncode == 2
    assert "unknown preset 'polaria' (did you mean 'polaris'?); valid presets: local" in done.stderr


def test_a_bad_user_preset_names_its_file(cli: Any, config_home: Path) -> None:
    (config_home / "bad.toml").write_text('scheduler = "slurm"\nqueus = {}\n')
    result = cli("site", "add", "b", "--preset", "bad")
    assert result.code == 2
    assert f"{config_home / 'bad.toml'}: unknown key 'queus' (did you mean 'queues'?)" in result.err

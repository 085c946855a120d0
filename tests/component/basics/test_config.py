"""megarun.toml, app files and presets: good input loads, bad input names the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from megarun.config.apps import load_app_file, render_command, resolve_params, validate_app
from megarun.config.area import find_area_root, load_area_config, locate_area
from megarun.config.presets import apply_overrides, load_preset, preset_names
from megarun.errors import AreaNotFound, ConfigError, NotFoundError, UsageError


def test_area_found_by_walking_up(area: Path) -> None:
    deep = area / "tests" / "a" / "b"
    deep.mkdir(parents=True)
    assert find_area_root(deep) == area
    assert locate_area(cwd=deep).root == area
    assert locate_area(cwd=deep).config.keys == ("os", "arch")


def test_env_override(area: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEGARUN_AREA", str(area))
    assert locate_area(cwd=tmp_path).root == area
    monkeypatch.setenv("MEGARUN_AREA", str(tmp_path))
    with pytest.raises(AreaNotFound, match="not a megarun area"):
        locate_area()


def test_no_area(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEGARUN_AREA", raising=False)
    with pytest.raises(AreaNotFound, match="megarun init"):
        locate_area(cwd=tmp_path)


@pytest.mark.parametrize(("text", "message"), [
    ("keys = [", "invalid TOML"),
    ("colour = 'red'", "unknown key 'colour'"),
    ("keys = 'os'", "key 'keys' must be a list"),
    ("[launcher]\nretries = -1", "launcher.retries' must not be negative"),
    ("[launcher]\nretry = 1", "[launcher] unknown key 'retry'"),
    ("keys = ['o s']", "key name 'o s'"),
])
def test_bad_area_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "megarun.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_area_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_app_file_and_quoting(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text('command = "sim --size {{ size }} --mode {{ mode }}"\n[params]\nmode = "fast"\n')
    app = load_app_file(path)
    assert app.name == "sim" and app.params == {"size": None, "mode": "fast"}
    with pytest.raises(UsageError, match="needs parameter 'size'"):
        resolve_params(app, {})
    with pytest.raises(UsageError, match="no parameter 'colour'"):
        resolve_params(app, {"size": "1", "colour": "x"})
    nasty = "$(touch x); rm -rf / `id` 'q\"\nnext"
    command = render_command(app.command, resolve_params(app, {"size": nasty}))
    assert command.startswith("sim --size '")
    import shlex

    assert shlex.split(command)[2] == nasty


@pytest.mark.parametrize(("table", "message"), [
    ({"command": "x", "colour": 1}, "unknown key 'colour'"),
    ({}, "missing key 'command'"),
    ({"command": "{{ x"}, "bad command template"),
    ({"command": "x", "retries": "2"}, "key 'retries' must be an integer"),
    ({"command": "x", "resources": {"gpus": 1}}, "[resources] unknown key 'gpus'"),
    ({"command": "x", "name": "a b"}, "invalid app name"),
])
def test_bad_app_definitions(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_app({"name": "a", **table} if "name" not in table else table, "apps/a.toml")
    assert "apps/a.toml" in str(info.value) or "app name" in str(info.value)
    assert message in str(info.value)


def test_presets_ship_and_validate() -> None:
    names = preset_names()
    assert "local" in names
    for name in names:
        assert load_preset(name).scheduler in ("local", "slurm", "pbs", "lsf", "cobalt")
    with pytest.raises(NotFoundError, match=r"valid presets: .*local"):
        load_preset("nope")


def test_overrides() -> None:
    settings = apply_overrides({"node": {"cpus": 0}}, ["node.cpus=4", "slurm.qos=debug",
                                                       "flag=true"])
    assert settings == {"node": {"cpus": 4}, "slurm": {"qos": "debug"}, "flag": True}
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["novalue"])


@pytest.mark.parametrize(("text", "size"), [
    ('minspace = "500M"', 500 << 20), ('minspace = "2G"', 2 << 30), ('minspace = "1.5GiB"', 3 << 29),
    ("minspace = 100", 100 << 20), ('minspace = "64k"', 64 << 10),
])
def test_launch_limits_sizes(tmp_path: Path, text: str, size: int) -> None:
    path = tmp_path / "megarun.toml"
    path.write_text(f'[limits]\n{text}\nlaunch_limiter = "./limit.sh --max \'4 jobs\'"\n'
                    "[jobgroups]\nheavy = 2\n")
    limits = load_area_config(path).limits
    assert limits.minspace == size
    assert limits.launch_limiter == ("./limit.sh", "--max", "4 jobs")
    assert limits.jobgroups == {"heavy": 2} and limits.any

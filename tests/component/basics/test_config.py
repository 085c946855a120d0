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
    ("[launcher]\nretry = 1", "[launcher] unknown key 'retry' (did you mean 'retries'?)"),
    ("defualt_site = 'x'", "unknown key 'defualt_site' (did you mean 'default_site'?)"),
    ("[launcher]\nheartbeat = '5 s'\ndead_after = 'soon'",
     "key 'launcher.dead_after' 'soon': expected a duration"),
    ("[limits]\nminspace = '20 gigs'", "key 'limits.minspace' '20 gigs': expected a size"),
    ("keys = ['o s']", "key name 'o s'"),
])
def test_bad_area_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "megarun.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_area_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_area_durations_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "megarun.toml"
    path.write_text("[launcher]\nheartbeat = '2s'\ndead_after = '1m30'\nidle_exit = 4\n"
                    "[limits]\nminspace = '1.5GiB'\nlaunch_limiter_interval = '1m'\n"
                    "[archive]\nauto-reduce = '1w'\n[[auto-migrate]]\ndestination = '/x'\n"
                    "older-than = 2\n")
    config = load_area_config(path)
    assert (config.launcher.heartbeat, config.launcher.dead_after, config.launcher.idle_exit) == (
        2, 90, 4)
    assert config.limits.minspace == 3 << 29 and config.limits.launch_limiter_interval == 60
    assert config.archive_auto_reduce == 7 * 86400
    assert config.auto_migrate[0].older_than == 2 * 86400  # a bare number is days, as before
    path.write_text("[limits]\nminspace = 20\n")  # a bare number is megabytes, as before
    assert load_area_config(path).limits.minspace == 20 << 20


def test_app_says_command_or_cmd_and_walltime_or_runtimelim() -> None:
    app = validate_app({"name": "a", "cmd": "x", "resources": {"runtimelim": "1h30"}}, "a.toml")
    assert app.command == "x" and app.resources == {"walltime": 90}
    app = validate_app({"name": "a", "command": "x", "resources": {"walltime": 20, "nodes": 2}},
                       "a.toml")
    assert app.resources == {"walltime": 20, "nodes": 2}  # a bare walltime is minutes
    assert validate_app({"name": "a", "command": "x", "resources": {"runtimelim": 120}},
                        "a.toml").resources == {"walltime": 2}  # a bare runtimelim is seconds


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
    ({"command": "x", "cmd": "y"}, "give 'command' or 'cmd', not both"),
    ({"comand": "x"}, "unknown key 'comand' (did you mean 'command'?)"),
    ({"command": "x", "resources": {"walltime": 5, "runtimelim": 300}},
     "[resources] give 'walltime' or 'runtimelim', not both"),
    ({"command": "x", "resources": {"walltime": "an hour"}},
     "key 'resources.walltime' 'an hour': expected a duration"),
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

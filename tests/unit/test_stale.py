"""What defines a suite result (megarun.suites.stale): the test and the variables it sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megarun.errors import ConfigError
from megarun.suites.definition import Step, TestDef, load_test
from megarun.suites.stale import (
    definition_of,
    has_changed,
    read_area_definitions,
    seen_variables,
    why_changed,
)


def make(env: dict[str, str] | None = None, items: dict[str, list[str]] | None = None,
         cmd: str = "true") -> TestDef:
    return TestDef(name="t", path=Path("/area/tests/t/test.toml"), description="",
                   steps=(Step("run", cmd),), items=items or {}, env=env or {})


def test_only_the_variables_that_reach_the_steps_count() -> None:
    variables = {"CC": "cc", "OPT": "2", "os": "shadowed", "N": "x", "MEGARUN_TARGET": "x"}
    test = make(env={"OPT": "0"}, items={"N": ["1"]})
    assert seen_variables(variables, ["os", "arch"], test.definition()) == {"CC": "cc"}


def test_a_variable_change_changes_the_hash_and_says_which() -> None:
    test = make()
    before = definition_of(test, {"CC": "cc", "OPT": "2"}, ["os"])
    after = definition_of(test, {"CC": "cc", "OPT": "3"}, ["os"])
    assert has_changed(before.hash, after) and not has_changed(before.hash, before)
    assert why_changed(before.text(), "t", after) == "megarun.toml variable(s) OPT changed"
    edited = definition_of(make(cmd="false"), {"CC": "cc", "OPT": "2"}, ["os"])
    assert why_changed(before.text(), "t", edited) == "its t/test.toml changed"


def test_a_hash_stored_before_variables_counted_matches_an_unchanged_test() -> None:
    test = make()
    now = definition_of(test, {"OPT": "2"}, [])
    assert not has_changed(test.definition_hash(), now)  # an upgrade marks nothing STALE
    assert has_changed(make(cmd="false").definition_hash(), now)


def test_an_unchanged_file_is_not_parsed_and_a_changed_one_is(tmp_path: Path) -> None:
    path = tmp_path / "tests" / "t" / "test.toml"
    path.parent.mkdir(parents=True)
    path.write_text('steps = ["true"]\n')
    stored = definition_of(load_test(path), {}, [])
    # a stored definition that the file's bytes no longer produce, under the file's digest:
    # believed as stored, which shows the file was not parsed
    planted = json.dumps({**json.loads(stored.text()), "description": "planted"})
    area = read_area_definitions(tmp_path / "tests", {}, [], tmp_path / "megarun.toml")
    believed = area.current("t", planted, "x")
    assert believed is not None and believed.fields["description"] == "planted"
    path.write_text('steps = ["true"]  # reformatted\n')
    fresh = read_area_definitions(tmp_path / "tests", {}, [], tmp_path / "megarun.toml")
    parsed = fresh.current("t", planted, "x")
    assert parsed is not None and parsed.fields["description"] == ""
    assert not has_changed(stored.hash, parsed)  # a comment changes no result
    assert fresh.current("gone", planted, "x") is None


def test_an_unreadable_test_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tests" / "t" / "test.toml"
    path.mkdir(parents=True)  # a folder where the file should be: reading it fails
    area = read_area_definitions(tmp_path / "tests", {}, [], tmp_path / "megarun.toml")
    with pytest.raises(ConfigError, match=r"test\.toml: cannot read"):
        area.current("t", "{}", "x")

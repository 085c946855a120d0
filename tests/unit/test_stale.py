"""What defines a suite result (megarun.services.stale): the test and the variables it sees."""

from __future__ import annotations

from pathlib import Path

from megarun.services.stale import definition_of, has_changed, seen_variables, why_changed
from megarun.suites.definition import Step, TestDef


def make(env: dict[str, str] | None = None, items: dict[str, list[str]] | None = None,
         cmd: str = "true") -> TestDef:
    return TestDef(name="t", path=Path("/area/tests/t/test.toml"), description="",
                   steps=(Step("run", cmd),), items=items or {}, env=env or {})


def test_only_the_variables_that_reach_the_steps_count() -> None:
    variables = {"CC": "cc", "OPT": "2", "os": "shadowed", "N": "x", "MEGARUN_TARGET": "x"}
    seen = seen_variables(variables, ["os", "arch"], make(env={"OPT": "0"}, items={"N": ["1"]}))
    assert seen == {"CC": "cc"}


def test_a_variable_change_changes_the_hash_and_says_which() -> None:
    test = make()
    before = definition_of(test, {"CC": "cc", "OPT": "2"}, ["os"])
    after = definition_of(test, {"CC": "cc", "OPT": "3"}, ["os"])
    assert has_changed(before.hash, after) and not has_changed(before.hash, before)
    assert why_changed(before.text(test), test, after) == "megarun.toml variable(s) OPT changed"
    edited = make(cmd="false")
    assert why_changed(before.text(test), edited, definition_of(edited, {"CC": "cc", "OPT": "2"},
                                                                ["os"])) == (
        "its t/test.toml changed")


def test_a_hash_stored_before_variables_counted_matches_an_unchanged_test() -> None:
    test = make()
    now = definition_of(test, {"OPT": "2"}, [])
    assert not has_changed(test.definition_hash(), now)  # an upgrade marks nothing STALE
    assert has_changed(make(cmd="false").definition_hash(), now)

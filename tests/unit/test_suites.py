"""Test suites: targets, test.toml definitions, test selection and expansion into item jobs."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from megarun.errors import ConfigError, UsageError
from megarun.suites.definition import PatternRule, Rules, Step, TestDef, load_test, load_tests
from megarun.suites.expand import ItemJob, Plan, expand, items_of, select_tests
from megarun.suites.targets import parse_target, pattern_matches, target_variables


def write_test(tests_dir: Path, name: str, text: str) -> Path:
    path = tests_dir / name / "test.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def make_test(name: str, waiton: tuple[str, ...] = (), mode: str = "normal",
              items: dict[str, list[str]] | None = None,
              itemstable: dict[str, list[str]] | None = None) -> TestDef:
    return TestDef(
        name=name, path=Path(f"/area/tests/{name}/test.toml"), description="",
        steps=(Step("run", "true"),), items=items or {}, itemstable=itemstable or {},
        waiton=waiton, waiton_mode=mode,
    )


def job_keys(plan: Plan) -> list[tuple[str, str]]:
    return [(job.test, job.itempath) for job in plan.jobs]


def edge_keys(plan: Plan) -> set[tuple[tuple[str, str], tuple[str, str]]]:
    keys = job_keys(plan)
    return {(keys[parent], keys[child]) for parent, child in plan.edges}


# --- targets ---------------------------------------------------------------------------------


def test_parse_target_good() -> None:
    result = parse_target("linux/x86_64", ("os", "arch"))
    assert result == {"os": "linux", "arch": "x86_64"}
    assert list(result) == ["os", "arch"]
    assert parse_target("rhel8.1+gcc-12", ["os"]) == {"os": "rhel8.1+gcc-12"}


def test_parse_target_wrong_count_names_form() -> None:
    with pytest.raises(UsageError) as info:
        parse_target("linux", ("os", "arch"))
    assert str(info.value) == "target 'linux' has 1 part(s); this area's keys need 2: os/arch"
    with pytest.raises(UsageError, match="has 3 part"):
        parse_target("a/b/c", ("os", "arch"))


def test_parse_target_without_keys() -> None:
    with pytest.raises(UsageError, match=r"set `keys` in megarun\.toml"):
        parse_target("linux", ())


@pytest.mark.parametrize("target", [
    "linux/x;y", "linux/..", "../x86", "linux/", "linux/a b", "linux/$(id)", "linux/x86\n",
    "linux/" + "a" * 65, "linux/-x",
])
def test_parse_target_refuses_unsafe_values(target: str) -> None:
    with pytest.raises(UsageError):
        parse_target(target, ("os", "arch"))


def test_pattern_matches() -> None:
    assert pattern_matches("%", "")
    assert pattern_matches("%", "linux/x86_64")
    assert pattern_matches("linux/%", "linux/x86_64")
    assert pattern_matches("%/arm64", "mac/arm64")
    assert not pattern_matches("%/arm64", "mac/arm64e")
    assert pattern_matches("li%ux/%", "linux/x")
    assert pattern_matches("a%", "a")
    # dots and other regex specials are literal
    assert pattern_matches("v1.2", "v1.2")
    assert not pattern_matches("v1.2", "v1x2")
    assert not pattern_matches("a+", "aa")
    assert pattern_matches("a+", "a+")
    assert not pattern_matches("linux", "linux/x")
    # comma lists: any may match
    assert pattern_matches("mac/%,linux/%", "linux/x86_64")
    assert pattern_matches("mac/%, linux/%", "linux/x86_64")
    assert not pattern_matches("mac/%,win/%", "linux/x86_64")


def test_target_variables_default_then_patterns_in_file_order(tmp_path: Path) -> None:
    from megarun.config.tomlfile import parse_toml

    raw = parse_toml(textwrap.dedent("""
        [default]
        CC = "gcc"
        OPT = 2
        DEBUG = false
        [targets."linux/%"]
        CC = "clang"
        LIBS = "-lm"
        [targets."mac/%"]
        CC = "apple-clang"
        [targets."%/x86_64"]
        CC = "icx"
        RATIO = 1.5
    """), "megarun.toml")
    assert target_variables(raw, "linux/x86_64", "megarun.toml") == {
        "CC": "icx", "OPT": "2", "DEBUG": "false", "LIBS": "-lm", "RATIO": "1.5",
    }
    assert target_variables(raw, "linux/arm64", "megarun.toml")["CC"] == "clang"
    assert target_variables(raw, "mac/arm64", "megarun.toml") == {
        "CC": "apple-clang", "OPT": "2", "DEBUG": "false",
    }
    assert target_variables({}, "linux/x86_64", "megarun.toml") == {}


def test_target_variables_bad_value_type() -> None:
    raw: dict[str, Any] = {"targets": {"linux/%": {"X": [1, 2]}}}
    with pytest.raises(ConfigError) as info:
        target_variables(raw, "mac/arm64", "area/megarun.toml")
    assert str(info.value) == (
        "area/megarun.toml: [targets.\"linux/%\"] key 'X' must be a string or number, got [1, 2]"
    )


def test_target_variables_bad_name() -> None:
    with pytest.raises(ConfigError, match=r"m.toml: \[default\] variable name '1X'"):
        target_variables({"default": {"1X": "a"}}, "linux/x", "m.toml")
    with pytest.raises(ConfigError, match="variable name 'A-B'"):
        target_variables({"targets": {"%": {"A-B": "a"}}}, "linux/x", "m.toml")


# --- test.toml ---------------------------------------------------------------------------------


def test_load_test_every_key(tmp_path: Path) -> None:
    path = write_test(tmp_path, "full", """
        description = "everything"
        steps = [ { name = "build", cmd = "make -j2" }, { name = "check", cmd = "./check.sh" } ]
        waiton = ["compile", "setup"]
        waiton_mode = "itemmatch"
        runtimelim = "1h30m"
        priority = 5
        jobgroup = "heavy"
        env = { FOO = "bar", N = 3, F = 0.5, B = true }
        skip = { targets = ["%/arm64", "win/%"] }

        [items]
        size = [1, 2, 3]
        mode = ["fast", "slow"]

        [rules]
        exit = { "0" = "PASS", "2" = "WARN", "3" = "SKIP" }
        [[rules.patterns]]
        regex = "WARNING:"
        status = "WARN"
        step = "check"
        [[rules.patterns]]
        regex = "^Segmentation fault"
        status = "ABORT"
    """)
    test = load_test(path)
    assert test.name == "full" and test.path == path
    assert test.description == "everything"
    assert test.steps == (Step("build", "make -j2"), Step("check", "./check.sh"))
    assert test.waiton == ("compile", "setup")
    assert test.waiton_mode == "itemmatch"
    assert test.runtimelim == 5400.0
    assert test.priority == 5
    assert test.jobgroup == "heavy"
    assert test.env == {"FOO": "bar", "N": "3", "F": "0.5", "B": "true"}
    assert test.skip_targets == ("%/arm64", "win/%")
    assert test.items == {"size": ["1", "2", "3"], "mode": ["fast", "slow"]}
    assert test.itemstable == {}
    assert test.rules == Rules(
        {0: "PASS", 2: "WARN", 3: "SKIP"},
        (PatternRule("WARNING:", "WARN", "check"), PatternRule("^Segmentation fault", "ABORT", None)),
    )
    assert test.rules.as_spec() == {
        "exit": {"0": "PASS", "2": "WARN", "3": "SKIP"},
        "patterns": [
            {"regex": "WARNING:", "status": "WARN", "step": "check"},
            {"regex": "^Segmentation fault", "status": "ABORT", "step": None},
        ],
    }


def test_load_test_defaults(tmp_path: Path) -> None:
    test = load_test(write_test(tmp_path, "tiny", 'steps = ["true"]'))
    assert test.steps == (Step("step1", "true"),)
    assert test.description == ""
    assert test.waiton == () and test.waiton_mode == "normal"
    assert test.runtimelim is None and test.priority == 0 and test.jobgroup is None
    assert test.rules == Rules({}, ()) and test.rules.as_spec() == {}
    assert test.items == {} and test.itemstable == {} and test.env == {} and test.skip_targets == ()
    assert items_of(test) == [ItemJob("tiny", "", {})]


def test_steps_as_strings_and_single_values(tmp_path: Path) -> None:
    test = load_test(write_test(tmp_path, "t", """
        steps = ["make", "./check.sh"]
        waiton = "compile"
        skip = { targets = "%/arm64" }
    """))
    assert test.steps == (Step("step1", "make"), Step("step2", "./check.sh"))
    assert test.waiton == ("compile",)
    assert test.skip_targets == ("%/arm64",)


@pytest.mark.parametrize(("value", "seconds"), [
    ('"90s"', 90.0), ('"10m"', 600.0), ('"2h"', 7200.0), ('"1h30m"', 5400.0), ('"1d"', 86400.0),
    ('"1d2h3m4s"', 93784.0), ('"1.5h"', 5400.0), ("45", 45.0), ("2.5", 2.5),
])
def test_runtimelim(tmp_path: Path, value: str, seconds: float) -> None:
    test = load_test(write_test(tmp_path, "t", f'steps = ["true"]\nruntimelim = {value}'))
    assert test.runtimelim == seconds


@pytest.mark.parametrize("value", ['"0s"', "0", "-5", '"10 minutes"', '"m"', '""', '"1m1h"', "inf", "true"])
def test_bad_runtimelim(tmp_path: Path, value: str) -> None:
    path = write_test(tmp_path, "t", f'steps = ["true"]\nruntimelim = {value}')
    with pytest.raises(ConfigError) as info:
        load_test(path)
    assert str(path) in str(info.value) and "runtimelim" in str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [
    ('walltime = 2', 120.0), ('walltime = "1h30"', 5400.0), ('runtimelim = "1h30"', 5400.0),
])
def test_tests_take_walltime_too_with_its_bare_minutes(tmp_path: Path, text: str,
                                                        seconds: float) -> None:
    test = load_test(write_test(tmp_path, "t", f'steps = [{{ command = "true" }}]\n{text}'))
    assert test.runtimelim == seconds and test.steps == (Step("step1", "true"),)


def test_items_product_order(tmp_path: Path) -> None:
    test = load_test(write_test(tmp_path, "t", """
        steps = ["true"]
        [items]
        size = [1, 2, 3]
        mode = ["fast", "slow"]
    """))
    jobs = items_of(test)
    assert [job.itempath for job in jobs] == [
        "1/fast", "1/slow", "2/fast", "2/slow", "3/fast", "3/slow",
    ]
    assert jobs[3] == ItemJob("t", "2/slow", {"size": "2", "mode": "slow"})
    assert list(jobs[0].variables) == ["size", "mode"]


def test_itemstable_rows(tmp_path: Path) -> None:
    test = load_test(write_test(tmp_path, "t", """
        steps = ["true"]
        [itemstable]
        size = [1, 2]
        mode = ["x", "y"]
    """))
    assert test.itemstable == {"size": ["1", "2"], "mode": ["x", "y"]}
    assert items_of(test) == [
        ItemJob("t", "1/x", {"size": "1", "mode": "x"}),
        ItemJob("t", "2/y", {"size": "2", "mode": "y"}),
    ]


def test_item_values_with_metacharacters_stay_raw_but_itempath_is_safe(tmp_path: Path) -> None:
    test = load_test(write_test(tmp_path, "t", """
        steps = ["true"]
        [items]
        v = ["$(touch x)", "a;b 'c'", "..", "ok-1.2+3", "../../etc", "é`x`|&>"]
        w = ["."]
    """))
    jobs = items_of(test)
    raw = ["$(touch x)", "a;b 'c'", "..", "ok-1.2+3", "../../etc", "é`x`|&>"]
    assert [job.variables for job in jobs] == [{"v": value, "w": "."} for value in raw]
    assert [job.itempath for job in jobs] == [
        "__touch_x_/_", "a_b__c_/_", "_/_", "ok-1.2+3/_", ".._.._etc/_", "__x____/_",
    ]
    for job in jobs:
        assert all(part not in ("", ".", "..") for part in job.itempath.split("/"))


def test_safe_itempath_collision_is_refused(tmp_path: Path) -> None:
    path = write_test(tmp_path, "t", 'steps = ["true"]\n[items]\nv = ["a b", "a;b"]')
    with pytest.raises(ConfigError, match="same itempath component 'a_b'"):
        load_test(path)


def test_step_names_in_rules_and_outputs(tmp_path: Path) -> None:
    path = write_test(tmp_path, "t", """
        steps = [{ name = "build", cmd = "make" }]
        [[rules.patterns]]
        regex = "x"
        status = "FAIL"
        step = "check"
    """)
    with pytest.raises(ConfigError) as info:
        load_test(path)
    assert str(path) in str(info.value)
    assert "rules.patterns[0].step" in str(info.value) and "'check'" in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ('steps = ["true"]\ncolour = "red"', "unknown key 'colour'"),
    ('description = "no steps"', "missing key 'steps'"),
    ("steps = []", "at least one step"),
    ('steps = [{ name = "a", cmd = "x" }, { name = "a", cmd = "y" }]', "step name 'a' is used twice"),
    ('steps = [{ name = "a b", cmd = "x" }]', "step name 'a b'"),
    ('steps = [{ name = "a" }]', "missing key 'cmd'"),
    ('steps = [{ name = "a", cmd = "x", command = "y" }]', "give 'cmd' or 'command', not both"),
    ('steps = [{ name = "a", cmnd = "x" }]', "unknown key 'cmnd' (did you mean 'cmd'?)"),
    ('steps = ["true"]\nruntimelim = 5\nwalltime = 5', "give 'runtimelim' or 'walltime'"),
    ('steps = ["true"]\nruntimelimit = 5', "unknown key 'runtimelimit' (did you mean 'runtimelim'?)"),
    ('steps = [{ name = "a", cmd = "x", shell = "zsh" }]', "[steps[0]] unknown key 'shell'"),
    ('steps = [" "]', "must not be empty"),
    ('steps = [1]', "steps[0]"),
    ('steps = ["true"]\nwaiton_mode = "sometimes"', "waiton_mode"),
    ('steps = ["true"]\npriority = "high"', "key 'priority' must be an integer"),
    ('steps = ["true"]\njobgroup = "a b"', "jobgroup"),
    ('steps = ["true"]\nenv = { X = [1] }', "env.X"),
    ('steps = ["true"]\nenv = { "A-B" = "1" }', "env.A-B"),
    ('steps = ["true"]\nskip = { hosts = ["x"] }', "[skip] unknown key 'hosts'"),
    ('steps = ["true"]\nskip = { targets = [1] }', "skip.targets"),
    ('steps = ["true"]\nwaiton = [1]', "waiton"),
    ('steps = ["true"]\n[items]\nsize = [1]\n[itemstable]\nmode = ["a"]', "not both"),
    ('steps = ["true"]\n[itemstable]\nsize = [1, 2]\nmode = ["x"]', "same length (size: 2, mode: 1)"),
    ('steps = ["true"]\n[itemstable]\nsize = [1, 1]', "rows 1 and 2"),
    ('steps = ["true"]\n[items]\nsize = []', "items.size' must list at least one value"),
    ('steps = ["true"]\n[items]\n"1x" = [1]', "item variable name '1x'"),
    ('steps = ["true"]\n[items]\nx = [""]', "1 to 200 characters"),
    ('steps = ["true"]\n[items]\nx = ["' + "a" * 201 + '"]', "1 to 200 characters"),
    ('steps = ["true"]\n[items]\nx = [true]', "must be a string or number"),
    ('steps = ["true"]\n[items]\nx = [[1]]', "must be a string or number"),
    ('steps = ["true"]\n[items]\nx = "abc"', "key 'items.x' must be a list"),
    ('steps = ["true"]\n[rules]\nexit = { "0" = "GOOD" }', "rules.exit.0' must be one of PASS, WARN"),
    ('steps = ["true"]\n[rules]\nexit = { "zero" = "PASS" }', "exit code 'zero'"),
    ('steps = ["true"]\n[rules]\nlevel = 1', "[rules] unknown key 'level'"),
    ('steps = ["true"]\n[[rules.patterns]]\nregex = "(unclosed"\nstatus = "FAIL"',
     "rules.patterns[0].regex': invalid regex"),
    ('steps = ["true"]\n[[rules.patterns]]\nregex = "x"\nstatus = "MAYBE"', "rules.patterns[0].status"),
    ('steps = ["true"]\n[[rules.patterns]]\nstatus = "FAIL"', "missing key 'regex'"),
    ("steps = [", "invalid TOML"),
])
def test_bad_test_toml_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write_test(tmp_path, "t", text)
    with pytest.raises(ConfigError) as info:
        load_test(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_bad_test_folder_name(tmp_path: Path) -> None:
    path = write_test(tmp_path, "bad name", 'steps = ["true"]')
    with pytest.raises(ConfigError, match="invalid test name 'bad name'"):
        load_test(path)


def test_load_tests_ignores_folders_without_test_toml(tmp_path: Path) -> None:
    tests_dir = tmp_path / "tests"
    write_test(tests_dir, "zeta", 'steps = ["true"]')
    write_test(tests_dir, "alpha", 'steps = ["true"]')
    (tests_dir / "notes").mkdir()
    (tests_dir / "notes" / "README").write_text("not a test")
    (tests_dir / "stray.toml").write_text('steps = ["true"]')
    tests = load_tests(tests_dir)
    assert list(tests) == ["alpha", "zeta"]
    assert load_tests(tmp_path / "missing") == {}


def test_definition_hash(tmp_path: Path) -> None:
    one = load_test(write_test(tmp_path / "a", "t", """
        steps = [{ name = "build", cmd = "make" }]
        env = { A = "1" }
        [items]
        x = [1, 2]
    """))
    reformatted = load_test(write_test(tmp_path / "b", "t", """
        # the same test, written differently
        steps = [
            {cmd = "make", name = "build"},
        ]

        [env]
        A = "1"

        [items]
        x = [ 1,
              2 ]
    """))
    assert reformatted.steps == one.steps and reformatted.items == one.items
    assert one.definition_hash() == reformatted.definition_hash()
    assert len(one.definition_hash()) == 64
    changed = load_test(write_test(tmp_path / "c", "t", """
        steps = [{ name = "build", cmd = "make -j2" }]
        env = { A = "1" }
        [items]
        x = [1, 2]
    """))
    assert changed.definition_hash() != one.definition_hash()
    assert "path" not in one.definition()
    assert one.definition()["steps"] == [{"name": "build", "cmd": "make"}]


# --- selection and expansion -------------------------------------------------------------------


def suite() -> dict[str, TestDef]:
    return {
        "compile": make_test("compile"),
        "setup": make_test("setup"),
        "unit": make_test("unit", waiton=("compile",)),
        "integration": make_test("integration", waiton=("unit", "setup")),
        "docs": make_test("docs"),
    }


def test_select_all() -> None:
    tests = suite()
    assert select_tests(tests, None) == sorted(tests)
    assert select_tests(tests, "%") == sorted(tests)


def test_select_patterns_and_waiton_closure() -> None:
    tests = suite()
    assert select_tests(tests, "docs") == ["docs"]
    assert select_tests(tests, "unit") == ["compile", "unit"]
    assert select_tests(tests, "integ%") == ["compile", "integration", "setup", "unit"]
    assert select_tests(tests, "d%,setup") == ["docs", "setup"]
    # an item pattern selects at test level
    assert select_tests(tests, "unit/size=%") == ["compile", "unit"]
    assert select_tests(tests, "docs/%") == ["docs"]


def test_select_unknown_pattern_lists_names() -> None:
    with pytest.raises(UsageError) as info:
        select_tests(suite(), "docs,nosuch%")
    message = str(info.value)
    assert "'nosuch%' matches no test" in message
    assert "compile, docs, integration, setup, unit" in message


def test_select_missing_waiton_names_file() -> None:
    tests = {"a": make_test("a", waiton=("ghost",))}
    with pytest.raises(ConfigError) as info:
        select_tests(tests, "a")
    assert "/area/tests/a/test.toml" in str(info.value) and "'ghost'" in str(info.value)
    with pytest.raises(ConfigError, match="ghost"):
        expand(tests, ["a"])


def test_expand_dependency_order_ties_by_name() -> None:
    tests = suite()
    plan = expand(tests, select_tests(tests, None))
    assert plan.tests == ("compile", "docs", "setup", "unit", "integration")
    assert [job.test for job in plan.jobs] == list(plan.tests)
    assert edge_keys(plan) == {
        (("compile", ""), ("unit", "")),
        (("unit", ""), ("integration", "")),
        (("setup", ""), ("integration", "")),
    }
    for parent, child in plan.edges:
        assert parent < child


def test_expand_closes_over_waiton() -> None:
    plan = expand(suite(), ["integration"])
    assert plan.tests == ("compile", "setup", "unit", "integration")


def test_expand_unknown_test() -> None:
    with pytest.raises(UsageError, match="unknown test 'nope'"):
        expand(suite(), ["nope"])


@pytest.mark.parametrize("mode", ["normal", "toplevel"])
def test_normal_and_toplevel_edges_connect_every_item(mode: str) -> None:
    tests = {
        "build": make_test("build", items={"cc": ["gcc", "clang"]}),
        "run": make_test("run", waiton=("build",), mode=mode, items={"n": ["1", "2", "3"]}),
    }
    plan = expand(tests, ["run"])
    assert job_keys(plan) == [
        ("build", "gcc"), ("build", "clang"), ("run", "1"), ("run", "2"), ("run", "3"),
    ]
    assert edge_keys(plan) == {
        (("build", cc), ("run", n)) for cc in ("gcc", "clang") for n in ("1", "2", "3")
    }
    assert len(plan.edges) == 6


def test_itemmatch_edges() -> None:
    tests = {
        "build": make_test("build", items={"cc": ["gcc", "clang"]}),
        "run": make_test("run", waiton=("build",), mode="itemmatch",
                         itemstable={"cc": ["gcc", "clang", "icx"]}),
        "plain": make_test("plain", waiton=("build",), mode="itemmatch"),
    }
    plan = expand(tests, ["run", "plain"])
    assert plan.tests == ("build", "plain", "run")
    assert edge_keys(plan) == {
        (("build", "gcc"), ("run", "gcc")),
        (("build", "clang"), ("run", "clang")),
        # no "icx" item in build: wait on all of it
        (("build", "gcc"), ("run", "icx")),
        (("build", "clang"), ("run", "icx")),
        # no items at all: wait on all of build
        (("build", "gcc"), ("plain", "")),
        (("build", "clang"), ("plain", "")),
    }
    assert len(plan.edges) == 6


def test_cycle_error_names_the_cycle() -> None:
    tests = {
        "a": make_test("a", waiton=("b",)),
        "b": make_test("b", waiton=("c",)),
        "c": make_test("c", waiton=("a",)),
        "d": make_test("d", waiton=("c",)),
    }
    with pytest.raises(ConfigError) as info:
        expand(tests, ["d"])
    assert str(info.value) == "waiton cycle: a -> b -> c -> a"
    with pytest.raises(ConfigError, match=r"^waiton cycle: x -> x$"):
        expand({"x": make_test("x", waiton=("x",))}, ["x"])


def test_cycle_found_through_files(tmp_path: Path) -> None:
    tests_dir = tmp_path / "tests"
    write_test(tests_dir, "first", 'steps = ["true"]\nwaiton = "second"')
    write_test(tests_dir, "second", 'steps = ["true"]\nwaiton = ["first"]')
    tests = load_tests(tests_dir)
    with pytest.raises(ConfigError, match="waiton cycle: first -> second -> first"):
        expand(tests, select_tests(tests, "first"))


def test_large_expansion_counts() -> None:
    values = [f"v{i}" for i in range(10)]
    tests = {
        f"t{n:03d}": make_test(f"t{n:03d}", items={"a": values[:5], "b": values})
        for n in range(200)
    }
    plan = expand(tests, select_tests(tests, None))
    assert len(plan.jobs) == 10_000
    assert plan.edges == ()
    assert len(plan.tests) == 200
    assert len({(job.test, job.itempath) for job in plan.jobs}) == 10_000
    assert plan.jobs[0] == ItemJob("t000", "v0/v0", {"a": "v0", "b": "v0"})
    assert plan.jobs[-1] == ItemJob("t199", "v4/v9", {"a": "v4", "b": "v9"})

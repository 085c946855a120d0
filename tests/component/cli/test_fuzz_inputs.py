"""Fuzzing every reader of user input through the real CLI, in-process: random bytes and random
TOML/JSON structures (NUL, undecodable text, huge integers, NaN, deep nesting, wrong types) in
megarun.toml, apps/*.toml, tests/*/test.toml, --from-file, -p/-t values, app templates and job
ids. Whatever comes in, the exit code is 0 or 2 with one line on stderr: never 70, never a
traceback."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

#: Keys megarun's files know, so random structures reach the validators behind the key check.
KNOWN_KEYS = [
    "name", "keys", "default_site", "launcher", "limits", "jobgroups", "matching", "archive",
    "allow-runs", "retries", "heartbeat", "dead_after", "kill_grace", "idle_exit",
    "max_concurrent_jobs", "minspace", "launch_limiter", "launch_limiter_interval", "policy",
    "command", "description", "params", "env", "resources", "requirements", "stage_in",
    "stage_out", "src", "dest", "nodes", "walltime", "steps", "cmd", "items", "itemstable",
    "waiton", "waiton_mode", "runtimelim", "priority", "jobgroup", "rules", "exit", "patterns",
    "regex", "status", "skip", "targets", "x",
]
#: --from-file fields; "count" is left out so a valid line never asks for millions of jobs.
JOB_FIELDS = ["app", "params", "tags", "site", "nodes", "ranks_per_node", "threads_per_rank",
              "gpus_per_rank", "node_packing_count", "walltime", "after", "priority", "name"]

texts = st.text(max_size=12) | st.sampled_from(["", "a\0b", "echo {{ x }}", "local", "1", "x"])
# argv reaches Python decoded with surrogateescape: bytes that are not UTF-8 become surrogates
argv_texts = texts | st.binary(max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape"))
numbers = (st.integers() | st.integers(min_value=2**63 - 2, max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.booleans())
toml_keys = st.sampled_from(KNOWN_KEYS) | st.text(min_size=1, max_size=6)
json_keys = st.sampled_from(JOB_FIELDS) | st.text(max_size=6)


def structures(keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(texts | numbers,
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(keys, inner, max_size=4),
                        max_leaves=12)


def toml_value(value: Any) -> str:
    """An inline TOML value (TOML has no null: None never occurs here)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_string(text: str) -> str:
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                      if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in text)
    return f'"{escaped}"'


def toml_document(table: dict[str, Any]) -> bytes:
    lines = [f"{toml_string(key)} = {toml_value(value)}" for key, value in table.items()]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


deep = st.integers(min_value=60, max_value=6000).map(
    lambda n: b"x = " + b"[" * n + b"]" * n + b"\n")
toml_files = (st.dictionaries(toml_keys, structures(toml_keys), max_size=6).map(toml_document)
              | st.binary(max_size=200) | deep)


def assert_clean(result: Any) -> None:
    """Exit 0, or exit 2 with a one-line message; never an internal error or a traceback."""
    assert result.code in (0, 2), (result.code, result.err)
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err
    if result.code == 2 and result.err.startswith("megarun: error:"):
        assert len(result.err.strip().splitlines()) == 1, result.err


@pytest.fixture
def echo(cli: Any) -> str:
    assert cli("app", "add", "echo", "--command", "echo {{ x }}", "--param", "x=1").code == 0
    return "echo"


@FUZZ
@given(data=toml_files)
def test_area_file(cli: Any, area: Path, echo: str, data: bytes) -> None:
    config = area / "megarun.toml"
    good = config.read_bytes()
    config.write_bytes(data)
    try:
        assert_clean(cli("job", "create", "--app", "echo"))
    finally:
        config.write_bytes(good)


@FUZZ
@given(data=toml_files)
def test_app_file(cli: Any, area: Path, data: bytes) -> None:
    path = area / "apps" / "fz.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    try:
        result = cli("app", "sync")
        assert_clean(result)
        if result.code == 0:
            assert_clean(cli("job", "create", "--app", "fz"))
    finally:
        path.unlink()


@FUZZ
@given(data=toml_files)
def test_test_file(cli: Any, area: Path, data: bytes) -> None:
    # allow-runs = false: a test.toml that happens to be valid is read, then the run refused,
    # so no random step ever runs
    config = area / "megarun.toml"
    if b"allow-runs" not in config.read_bytes():
        config.write_text(config.read_text().replace("\nkeys", "\nallow-runs = false\nkeys", 1))
    path = area / "tests" / "fz" / "test.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    assert_clean(cli("run", "--target", "linux/x86_64", "--runname", "r", "--quiet"))


json_lines = st.lists(
    st.dictionaries(json_keys, structures(json_keys), max_size=5).map(
        lambda d: __import__("json").dumps(d, allow_nan=True).encode())
    | st.binary(max_size=60) | structures(json_keys).map(lambda v: repr(v).encode()),
    min_size=1, max_size=4)


@FUZZ
@given(lines=json_lines)
def test_from_file(cli: Any, area: Path, echo: str, tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert_clean(cli("job", "create", "--app", "echo", "--from-file", str(path)))


@FUZZ
@given(value=argv_texts, option=st.sampled_from(["-p", "-t"]), whole=st.booleans())
def test_job_values(cli: Any, echo: str, value: str, option: str, whole: bool) -> None:
    pair = value if whole else f"x={value}"
    assert_clean(cli("job", "create", "--app", "echo", option, pair))
    assert_clean(cli("job", "create", "--app", "echo", "--site", value))


@FUZZ
@given(value=argv_texts | st.integers().map(str)
       | st.integers(min_value=2**63 - 2, max_value=2**80).map(lambda n: str(n * (-1) ** n)))
def test_job_ids(cli: Any, echo: str, value: str) -> None:
    for command in ("show", "kill", "rm", "reset"):
        assert_clean(cli("job", command, value))
    assert_clean(cli("job", "create", "--app", "echo", "--after", value))
    assert_clean(cli("job", "create", "--app", "echo", "--priority", value))


fragments = st.sampled_from(["{{", "}}", "{%", "%}", " x ", "y", "|", "attr", "(", ")", "'",
                             "__class__", "__init__", ".", "*", "**", "9", "[", "]", "/", "0",
                             "upper", "set", "=", "cycler", "lipsum", "\\x00", '"', "~"])
templates = st.lists(fragments, max_size=14).map("".join) | argv_texts


@FUZZ
@given(template=templates, value=argv_texts)
def test_command_templates(cli: Any, template: str, value: str) -> None:
    result = cli("app", "add", "fz", "--command", template, "--param", "x", "--param", "y=__init__",
                 "--replace")
    assert_clean(result)
    if result.code == 0:
        assert_clean(cli("job", "create", "--app", "fz", "-p", f"x={value}"))

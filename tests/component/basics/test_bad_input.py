"""Bad input through the real CLI: each case is one line on stderr naming the file or field,
exit code 2, and nothing created (no job, no app)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import megarun_process

DEEP = 5000
MAX_INT64 = (1 << 63) - 1
HUGE = "99999999999999999999"


def count(area: Path, table: str) -> int:
    """Rows of `table` in the working database, read without creating or changing anything."""
    path = area / ".megarun" / "work.db"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def assert_refused(result: Any, *fragments: str) -> None:
    """Exit 2 with one line naming what was wrong; never an internal error or a traceback."""
    code, err = (result.returncode, result.stderr) if hasattr(result, "returncode") \
        else (result.code, result.err)
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("megarun: error: "), lines[0]
    assert "internal error" not in err and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def echo(cli: Any) -> str:
    assert cli("app", "add", "echo", "--command", "echo {{ x }}", "--param", "x=1").code == 0
    return "echo"


# -- --from-file: a good first line, a bad second one: nothing at all is created ---------------

FILE_CASES = [
    ('{"app": "echo", "params": {"x": "a\\u0000b"}}', "field 'params.x' must not contain a NUL"),
    ('{"app": "echo", "tags": {"k": "a\\u0000b"}}', "field 'tags.k' must not contain a NUL"),
    ('{"app": "echo", "tags": {"k\\u0000": "v"}}', "field 'tags.k\\x00' name must not contain"),
    ('{"app": "echo", "name": "a\\u0000"}', "field 'name' must not contain a NUL"),
    ('{"app": "echo", "params": {"x": "\\udcff"}}', "field 'params.x' is not valid UTF-8"),
    ('{"app": "echo", "priority": 1e400}', "field 'priority' must be a finite number"),
    ('{"app": "echo", "priority": NaN}', "field 'priority' must be a finite number"),
    ('{"app": "echo", "walltime": Infinity}', "field 'walltime' must be a finite number"),
    (f'{{"app": "echo", "priority": {HUGE}}}', "field 'priority' must be between"),
    (f'{{"app": "echo", "after": [{HUGE}]}}', "field 'after[0]' must be between"),
    (f'{{"app": "echo", "count": {HUGE}}}', "field 'count' must be between"),
    ('{"app": "echo", "nodes": "x"}', "field 'nodes' must be a whole number"),
    ('{"app": "echo", "nodes": 1.5}', "field 'nodes' must be a whole number"),
    ('{"app": "echo", "priority": true}', "field 'priority' must be a whole number"),
    ('{"app": "echo", "tags": {"a": {"b": 1}}}', "field 'tags.a' must be a string"),
    ('{"app": "echo", "tags": ["a"]}', "field 'tags' must be an object"),
    ('{"app": "echo", "params": ["a"]}', "field 'params' must be an object"),
    ('{"app": "echo", "params": {"x": [1]}}', "field 'params.x' must be a string or a number"),
    ('{"app": ["echo"]}', "field 'app' must be the name of an app"),
    ('{"app": "echo", "site": 5}', "field 'site' must be the name of a site"),
    ('{"app": "echo", "after": 1}', "field 'after' must be a list of job ids"),
    ('{"app": "echo", "after": ["x"]}', "field 'after': no job x"),
    ('{"app": "echo", "walltime": "soon"}', "field 'walltime' 'soon': expected a duration"),
    ('{"app": "echo", "walltime": "0s"}', "field 'walltime' must be positive minutes"),
    ('{"app": "echo", "count": 100000000000}', "field 'count' must be 1 to"),
    ('{"app": "echo", "params": ' + "[" * DEEP + "]" * DEEP + "}", "nested too deeply"),
    ('{"app": "echo", "params": {"x": ' + "[" * 100 + "]" * 100 + "}}",
     "nested more than 64 levels"),
]


@pytest.mark.parametrize(("line", "message"), FILE_CASES, ids=[m for _, m in FILE_CASES])
def test_from_file_bad_line_is_refused(cli: Any, area: Path, echo: str, tmp_path: Path,
                                       line: str, message: str) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"app": "echo", "params": {"x": "fine"}}\n' + line + "\n")
    assert_refused(cli("job", "create", "--from-file", str(path)), f"{path}:2", message)
    assert count(area, "job") == 0


@pytest.mark.parametrize("data", [b"\xff\xfe{}\n", b'{"app": "caf\xe9"}\n', b"\x00\x01\x02\n"])
def test_from_file_not_utf8_is_refused(cli: Any, area: Path, echo: str, tmp_path: Path,
                                       data: bytes) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(data)
    result = cli("job", "create", "--from-file", str(path))
    assert_refused(result, f"{path}:1")
    assert "UTF-8" in result.err or "not valid JSON" in result.err
    assert count(area, "job") == 0


# -- options ---------------------------------------------------------------------------------

OPTION_CASES = [
    (["--priority", HUGE], "--priority must be between"),
    (["--priority", str(-(1 << 63) - 1)], "--priority must be between"),
    (["--after", HUGE], "--after must be between"),
    (["--after", "999"], "--after: no job 999"),
    (["--count", HUGE], "--count must be between"),
    (["--walltime", "inf"], "--walltime 'inf': expected a duration"),
    (["--walltime", "nan"], "--walltime 'nan': expected a duration"),
    (["--nodes", HUGE], "--nodes must be between"),
    (["-p", "x=a\udcffb"], "-p x is not valid UTF-8"),
    (["-p", "x=a\0b"], "-p x must not contain a NUL"),
    (["-t", "k=\udce9"], "-t k is not valid UTF-8"),
    (["-t", "k=a\0"], "-t k must not contain a NUL"),
    (["--site", "lo\udcffcal"], "--site is not valid UTF-8"),
]


@pytest.mark.parametrize(("options", "message"), OPTION_CASES, ids=[m for _, m in OPTION_CASES])
def test_bad_option_is_refused(cli: Any, area: Path, echo: str, options: list[str],
                               message: str) -> None:
    assert_refused(cli("job", "create", "--app", "echo", *options), message)
    assert count(area, "job") == 0


@pytest.mark.parametrize("command", ["show", "kill", "rm", "reset"])
def test_job_id_past_64_bits_is_no_such_job(cli: Any, area: Path, echo: str,
                                            command: str) -> None:
    assert cli("job", "create", "--app", "echo").code == 0
    assert_refused(cli("job", command, HUGE), f"no job {HUGE}")
    assert count(area, "job") == 1
    assert_refused(cli("job", "show", str(MAX_INT64)), f"no job {MAX_INT64}")


SET_CASES = [
    ("capabilities.speed=nan", "--set capabilities.speed: the value must be a finite number"),
    ("capabilities.speed=1e400", "--set capabilities.speed: the value must be a finite"),
    (f"node.cpus={HUGE}", "--set node.cpus: the value must be between"),
    ("description=caf\udce9", "--set description: the value is not valid UTF-8"),
    ("description=a\0", "--set description: the value must not contain a NUL"),
]


@pytest.mark.parametrize(("assignment", "message"), SET_CASES, ids=[m for _, m in SET_CASES])
def test_bad_site_setting_is_refused(cli: Any, area: Path, assignment: str, message: str) -> None:
    before = count(area, "site")
    assert_refused(cli("site", "add", "s", "--preset", "local", "--set", assignment), message)
    assert count(area, "site") == before


# -- megarun.toml ----------------------------------------------------------------------------

AREA_CASES = [
    (b"\xff\xfename = 'x'\n", "not UTF-8 text (byte 0xff at offset 0)"),
    (b"name = 'caf\xe9'\n", "not UTF-8 text"),
    (b"x = " + b"[" * DEEP + b"]" * DEEP + b"\n", "nested too deeply"),
    (b"x = " + b"{a=" * DEEP + b"}" * DEEP + b"\n", "nested too deeply"),
    (b'name = "a\\u0000b"\n', "key 'name' must not contain a NUL"),
    (b"[launcher]\ndead_after = nan\n", "key 'launcher.dead_after' must be a finite number"),
    (b"[launcher]\nheartbeat = inf\n", "key 'launcher.heartbeat' must be a finite number"),
    (b"[launcher]\nheartbeat = 0\n", "key 'launcher.heartbeat' must be more than 0"),
    (b"[launcher]\ndead_after = 0.0\n", "key 'launcher.dead_after' must be more than 0"),
    (b"[launcher]\nheartbeat = 1e300\n", "key 'launcher.heartbeat' 1e+300: expected a duration"),
    (b"[launcher]\nretries = " + HUGE.encode() + b"\n", "key 'launcher.retries' must be between"),
    (b"[launcher]\nretries = 100000\n", "key 'launcher.retries' must be at most 1000"),
    (b"[limits]\nlaunch_limiter_interval = 1e300\n", "launch_limiter_interval' 1e+300: expected a duration"),
]


@pytest.mark.parametrize(("text", "message"), AREA_CASES, ids=[m for _, m in AREA_CASES])
def test_bad_area_file_is_refused(cli: Any, area: Path, text: bytes, message: str) -> None:
    config = area / "megarun.toml"
    good = config.read_bytes()
    config.write_bytes(text)
    assert_refused(cli("app", "add", "new", "--command", "true"), str(config), message)
    config.write_bytes(good)
    assert count(area, "app") == 0


# -- apps/*.toml and app add -----------------------------------------------------------------

APP_CASES = [
    (b"\xff\xfe", "not UTF-8 text"),
    (b'command = "echo {{ x }}"\n[env]\nA = "a\\u0000b"\n', "key 'env.A' must not contain a NUL"),
    (b'command = "echo\\u0000 {{ x }}"\n', "key 'command' must not contain a NUL"),
    (b'command = "echo {{ x }}"\n[params]\nx = "a\\u0000"\n', "key 'params.x' must not contain"),
    (b'command = "echo"\n[env]\n"A B" = "x"\n', "key 'env.A B': the name must be letters"),
    (b'command = "echo"\n[params]\nx = [1]\n', "key 'params.x' must be a string, a number"),
    (b'command = "echo"\n[resources]\nnodes = nan\n', "key 'resources.nodes' must be a finite"),
    (b'command = "echo"\nretries = ' + HUGE.encode() + b"\n", "key 'retries' must be between"),
    (b'command = "echo"\nretries = 5000\n', "key 'retries' must be 0 to 1000"),
    (b'command = "echo"\nretries = -1\n', "key 'retries' must be 0 to 1000"),
    (b'command = "' + b"[" * DEEP + b'"\nx = ' + b"[" * DEEP + b"]" * DEEP + b"\n",
     "nested too deeply"),
    (b'command = "echo {{ \'\'.__class__.__mro__ }}"\n',
     "app 'bad': command template: '__mro__' is not allowed"),
    (b'command = "echo"\nstage_in = [{src = "{{ x.__class__ }}", dest = "in"}]\n',
     "path template in stage_in[0].src: '__class__' is not allowed"),
]


@pytest.mark.parametrize(("text", "message"), APP_CASES, ids=[m for _, m in APP_CASES])
def test_bad_app_file_is_refused(cli: Any, area: Path, text: bytes, message: str) -> None:
    apps = area / "apps"
    apps.mkdir(exist_ok=True)
    (apps / "bad.toml").write_bytes(text)
    assert_refused(cli("app", "sync"), str(apps / "bad.toml"), message)
    assert count(area, "app") == 0  # the area's good apps are not saved either


@pytest.mark.parametrize(("template", "message"), [
    ("{{ x | nosuchfilter }}", "No filter named 'nosuchfilter'"),
    ("{{ x is nosuchtest }}", "No test named 'nosuchtest'"),
])
def test_app_add_refuses_unknown_filters_and_tests(cli: Any, area: Path, template: str,
                                                   message: str) -> None:
    assert_refused(cli("app", "add", "a", "--command", template),
                   "app 'a': bad command template:", message)
    assert count(area, "app") == 0


def test_app_add_refuses_nul_and_undecodable_text(cli: Any, area: Path) -> None:
    assert_refused(cli("app", "add", "a", "--command", "echo \0"),
                   "app 'a': key 'command' must not contain a NUL")
    assert_refused(cli("app", "add", "a", "--command", "echo \udcff"),
                   "app 'a': key 'command' is not valid UTF-8")
    assert_refused(cli("app", "add", "a", "--command", "echo", "--param", "x=\0"),
                   "app 'a': key 'params.x' must not contain a NUL")
    assert_refused(cli("app", "add", "a", "--command", "echo", "--description", "\udcff"),
                   "app 'a': key 'description' is not valid UTF-8")
    assert count(area, "app") == 0


# -- templates are sandboxed -----------------------------------------------------------------

ESCAPES = [
    '{{ cycler.__init__.__globals__.os.system("touch MARK") }}',
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    '{{ x|attr("__class__") }}',
    '{{ x["__class__"] }}',
    "{% set e = joiner.__init__ %}{{ e }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_escape_attempt_is_refused_when_the_app_is_saved(cli: Any, area: Path, tmp_path: Path,
                                                         template: str) -> None:
    mark = tmp_path / "escaped"
    command = template.replace("MARK", str(mark))
    assert_refused(cli("app", "add", "evil", "--command", command, "--param", "x=a"),
                   "app 'evil': command template:", "is not allowed")
    assert count(area, "app") == 0
    assert not mark.exists()


RENDER_ESCAPES = [
    # names that come from parameters cannot be seen when the app is saved: the sandbox
    # refuses them when a job is made
    ("{{ x|attr(y) }}", ["-p", "y=__class__"], "access to attribute '__class__'"),
    ("{{ (x|attr(y))|attr(z) }}", ["-p", "y=__init__", "-p", "z=__globals__"], "__globals__"),
    ("{{ x * 10000000 }}", [], "more than 1000000 items"),
    ("{{ 10 ** 100000 }}", [], "is too large"),
    ("{{ x / 0 }}", ["-p", "x=1"], "TypeError"),
    ('{{ "a\\x00b" }}', [], "the rendered text must not contain a NUL"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", [], "RecursionError"),
]


@pytest.mark.parametrize(("template", "params", "message"), RENDER_ESCAPES,
                         ids=[m for _, _, m in RENDER_ESCAPES])
def test_template_is_rendered_in_the_sandbox(cli: Any, area: Path, template: str,
                                             params: list[str], message: str) -> None:
    assert cli("app", "add", "risky", "--command", template, "--param", "x=a",
               "--param", "y=b", "--param", "z=c").code == 0
    result = cli("job", "create", "--app", "risky", *params)
    assert_refused(result, "app 'risky': command template:", message)
    assert count(area, "job") == 0


def test_sandboxed_templates_still_quote_and_render(cli: Any, area: Path) -> None:
    assert cli("app", "add", "sim", "--command",
               "sim {{ size }} {% for i in range(2) %}-v{{ i }} {% endfor %}{{ mode|upper }}",
               "--param", "size", "--param", "mode=fast").code == 0
    created = cli("job", "create", "--app", "sim", "-p", "size=a b; rm -rf /", "--json")
    assert created.code == 0, created.err
    shown = cli("job", "show", str(created.json()["first_id"]), "--json").json()
    assert shown["command"] == "sim 'a b; rm -rf /' -v0 -v1 FAST"


# -- test.toml -------------------------------------------------------------------------------

TEST_CASES = [
    (b'steps = ["echo a\\u0000b"]\n', "key 'steps[0]' must not contain a NUL"),
    (b'steps = [{name = "s", cmd = "echo \\u0000"}]\n', "key 'steps[0].cmd' must not contain"),
    (b'steps = ["echo"]\npriority = ' + HUGE.encode() + b"\n", "key 'priority' must be between"),
    (b'steps = ["echo"]\nruntimelim = inf\n', "key 'runtimelim' must be a finite number"),
    (b'steps = ["echo"]\ndescription = "caf\xe9"\n', "not UTF-8 text"),
    (b'steps = ["echo"]\nx = ' + b"[" * DEEP + b"]" * DEEP + b"\n", "nested too deeply"),
]


@pytest.mark.parametrize(("text", "message"), TEST_CASES, ids=[m for _, m in TEST_CASES])
def test_bad_test_file_is_refused(cli: Any, area: Path, text: bytes, message: str) -> None:
    # allow-runs = false: were the file accepted, the run is refused after the tests are read
    # (with another message), so no job ever starts whatever the code does
    config = area / "megarun.toml"
    config.write_text(config.read_text().replace("\nkeys", "\nallow-runs = false\nkeys", 1))
    folder = area / "tests" / "t"
    folder.mkdir(parents=True)
    (folder / "test.toml").write_bytes(text)
    result = cli("run", "--target", "linux/x86_64", "--runname", "r")
    assert_refused(result, str(folder / "test.toml"), message)
    assert count(area, "job") == 0


def test_bad_test_file_fails_before_any_job_is_made(area: Path) -> None:
    """A real run next to a good test: refused before any job exists. (Before the check, the
    NUL reached the agent, which crashed and was restarted for ever: hence a process with a
    timeout, not the in-process CLI.)"""
    for name, text in (("good", 'steps = ["true"]\n'), ("bad", 'steps = ["echo \\u0000"]\n')):
        (area / "tests" / name).mkdir(parents=True)
        (area / "tests" / name / "test.toml").write_text(text)
    result = megarun_process(area, "run", "--target", "linux/x86_64", "--runname", "r",
                             "--quiet", timeout=60)
    assert_refused(result, "tests/bad/test.toml: key 'steps[0]' must not contain a NUL")
    assert count(area, "job") == 0


# -- the last defence in the CLI -------------------------------------------------------------


@pytest.mark.parametrize(("args", "option"), [
    (["job", "ls", "--limit", HUGE], "'--limit'"),
    (["job", "logs", "1", "--tail", HUGE], "'--tail'"),
    (["job", "logs", "1", "--head", HUGE], "'--head'"),
    (["queue", "rm", HUGE], "'ID'"),
    (["queue", "submit", "--site", "local", "--nodes", HUGE], "'--nodes'"),
])
def test_numbers_past_64_bits_in_options_name_the_option(cli: Any, area: Path, echo: str,
                                                         args: list[str], option: str) -> None:
    """Before: `job ls --limit HUGE` and `queue rm HUGE` reached SQLite (OverflowError)."""
    result = cli(*args)
    assert result.code == 2, result.err
    assert f"Invalid value for {option}" in result.err and "not in the range" in result.err
    assert "internal error" not in result.err and "OverflowError" not in result.err

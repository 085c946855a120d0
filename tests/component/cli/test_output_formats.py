"""What scripts read: --json on every command that reports, --csv with the JSON rows' fields,
--limit and filters on every listing, `clean --dry-run`, and docs/cli.md listing every JSON
field each command prints (with schema_version and ISO 8601 UTC times)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from megarun.cli.app import root_command
from megarun.cli.formats import csv_cell, iso_utc
from megarun.homehost.areas import init_area
from tests.conftest import megarun_process

DOCS = Path(__file__).resolve().parents[3] / "docs" / "cli.md"

#: Commands that report but print no --json: an export in a format of one's choice, and the
#: hidden half of `homehost migrate` that speaks JSON lines anyway.
NO_JSON = {"runs export", "homehost release"}
#: Listings: --json, --csv, and (those that can grow without bound) --limit.
LISTINGS = {"site presets", "site ls", "app ls", "app sync", "job ls", "queue ls", "runs ls",
            "archive ls", "status"}
LIMITED = {"job ls", "queue ls", "runs ls", "archive ls"}


def commands(command: click.Command,
             path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from commands(sub, (*path, name))
    else:
        yield " ".join(path), command


COMMANDS = dict(commands(root_command().load_all()))


def options(name: str) -> set[str]:
    return {opt for param in COMMANDS[name].params for opt in getattr(param, "opts", [])}


def test_every_command_that_reports_has_json() -> None:
    missing = sorted(name for name in COMMANDS if name not in NO_JSON
                     and "--json" not in options(name))
    assert missing == []


def test_every_listing_has_csv_and_the_long_ones_a_limit() -> None:
    assert sorted(n for n in LISTINGS if not {"--json", "--csv"} <= options(n)) == []
    assert sorted(n for n in LIMITED if "--limit" not in options(n)) == []
    assert {"--target", "--runname", "--status"} <= options("runs ls")
    assert {"--site", "--state"} <= options("queue ls")
    assert {"--target", "--runname", "--status"} <= options("archive ls")
    assert "--dry-run" in options("clean")


def test_iso_utc() -> None:
    assert iso_utc(1764500000.75) == "2025-11-30T10:53:20Z"
    assert iso_utc(None) is None


# -- a small area ---------------------------------------------------------------------------
def ok(area: Path, *args: str) -> str:
    result = megarun_process(area, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def as_json(area: Path, *args: str) -> Any:
    return json.loads(ok(area, *args, "--json"))


def suite_area(root: Path) -> Path:
    init_area(root, keys=["os"])
    for test, body in (("t1", 'steps = ["echo one"]\n[items]\nN = [1, 2]\n'),
                       ("t2", 'steps = ["echo two"]\nwaiton = ["t1"]\n'),
                       ("bad", 'steps = ["false"]\n')):
        (root / "tests" / test).mkdir()
        (root / "tests" / test / "test.toml").write_text(body)
    return root


def test_csv_has_the_json_fields_and_rfc4180_quoting(area: Path) -> None:
    ok(area, "app", "add", "echo", "--command", "echo hi")
    ok(area, "job", "create", "--app", "echo", "--count", "2", "-t", 'k=a,"b"\nc')
    rows = as_json(area, "job", "ls")
    text = ok(area, "job", "ls", "--csv")
    table = list(csv.reader(io.StringIO(text, newline="")))
    header, body = table[0], table[1:]
    assert header[:6] == ["id", "app", "run", "item", "site", "state"]  # the table's first
    assert sorted(header) == sorted(rows[0])  # and every JSON field
    assert [dict(zip(header, line, strict=True)) for line in body] == [
        {key: csv_cell(value) for key, value in row.items()} for row in rows]
    assert body[0][header.index("tags")] == 'k=a,"b"\nc'  # quoted, read back whole
    assert body[0][header.index("run")] == ""  # null, not "None"


def test_status_csv_rows_are_the_json_items(tmp_path: Path) -> None:
    area = suite_area(tmp_path / "area")
    megarun_process(area, "run", "--target", "linux", "--runname", "r1", "-q")
    items = json.loads(megarun_process(area, "status", "--target", "linux", "--runname", "r1",
                                       "--json").stdout)["items"]
    text = megarun_process(area, "status", "--target", "linux", "--runname", "r1",
                           "--csv").stdout
    table = list(csv.DictReader(io.StringIO(text, newline="")))
    assert table == [{k: csv_cell(v) for k, v in item.items()} for item in items]


def test_runs_ls_filters_and_limit(tmp_path: Path) -> None:
    area = suite_area(tmp_path / "area")
    for target, runname in (("linux", "r1"), ("linux", "r2"), ("mac", "r1")):
        megarun_process(area, "run", "--target", target, "--runname", runname, "-q",
                        "--testpatt", "t1" if runname == "r2" else "%")
    every = as_json(area, "runs", "ls")
    assert [(r["target"], r["runname"], r["status"]) for r in every] == [
        ("linux", "r1", "FAIL"), ("linux", "r2", "PASS"), ("mac", "r1", "FAIL")]
    assert [r["runname"] for r in as_json(area, "runs", "ls", "--target", "lin*")] == ["r1", "r2"]
    assert [r["target"] for r in as_json(area, "runs", "ls", "--runname", "r1")] == ["linux", "mac"]
    assert [r["runname"] for r in as_json(area, "runs", "ls", "--status", "pass")] == ["r2"]
    first = megarun_process(area, "runs", "ls", "--json", "--limit", "1")
    assert [r["runname"] for r in json.loads(first.stdout)] == ["r1"]
    assert first.stderr.strip() == "... 2 more; --limit 0 for all"
    assert megarun_process(area, "runs", "ls", "--status", "nope").returncode == 2
    assert every[0]["created_at"] == iso_utc(every[0]["created"])


def test_queue_ls_state_and_limit(area: Path) -> None:
    for _ in range(3):
        ok(area, "queue", "submit", "--site", "local", "--nodes", "1", "--walltime", "1")
    ok(area, "queue", "rm", "2")
    assert [b["id"] for b in as_json(area, "queue", "ls")] == [1, 3]
    assert [b["id"] for b in as_json(area, "queue", "ls", "--state", "cancelled")] == [2]
    some = megarun_process(area, "queue", "ls", "--history", "--limit", "2", "--csv")
    assert [row["id"] for row in csv.DictReader(io.StringIO(some.stdout))] == ["1", "2"]
    assert some.stderr.strip() == "... 1 more; --limit 0 for all"
    assert megarun_process(area, "queue", "ls", "--state", "gone").returncode == 2
    for batch in (1, 3):
        ok(area, "queue", "rm", str(batch))


def test_archive_ls_filters_limit_and_csv(tmp_path: Path) -> None:
    area = suite_area(tmp_path / "area")
    for runname in ("r1", "r2", "r3"):
        megarun_process(area, "run", "--target", "linux", "--runname", runname, "-q",
                        "--testpatt", "t1" if runname == "r2" else "%")
    ok(area, "archive", "reduce", "--older-than", "0")
    assert [r["runname"] for r in as_json(area, "archive", "ls", "--status", "FAIL")] == [
        "r1", "r3"]
    limited = megarun_process(area, "archive", "ls", "--limit", "2", "--csv",
                              "--runname", "r*")
    assert [row["runname"] for row in csv.DictReader(io.StringIO(limited.stdout))] == [
        "r1", "r2"]
    assert limited.stderr.strip() == "... 1 more; --limit 0 for all"


def snapshot(area: Path) -> tuple[list[str], Any, Any]:
    files = sorted(str(p.relative_to(area)) for p in (area / "runs").rglob("*"))
    return files, as_json(area, "job", "ls"), as_json(area, "runs", "ls")


def test_clean_dry_run_lists_and_changes_nothing(tmp_path: Path) -> None:
    area = suite_area(tmp_path / "area")
    megarun_process(area, "run", "--target", "linux", "--runname", "r1", "-q")
    before = snapshot(area)
    jobs = [job["id"] for job in before[1]]
    plan = as_json(area, "clean", "--target", "linux", "--runname", "r1", "--dry-run")
    paths = sorted(job["workdir"] for job in (as_json(area, "job", "show", str(i))
                                              for i in jobs))
    assert plan == {"schema_version": 1, "dry_run": True, "jobs": len(jobs),
                    "paths": paths, "records": jobs, "run_record": True}
    assert all(Path(path).is_dir() for path in paths)
    human = ok(area, "clean", "--target", "linux", "--runname", "r1", "--dry-run")
    assert f"would remove {paths[0]}" in human and "nothing was removed" in human
    assert snapshot(area) == before  # not a file, folder or record changed
    kept = as_json(area, "clean", "--target", "linux", "--runname", "r1", "--dry-run",
                   "--keep-records")
    assert kept["records"] == [] and not kept["run_record"]
    done = as_json(area, "clean", "--target", "linux", "--runname", "r1")
    assert done["paths_removed"] == len(paths) and done["records_removed"] == len(jobs)
    assert not any(Path(path).exists() for path in paths)


# -- docs/cli.md documents every field --------------------------------------------------------
def documented() -> dict[str, set[str]]:
    """Per command (as the <!-- json: ... --> markers name it), its documented field paths;
    a field whose meaning starts "Only" is one that not every run prints (marked with "?")."""
    text = DOCS.read_text()
    docs: dict[str, set[str]] = {}
    for match in re.finditer(r"<!-- json: (.+?) -->\n((?:\|.*\n)+)", text):
        fields = set()
        for line in match.group(2).splitlines()[2:]:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            path = cells[0].strip("`")
            fields.add(path + ("?" if cells[2].startswith("Only") else ""))
        for name in match.group(1).split(", "):
            docs[name] = fields
    return docs


def fields_of(value: Any, docs: set[str], path: str = "") -> set[str]:
    """The field paths of `value`, entering an object or array of objects only where the docs
    list fields inside it (a map's keys are data), "*" standing for any key where they say so."""
    plain = {d.rstrip("?") for d in docs}
    found: set[str] = set()
    if isinstance(value, list):
        for element in value:
            found |= fields_of(element, docs, path + "[]")
        return found
    if not isinstance(value, dict):
        return found
    prefix = f"{path}." if path else ""
    for key, inner in value.items():
        name = f"{prefix}*" if f"{prefix}*" in plain else f"{prefix}{key}"
        if (key == "schema_version" and not path) or (key.endswith("_at") and key[:-3] in value):
            continue  # said once for every command
        found.add(name)
        if any(d.startswith(name + ".") or d.startswith(name + "[]") for d in plain):
            found |= fields_of(inner, docs, name)
    return found


def check_fields(name: str, outputs: list[Any], docs: dict[str, set[str]]) -> list[str]:
    if name not in docs:
        return [f"{name}: no <!-- json: {name} --> table in docs/cli.md"]
    fields = docs[name]
    seen: set[str] = set()
    problems = []
    for output in outputs:
        if isinstance(output, dict) and name != "job logs":
            if output.get("schema_version") != 1:
                problems.append(f"{name}: no schema_version 1")
        for row in output if isinstance(output, list) else [output]:  # a listing: its rows
            seen |= fields_of(row, fields)
    required = {f for f in fields if not f.endswith("?")}
    plain = {f.rstrip("?") for f in fields}
    problems += [f"{name}: prints `{f}`, not documented" for f in sorted(seen - plain)]
    problems += [f"{name}: documents `{f}`, never printed" for f in sorted(required - seen)]
    for output in outputs:
        for row in output if isinstance(output, list) else [output]:
            for key in ("created", "started", "ended", "submitted", "since"):
                if isinstance(row, dict) and isinstance(row.get(key), float):
                    if row.get(f"{key}_at") != iso_utc(row[key]):
                        problems.append(f"{name}: {key}_at is not {key} in ISO 8601 UTC")
    return problems


def test_docs_list_every_json_field_of_every_command(tmp_path: Path) -> None:
    area = suite_area(tmp_path / "a")
    out: dict[str, list[Any]] = {}

    def record(name: str, *args: str, where: Path = area) -> None:
        out.setdefault(name, []).append(as_json(where, *args))

    record("init", "init", str(tmp_path / "b"), where=tmp_path)
    record("run", "run", "--target", "linux", "--runname", "r1", "-q", "--testpatt", "t%")
    record("status", "status", "--target", "linux", "--runname", "r1")
    record("rerun", "rerun", "--target", "linux", "--runname", "r1", "--status", "PASS", "-q")
    record("runs ls", "runs", "ls")
    record("site presets", "site", "presets")
    record("site add", "site", "add", "s2", "--preset", "local")
    ok(area, "site", "add", "hpc", "--preset", "generic-slurm", "--workdir", str(tmp_path / "w"))
    record("site set", "site", "set", "hpc", "elastic.max_batch_jobs=1")
    record("site ls", "site", "ls")
    record("site show", "site", "show", "local")
    record("site check", "site", "check", "local")
    record("site init", "site", "init", "--preset", "local", "--name", "s3", "--yes")
    record("site rm", "site", "rm", "s3")
    record("app add", "app", "add", "hello2", "--command", "echo hi")
    record("app sync", "app", "sync")
    record("app ls", "app", "ls")
    record("app show", "app", "show", "hello")
    record("app rm", "app", "rm", "hello2")
    record("job create", "job", "create", "--app", "hello", "--count", "2", "-t", "k=v")
    record("job ls", "job", "ls")
    record("job ls --by-state", "job", "ls", "--by-state")
    record("job show", "job", "show", "1")
    record("job logs", "job", "logs", "1")
    record("job match", "job", "match")
    record("job kill", "job", "kill", "4")
    record("job reset", "job", "reset", "4")
    record("job rm", "job", "rm", "4")
    record("launch", "launch")
    record("sync", "sync")
    record("queue submit", "queue", "submit", "--site", "local", "--nodes", "1",
           "--walltime", "1")
    record("queue ls", "queue", "ls")
    record("queue elastic", "queue", "elastic", "--site", "hpc", "--dry-run")
    record("queue backlog", "queue", "backlog")
    record("queue rm", "queue", "rm", "1")
    record("homehost show", "homehost", "show")
    record("kill", "kill", "--target", "linux", "--runname", "r1")
    record("clean", "clean", "--target", "linux", "--runname", "r1", "--dry-run")
    record("cron show", "cron", "show")
    record("db check", "db", "check")
    record("migrate", "migrate", "--destination", str(tmp_path / "b"), "--dry-run")
    record("archive reduce", "archive", "reduce", "--older-than", "0")
    record("archive ls", "archive", "ls")
    record("archive restore", "archive", "restore")
    record("clean", "clean", "--target", "linux", "--runname", "r1")
    record("db restore", "db", "restore", "--from-mirror", "--force")
    record("homehost set-address", "homehost", "set-address", "user@home.example")
    record("demo", "demo", "--path", str(tmp_path / "d"), "--jobs", "2")
    docs = documented()
    problems = [p for name, outputs in out.items() for p in check_fields(name, outputs, docs)]
    assert problems == []
    # the commands this test cannot run here (another host, the user's crontab, background
    # processes) are documented too
    assert {"homehost migrate", "cron install", "cron rm", "run --detach"} <= set(docs)

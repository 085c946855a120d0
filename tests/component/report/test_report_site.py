"""`megarun report`: the folder it writes (private, only changed pages rewritten, stale pages
removed, a foreign folder refused) and its --json."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from megarun.report.html.page import Page
from megarun.report.html.site import MANIFEST, Keep, load_manifest, prepare_folder, write_site


def build(cli: Any, *args: str) -> dict[str, Any]:
    result = cli("report", "--json", *args)
    assert result.code == 0, result.err
    data: dict[str, Any] = result.json()
    return data


def test_first_report_writes_pages_and_a_second_writes_nothing(cli: Any, area: Path) -> None:
    first = build(cli)
    assert Path(first["out"]) == area / "report"
    assert "index.html" in first["written"] and first["removed"] == []
    assert (area / "report" / "index.html").read_text().startswith("<!DOCTYPE html>")
    again = build(cli)
    assert again["written"] == [] and again["unchanged"] == len(first["written"])


def test_a_change_rewrites_only_the_pages_it_touches(cli: Any, area: Path) -> None:
    build(cli)
    index_mtime = (area / "report" / "index.html").stat().st_mtime_ns
    assert cli("app", "add", "noop", "--command", "true").code == 0
    assert cli("job", "create", "--app", "noop", "--count", "2").code == 0
    after = build(cli)
    assert "campaign/index.html" in after["written"]
    assert "index.html" not in after["written"]  # no run changed
    assert (area / "report" / "index.html").stat().st_mtime_ns == index_mtime


def test_files_and_folders_are_private_whatever_the_umask(cli: Any, area: Path) -> None:
    old = os.umask(0o002)
    try:
        build(cli)
    finally:
        os.umask(old)
    for path in [area / "report", *(area / "report").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_a_folder_with_other_files_is_refused_and_left_alone(cli: Any, tmp_path: Path) -> None:
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "index.html").write_text("my own page")
    result = cli("report", "--out", str(mine))
    assert result.code == 2
    assert "not a megarun report" in result.err and len(result.err.strip().splitlines()) == 1
    assert (mine / "index.html").read_text() == "my own page"


def test_pages_gone_from_the_build_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "site"
    old = prepare_folder(out)
    write_site(out, [Page("a.html", "a"), Page("sub/b.html", "b")], old, {})
    second = write_site(out, [Keep("a.html")], prepare_folder(out), {"k": "1"})
    assert second.removed == ["sub/b.html"] and second.unchanged == 1
    assert not (out / "sub" / "b.html").exists() and (out / "a.html").read_text() == "a"
    manifest = load_manifest(out)
    assert manifest is not None and manifest.fingerprints == {"k": "1"}
    assert set(manifest.pages) == {"a.html"}


@pytest.mark.parametrize("path", ["../escape.html", "/abs.html", "a/../../b.html"])
def test_a_page_path_cannot_leave_the_folder(tmp_path: Path, path: str) -> None:
    out = tmp_path / "site"
    with pytest.raises(ValueError, match="outside the report"):
        write_site(out, [Page(path, "x")], prepare_folder(out), {})
    assert not (tmp_path / "escape.html").exists() and not (out / MANIFEST).exists()


def test_a_damaged_manifest_means_every_page_is_checked_again(tmp_path: Path) -> None:
    out = tmp_path / "site"
    write_site(out, [Page("a.html", "a")], prepare_folder(out), {})
    (out / MANIFEST).write_text("{not json")
    again = write_site(out, [Page("a.html", "a2")], prepare_folder(out), {})
    assert again.written == ["a.html"] and (out / "a.html").read_text() == "a2"


def test_fingerprints_recorded_while_the_pages_are_given_are_saved(tmp_path: Path) -> None:
    out = tmp_path / "site"
    prints: dict[str, str] = {}

    def producer() -> Iterator[Page]:
        prints["run:1"] = "abc"  # as ReportInput.unchanged records them, page by page
        yield Page("a.html", "a")

    write_site(out, producer(), prepare_folder(out), prints)
    manifest = load_manifest(out)
    assert manifest is not None and manifest.fingerprints == {"run:1": "abc"}

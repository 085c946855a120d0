"""The one write-and-rename of the home side: whole files, user-private, no leftovers."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from megarun.core.files import atomic_writer, replacing, write_private


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask000", "umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_text_and_bytes_replace_the_file_user_private(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    assert write_private(path, "{\"last\": \"é\"}") is True
    assert path.read_text(encoding="utf-8") == "{\"last\": \"é\"}"
    assert _mode(path) == 0o600
    write_private(path, b"\x00\x01", durable=True)
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_the_mode_asked_for_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "script.sh"
    with atomic_writer(path, 0o700) as handle:
        handle.write(b"#!/bin/sh\n")
    assert _mode(path) == 0o700


def test_a_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "homehost.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("disk gone")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["homehost.json"]


def test_replacing_fills_a_named_temp_by_path(tmp_path: Path) -> None:
    path = tmp_path / "megarun.db"
    temp = tmp_path / ".megarun.db.tmp-1"
    with replacing(path, durable=True, temp=temp) as filling:
        assert filling == temp and _mode(temp) == 0o600 and temp.stat().st_size == 0
        assert not path.exists()  # nobody sees the new file before the rename
        temp.write_bytes(b"copy")
    assert path.read_bytes() == b"copy"
    assert not temp.exists()


def test_create_only_writes_once(tmp_path: Path) -> None:
    path = tmp_path / "homehost.json"
    assert write_private(path, "first", durable=True, create_only=True) is True
    assert write_private(path, "second", durable=True, create_only=True) is False
    assert path.read_text() == "first"
    assert _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["homehost.json"]

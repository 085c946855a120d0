"""make_private_dirs: each folder it makes is 0700, whatever the umask; what exists is left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from megarun.agent.private import NotPrivate, check_private, make_private_dirs


@pytest.mark.parametrize("umask", [0o000, 0o002, 0o277])
def test_every_level_made_is_0700(tmp_path: Path, umask: int) -> None:
    (tmp_path / "kept").mkdir(mode=0o755)
    target = tmp_path / "kept" / "a" / "b" / "c"
    old = os.umask(umask)
    try:
        make_private_dirs(str(target))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in
             (tmp_path / "kept", target.parents[1], target.parent, target)}
    assert modes == {"kept": 0o755, "a": 0o700, "b": 0o700, "c": 0o700}


def test_a_file_in_the_way_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        make_private_dirs(str(tmp_path / "file" / "sub"))


def test_check_names_the_path_and_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    os.chmod(folder, 0o757)
    with pytest.raises(NotPrivate) as caught:
        check_private(str(folder))
    assert str(caught.value) == (f"{folder} is writable by group or others (mode 0757) "
                                 f"(chmod go-w {folder})")
    os.chmod(folder, 0o755)
    check_private(str(folder))

"""A wheel install carries the presets and templates, and its `megarun` finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_wheel_ships_presets(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path), str(REPO)], capture_output=True, text=True,
                           check=False)
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("megarun-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "megarun/_data/site-presets/local.toml" in names
    assert "megarun/agent/__main__.py" in names
    target = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    listed = subprocess.run([sys.executable, "-c",
                             "from megarun.config.presets import preset_names, presets_dir;"
                             "print(presets_dir()); print(preset_names())"],
                            capture_output=True, text=True, check=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert str(target / "megarun" / "_data" / "site-presets") in listed.stdout
    assert "'local'" in listed.stdout

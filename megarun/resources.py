"""Where the shipped data folders (templates/, site-presets/) are.

A wheel carries them inside the package (megarun/_data/, see setup.py); a source checkout or an
editable install reads them from the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The folder `name` ("templates" or "site-presets") of this installation."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"megarun's {name}/ folder is missing from this installation")

"""The home host: the one host that writes an area's working database."""

from __future__ import annotations

from pathlib import Path

from megarun.config.area import Area


def working_db_path(area: Area) -> Path:
    """The working database of `area` when this host is its home."""
    return area.db_path

"""The agent as one zipapp: built from megarun/agent/, byte for byte the same for the same code.

Its name carries a hash of its content (`megarun-agent-<hash>.pyz`), so a site holds the agent
version it runs, and a changed agent is shipped again while an unchanged one never is.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_MAIN = b"import sys\nfrom megarun.agent.__main__ import main\nsys.exit(main())\n"
_PACKAGE_INIT = b'"""Only the agent of megarun: see megarun/agent."""\n'
_STAMP = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class AgentZipapp:
    data: bytes
    digest: str

    @property
    def name(self) -> str:
        return f"megarun-agent-{self.digest}.pyz"


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_STAMP)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


@lru_cache(maxsize=1)
def agent_zipapp() -> AgentZipapp:
    """The zipapp of this installation's agent (built once per process)."""
    source = Path(__file__).resolve().parents[1] / "agent"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _add(archive, "__main__.py", _MAIN)
        _add(archive, "megarun/__init__.py", _PACKAGE_INIT)
        for path in sorted(source.glob("*.py")):
            _add(archive, f"megarun/agent/{path.name}", path.read_bytes())
    data = b"#!/usr/bin/env python3\n" + buffer.getvalue()
    return AgentZipapp(data, hashlib.sha256(data).hexdigest()[:16])

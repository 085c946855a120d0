"""The spool layout has one definition (megarun/agent/layout.py) that both halves use."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from megarun.agent import layout
from megarun.agent.spool import AgentSpool
from megarun.sites.local_spool import LocalSpool

ROOT = Path(__file__).resolve().parents[2] / "megarun"
#: Where the layout used to be written out again: the agent and the home host's sites wing.
SCANNED = sorted((ROOT / "agent").glob("*.py")) + sorted((ROOT / "sites").glob("*.py"))
FOLDERS = {layout.SPOOL, layout.QUEUE, layout.CLAIMED, layout.CONTROL, layout.KILL, layout.STOP,
           layout.AGENTS, layout.EVENTS, layout.REJECTED, layout.PUBLISHED, layout.LOGS,
           layout.JOBS, layout.HOME_CLAIM, layout.OUTBOX, layout.SENT, layout.DROP,
           layout.FORGET}
SUFFIXES = (layout.BUNDLE_SUFFIX, layout.HEARTBEAT_SUFFIX, layout.AGENT_LOG_SUFFIX)


def _path_literals(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """String literals that name a spool folder in a path, or spell a spool file suffix."""
    for node in ast.walk(tree):
        parts: list[ast.expr] = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            parts = [node.left, node.right]
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "os.path.join":
            parts = list(node.args)
        for part in parts:
            if isinstance(part, ast.Constant) and part.value in FOLDERS:
                yield node.lineno, str(part.value)
        if isinstance(node, (ast.JoinedStr, ast.Call, ast.Compare, ast.BinOp)):
            for child in ast.walk(node):
                if (isinstance(child, ast.Constant) and isinstance(child.value, str)
                        and child.value.endswith(SUFFIXES)):
                    yield node.lineno, child.value


def test_only_the_layout_module_spells_spool_paths() -> None:
    found = []
    for path in SCANNED:
        if path.name == "layout.py":
            continue
        for line, text in _path_literals(ast.parse(path.read_text(encoding="utf-8"))):
            found.append(f"{path.relative_to(ROOT.parent)}:{line}: {text!r}")
    assert found == []


def test_agent_and_home_host_find_the_same_files(tmp_path: Path) -> None:
    home, agent = LocalSpool(tmp_path), AgentSpool(str(tmp_path), "a1", pool="p")
    assert home.event_log("a1") == Path(agent.events_path)
    assert home.heartbeat("a1") == Path(agent.heartbeat_path)
    assert home.claimed / "a1" == Path(agent.claimed)
    assert home.job_dir(12345) == f"{tmp_path}/jobs/000012/12345"


def test_a_pool_bundle_the_home_host_stages_goes_to_that_pool_only(tmp_path: Path) -> None:
    home = LocalSpool(tmp_path)
    home.ensure()
    home.publish(home.stage_bundle([{"id": 1}], pool="p"))
    shared = AgentSpool(str(tmp_path), "a1")
    shared.ensure()
    assert shared.claim_bundle() is None
    pooled = AgentSpool(str(tmp_path), "a2", pool="p")
    pooled.ensure()
    claimed = pooled.claim_bundle()
    assert claimed is not None and layout.pool_of(Path(claimed).name) == "p"

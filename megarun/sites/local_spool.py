"""The home host's side of the spool protocol (docs/spool-protocol.md) on a local directory.

The paths come from megarun/agent/layout.py, the layout's one definition, shared with the
agent. An SSH site's spool is a local mirror of the same shape (remote_spool.py).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megarun.agent import layout, tidy
from megarun.agent.layout import BUNDLE_GLOB, EVENT_LOG_GLOB, HEARTBEAT_GLOB, SpoolLayout
from megarun.agent.private import make_private_dirs
from megarun.core.files import private_dirs, write_private

_COUNTER = itertools.count()


@dataclass(frozen=True)
class StagedBundle:
    """A bundle written under a temporary name, not yet visible to agents."""

    tmp: Path
    final: Path
    job_count: int


class LocalSpool:
    """Spool files of a site whose work dir is on this machine."""

    #: Whether requests written here reach the agents only when `deliver()` is called.
    delivers_later = False

    def deliver(self) -> None:
        """Make the agents see what was written (nothing to do: they read these files)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.layout = SpoolLayout(str(workdir))
        self.root = Path(self.layout.root)

    # -- layout -----------------------------------------------------------------------------
    @property
    def queue(self) -> Path:
        return Path(self.layout.queue)

    @property
    def claimed(self) -> Path:
        return Path(self.layout.claimed)

    @property
    def kill_dir(self) -> Path:
        return Path(self.layout.kill_dir)

    @property
    def stop_dir(self) -> Path:
        return Path(self.layout.stop_dir)

    @property
    def agents(self) -> Path:
        return Path(self.layout.agents)

    @property
    def events(self) -> Path:
        return Path(self.layout.events)

    def event_log(self, agent_id: str) -> Path:
        return self.events / layout.event_log_name(agent_id)

    def heartbeat(self, agent_id: str) -> Path:
        return self.agents / layout.heartbeat_name(agent_id)

    def ensure(self) -> None:
        """Create the spool folders, owner-only; refuse a work dir or spool others may write."""
        private_dirs(self.workdir, self.root, self.queue, self.claimed, self.kill_dir.parent,
                     self.kill_dir, self.stop_dir, self.agents, self.events,
                     Path(self.layout.jobs))

    # -- bundles ----------------------------------------------------------------------------
    def stage_bundle(self, specs: list[dict[str, Any]], pool: str | None = None) -> StagedBundle:
        """Write job specs to a hidden file in queue/; `publish` makes agents see it.

        A bundle of a `pool` (a batch job's own queue, "bj<id>") is named "<pool>~...": only
        the agent started with `--pool <pool>` claims it, and agents without a pool leave it.
        """
        name = layout.bundle_name(
            f"{time.time_ns():020d}-{os.getpid()}-{next(_COUNTER):06d}{layout.BUNDLE_SUFFIX}", pool)
        final = self.queue / name
        tmp = self.queue / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for spec in specs:
                handle.write(json.dumps(spec, separators=(",", ":")))
                handle.write("\n")
        return StagedBundle(tmp, final, len(specs))

    def publish(self, staged: StagedBundle) -> None:
        os.replace(staged.tmp, staged.final)

    def discard(self, staged: StagedBundle) -> None:
        staged.tmp.unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> int:
        """Delete hidden bundle files a crashed dispatcher left (call with the site lock held)."""
        count = 0
        for path in self.queue.glob(".*.tmp"):
            path.unlink(missing_ok=True)
            count += 1
        return count

    def take_back_queue(self, pools: list[str] | None = None) -> list[tuple[int, int]]:
        """Atomically take every unclaimed bundle (of `pools` only, "" naming the shared
        queue) away from agents; return their (job, attempt)s."""
        home = self.claimed / layout.HOME_CLAIM
        make_private_dirs(str(home))
        taken: list[tuple[int, int]] = []
        for path in sorted(self.queue.glob(BUNDLE_GLOB)):
            if pools is not None and layout.pool_of(path.name) not in pools:
                continue
            target = home / path.name
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # an agent claimed it first
            taken.extend(bundle_keys(target))
            target.unlink()
        return taken

    def bundled_jobs(self) -> set[tuple[int, int]]:
        """(job, attempt) of every job in a queued or claimed bundle."""
        keys: set[tuple[int, int]] = set()
        for path in itertools.chain(self.queue.glob(BUNDLE_GLOB),
                                    self.claimed.glob(f"*/{BUNDLE_GLOB}")):
            keys.update(bundle_keys(path))
        return keys

    def claimed_jobs(self, agent_id: str) -> list[tuple[int, int]]:
        keys: list[tuple[int, int]] = []
        for path in (self.claimed / agent_id).glob(BUNDLE_GLOB):
            keys.extend(bundle_keys(path))
        return keys

    def drop_claimed(self, agent_id: str) -> None:
        """Forget a dead agent's claimed bundles (after their jobs were settled)."""
        folder = self.claimed / agent_id
        for path in folder.glob("*"):
            path.unlink(missing_ok=True)
        if folder.is_dir():
            folder.rmdir()

    # -- control ----------------------------------------------------------------------------
    def request_kill(self, job_id: int) -> None:
        write_private(Path(self.layout.kill_file(job_id)), b"")

    def clear_kill(self, job_id: int) -> None:
        Path(self.layout.kill_file(job_id)).unlink(missing_ok=True)

    def pending_kills(self) -> set[int]:
        return {int(p.name) for p in self.kill_dir.glob("[0-9]*")}

    def request_stop(self, agent_id: str, mode: str) -> None:
        write_private(Path(self.layout.stop_file(agent_id)), mode.encode())

    def clear_stop(self, agent_id: str) -> None:
        Path(self.layout.stop_file(agent_id)).unlink(missing_ok=True)

    # -- events and heartbeats --------------------------------------------------------------
    def event_logs(self) -> list[str]:
        """Agent ids that have an event log."""
        return sorted(p.stem for p in self.events.glob(EVENT_LOG_GLOB))

    def read_events(self, agent_id: str, offset: int, limit: int = 8 << 20) -> tuple[bytes, int]:
        """New complete lines of an agent's event log from `offset`; returns (data, new offset)."""
        path = self.event_log(agent_id)
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read(limit)
        except FileNotFoundError:
            return b"", offset
        end = data.rfind(b"\n") + 1
        return data[:end], offset + end

    def heartbeats(self) -> Iterator[dict[str, Any]]:
        """Every readable heartbeat file."""
        for path in self.agents.glob(HEARTBEAT_GLOB):
            try:
                yield json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # being replaced right now; the next cycle reads it

    # -- housekeeping of ended agents (megarun.engine.housekeeping) ----------------------
    @property
    def logs_dir(self) -> Path:
        """Agents' own logs (stdout and stderr of the agent process)."""
        return Path(self.layout.logs)

    def agents_with_files(self) -> set[str]:
        """Agent ids that have an event log, a heartbeat or an agent log here."""
        found = {p.stem for p in self.events.glob(EVENT_LOG_GLOB)}
        found.update(p.stem for p in self.agents.glob(HEARTBEAT_GLOB))
        found.update(layout.agent_of_agent_log(p.name)
                     for p in self.logs_dir.glob(layout.AGENT_LOG_GLOB))
        return found

    def event_log_read(self, agent_id: str, offset: int) -> bool:
        """Whether the agent's event log has nothing after `offset` (a torn last line aside)."""
        return tidy.fully_read(str(self.event_log(agent_id)), offset)

    def remove_event_log(self, agent_id: str) -> None:
        self.event_log(agent_id).unlink(missing_ok=True)

    def remove_agent_files(self, agent_id: str) -> None:
        """Remove an ended agent's heartbeat; fold its agent log into logs/ended-agents.log."""
        self.heartbeat(agent_id).unlink(missing_ok=True)
        tidy.fold_agent_log(str(self.logs_dir), agent_id)

    def job_dir(self, job_id: int) -> str:
        """Where a plain job runs: jobs/<thousands>/<id> (a string: it goes into job specs)."""
        return layout.job_dir(str(self.workdir), job_id)


def bundle_keys_in(text: str) -> list[tuple[int, int]]:
    """(job, attempt) of every spec in a bundle's text."""
    keys: list[tuple[int, int]] = []
    for line in text.splitlines():
        if line.strip():
            spec = json.loads(line)
            keys.append((int(spec["id"]), int(spec.get("attempt", 0))))
    return keys


def bundle_keys(path: Path) -> list[tuple[int, int]]:
    """(job, attempt) of every spec in a bundle file; none when the file is gone."""
    try:
        return bundle_keys_in(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []  # claimed or taken back meanwhile: those jobs are somebody else's now

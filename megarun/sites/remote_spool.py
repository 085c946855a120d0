"""The spool of an SSH site, seen from the home host: a local mirror kept in step by exchanges.

Dispatch, ingest and the liveness code work on spool files. For an SSH site those files live
in a local mirror (`.megarun/sites/<name>/spool/`): bundles are written to `outbox/`, kill and
stop requests to `control/`, and each `exchange()` carries all of it to the site in ONE SSH
round trip (`python megarun-agent-<hash>.pyz exchange`, megarun/agent/exchange.py). The answer
brings back every agent's new event lines, which are appended to the local logs at exactly the
remote offsets, the heartbeats (their times moved onto this host's clock, with the site's own
check of the agent's process), and the remote queue and claimed listings, which the mirror
copies of the sent bundles are made to match.

Only one exchange per site runs at a time (a file lock), so the local logs and the remote
offsets never drift apart; the database offsets are stored by ingest in the same transaction
as the events they cover, exactly as for a local site.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from megarun.agent import layout
from megarun.agent.private import make_private_dirs
from megarun.core.files import private_dirs, write_private
from megarun.errors import EnvironmentProblem
from megarun.sites.connect import checked_agent_argv, install_agent, site_transport
from megarun.sites.identity import SiteIdentity
from megarun.sites.local_spool import LocalSpool, bundle_keys, bundle_keys_in
from megarun.transport.base import CommandResult, Transport

log = logging.getLogger(__name__)

#: Bytes of event lines one exchange brings back at most (the rest comes next time).
READ_LIMIT = 16 << 20
EXCHANGE_TIMEOUT = 120.0


@dataclass
class ExchangeResult:
    """What one exchange did."""

    sent_bundles: int = 0
    event_bytes: int = 0
    started_agent: str | None = None
    taken_back: list[tuple[int, int]] = field(default_factory=list)
    log_tails: dict[str, str] = field(default_factory=dict)  # agent id -> its log's last line


@dataclass(frozen=True)
class AgentLaunch:
    """Start an agent on the site unless one lives (judged there, with `dead_after`)."""

    args: list[str]
    dead_after: float


class RemoteSpool(LocalSpool):
    """Mirror of an SSH site's spool; `exchange()` makes the two agree (module docstring)."""

    def __init__(self, site: SiteIdentity, mirror_dir: Path) -> None:
        super().__init__(mirror_dir)
        self.site = site
        self.round_trips = 0
        self._transport: Transport | None = None

    delivers_later = True

    def deliver(self) -> None:
        """Carry kill and stop requests to the site now (one exchange)."""
        self.exchange()

    # -- layout -----------------------------------------------------------------------------
    @property
    def queue(self) -> Path:
        """Bundles written here are not yet on the site (the next exchange sends them)."""
        return self.root / layout.OUTBOX

    @property
    def sent(self) -> Path:
        """Copies of bundles that wait in the site's queue."""
        return self.root / layout.SENT

    @property
    def drops(self) -> Path:
        """Agents whose claimed folders the site should forget."""
        return self.root / layout.DROP

    @property
    def forgets(self) -> Path:
        """Ended agents whose files the site should remove (each holds the bytes of its event
        log the home host has); megarun.engine.housekeeping writes them."""
        return self.root / layout.FORGET

    def ensure(self) -> None:
        """The mirror's folders (the site's own are checked there, by the exchange)."""
        private_dirs(self.workdir, self.root, self.queue, self.sent, self.claimed,
                     self.kill_dir.parent, self.kill_dir, self.stop_dir, self.agents,
                     self.events, self.drops, self.forgets)

    def request_forget(self, agents: dict[str, int]) -> None:
        """Make the forget markers exactly `agents` (agent id -> event log bytes held here)."""
        private_dirs(self.forgets)
        for path in self.forgets.glob("[!.]*"):
            if path.name not in agents:
                path.unlink(missing_ok=True)
        for agent, size in agents.items():
            path = self.forgets / agent
            if not path.is_file() or path.read_bytes() != str(size).encode():
                write_private(path, str(size).encode())

    def _forget_requests(self) -> dict[str, int]:
        wanted = {}
        for path in self.forgets.glob("[!.]*"):
            try:
                wanted[path.name] = int(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # being rewritten: the next exchange carries it
        return wanted

    def job_dir(self, job_id: int) -> str:
        return layout.job_dir(self.site.workdir, job_id)

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = site_transport(self.site)
        return self._transport

    # -- what the mirror knows --------------------------------------------------------------
    def bundled_jobs(self) -> set[tuple[int, int]]:
        keys = super().bundled_jobs()
        for path in self.sent.glob(layout.BUNDLE_GLOB):
            keys.update(bundle_keys(path))
        return keys

    def drop_claimed(self, agent_id: str) -> None:
        super().drop_claimed(agent_id)
        make_private_dirs(str(self.drops))
        write_private(self.drops / agent_id, b"")

    def take_back_queue(self, pools: list[str] | None = None) -> list[tuple[int, int]]:
        """Unsent bundles, and (one exchange) the site's unclaimed ones (of `pools` only)."""
        taken = super().take_back_queue(pools)
        result = self.exchange(take_back=True if pools is None else list(pools))
        return taken + result.taken_back

    # -- the exchange -----------------------------------------------------------------------
    def exchange(self, start_agent: AgentLaunch | None = None,
                 take_back: bool | list[str] = False,
                 log_tail: list[str] | None = None) -> ExchangeResult:
        """One round trip: send bundles and controls, bring back events and heartbeats
        (and the last line of the logs of the agents named in `log_tail`)."""
        self.ensure()
        with FileLock(str(self.root / "exchange.lock"), mode=0o600):
            outbox = sorted(self.queue.glob(layout.BUNDLE_GLOB))
            drops = sorted(p.name for p in self.drops.iterdir())
            request = self._request(outbox, drops, start_agent, take_back)
            if log_tail:
                request["log_tail"] = log_tail
            answer = self._call(request)
            return self._apply(answer, outbox, drops)

    def _request(self, outbox: list[Path], drops: list[str], start_agent: AgentLaunch | None,
                 take_back: bool | list[str]) -> dict[str, Any]:
        offsets = {path.stem: _complete_size(path) for path in self.events.glob(layout.EVENT_LOG_GLOB)}
        stop = {p.name: p.read_text(encoding="utf-8").strip()
                for p in self.stop_dir.glob("[!.]*")}
        request: dict[str, Any] = {
            "workdir": self.site.workdir,
            "publish": [{"name": p.name, "data": p.read_text(encoding="utf-8")} for p in outbox],
            "kill": sorted(self.pending_kills()), "stop": stop, "offsets": offsets,
            "read_limit": READ_LIMIT, "take_back": take_back, "drop_claimed": drops,
            "forget": self._forget_requests(),
        }
        if start_agent is not None:
            request["start_agent"] = {"args": start_agent.args,
                                      "dead_after": start_agent.dead_after}
        return request

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(request, separators=(",", ":")).encode("utf-8")
        result = self._run_exchange(data)
        if result.code != 0 and not result.stdout.strip() and _agent_missing(result):
            install_agent(self.site, self.transport)  # first use, or a new megarun version
            result = self._run_exchange(data)
        return _answer(self.site, result)

    def _run_exchange(self, data: bytes) -> CommandResult:
        self.round_trips += 1
        return self.transport.run(checked_agent_argv(self.site, "exchange"),
                                 stdin=data, timeout=EXCHANGE_TIMEOUT)

    def _apply(self, answer: dict[str, Any], outbox: list[Path],
               drops: list[str]) -> ExchangeResult:
        now = time.time()
        skew = float(answer.get("time", now)) - now  # the site's clock minus this host's
        result = ExchangeResult(sent_bundles=len(outbox),
                                started_agent=answer.get("started_agent"),
                                log_tails={str(k): str(v) for k, v in
                                           (answer.get("log_tails") or {}).items()})
        for path in outbox:
            os.replace(path, self.sent / path.name)
        for agent, chunk in (answer.get("events") or {}).items():
            result.event_bytes += self._append_events(str(agent), int(chunk["offset"]),
                                                      str(chunk["data"]))
        for beat in answer.get("heartbeats") or []:
            self._write_heartbeat(beat, skew)
        taken = {str(b["name"]): str(b["data"]) for b in answer.get("taken_back") or []}
        for name, text in taken.items():
            result.taken_back.extend(bundle_keys_in(text))
            (self.sent / name).unlink(missing_ok=True)
        self._match_listings(set(answer.get("queue") or []), answer.get("claimed") or {})
        for name in drops:
            (self.drops / name).unlink(missing_ok=True)
        for agent in answer.get("forgotten") or []:
            self._forgotten(Path(str(agent)).name)
        return result

    def _forgotten(self, agent: str) -> None:
        """The site removed an ended agent's files: the mirror copies go too, marker last."""
        self.remove_event_log(agent)
        self.remove_agent_files(agent)
        (self.forgets / agent).unlink(missing_ok=True)

    def _append_events(self, agent: str, offset: int, data: str) -> int:
        path = self.event_log(Path(agent).name)
        size = _complete_size(path, trim=True)
        if offset != size:
            log.warning("site %s agent %s: events at offset %d but the mirror has %d bytes; "
                        "skipped until the next exchange", self.site.name, agent, offset, size)
            return 0
        raw = data.encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, raw)
        finally:
            os.close(fd)
        return len(raw)

    def _write_heartbeat(self, beat: dict[str, Any], skew: float) -> None:
        agent = Path(str(beat.get("agent", ""))).name
        if not agent:
            return
        mirrored = dict(beat)
        mirrored["time"] = float(beat.get("time", 0)) - skew  # on this host's clock
        mirrored["mirrored"] = True
        write_private(self.heartbeat(agent), json.dumps(mirrored).encode())

    def _match_listings(self, queue: set[str], claimed: dict[str, list[str]]) -> None:
        """Move mirror copies where the site has the bundles; forget the ones it finished."""
        owner = {name: agent for agent, names in claimed.items() for name in names}
        for path in self.sent.glob(layout.BUNDLE_GLOB):
            if path.name in queue:
                continue
            agent = owner.get(path.name)
            if agent is None:
                path.unlink(missing_ok=True)
                continue
            folder = self.claimed / Path(agent).name
            make_private_dirs(str(folder))
            os.replace(path, folder / path.name)
        for folder in self.claimed.iterdir():
            if not folder.is_dir() or folder.name == layout.HOME_CLAIM:
                continue
            keep = set(claimed.get(folder.name, []))
            for path in folder.glob(layout.BUNDLE_GLOB):
                if path.name not in keep:
                    path.unlink(missing_ok=True)


def _agent_missing(result: CommandResult) -> bool:
    """The interpreter ran but the agent zipapp is not on the site (yet)."""
    text = result.stderr_text
    return "can't open file" in text or "No such file or directory" in text


def _answer(site: SiteIdentity, result: CommandResult) -> dict[str, Any]:
    where = f"site {site.name!r} ({site.host})"
    if result.code == 127:
        raise EnvironmentProblem(f"{where}: {shlex.quote(site.spec.interpreter)} was not found",
                                 "set the interpreter with: megarun site add ... --python PATH")
    try:
        answer: dict[str, Any] = json.loads(result.stdout_text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        lines = result.stderr_text.strip().splitlines()
        reason = lines[-1] if lines else f"exit code {result.code}"
        raise EnvironmentProblem(f"{where}: the agent exchange failed: {reason}",
                                 f"check the site: megarun site check {site.name}") from None
    if "error" in answer:
        raise EnvironmentProblem(f"{where}: the agent exchange failed: {answer['error']}",
                                 f"check the site: megarun site check {site.name}")
    return answer


def _complete_size(path: Path, trim: bool = False) -> int:
    """Bytes of `path` up to its last complete line; with `trim`, cut a torn last line off."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb") as handle:
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return size
        handle.seek(0)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    if trim:
        with open(path, "r+b") as handle:
            handle.truncate(end)
    return end

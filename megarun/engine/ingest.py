"""Ingest agent events into the database, idempotently and in one transaction per cycle.

Each agent's log is read from the offset stored in its Agent row; events whose seq is not
beyond the stored last seq are duplicates and change nothing; the new offset and seq are
written in the same transaction as the job changes they caused.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from peewee import SqliteDatabase

from megarun.campaign.app_stale import settle_in_flight
from megarun.core.lifecycle import Chain, finish, give_back
from megarun.core.states import JobState, JobStatus
from megarun.core.steps import step_note
from megarun.db.connection import write_transaction
from megarun.db.jobstore import JobRow, load_rows, save_rows
from megarun.db.models import Agent
from megarun.db.transitions import apply_chain, ended_ids, settle_children
from megarun.errors import IllegalTransition
from megarun.sites.local_spool import LocalSpool

log = logging.getLogger(__name__)

#: Parse at most this many bytes of one agent's log per cycle (keeps each transaction short).
READ_LIMIT = 16 << 20


@dataclass
class IngestResult:
    """What one ingestion cycle did."""

    events: int = 0
    duplicates: int = 0
    ignored: int = 0
    changed_jobs: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    agents_exited: list[str] = field(default_factory=list)


@dataclass
class _AgentLog:
    agent_id: str
    offset: int
    last_seq: int
    events: list[dict[str, Any]]


def ingest_site_events(db: SqliteDatabase, site_id: int, spool: LocalSpool) -> IngestResult:
    """Read every agent log of a site from its stored offset and apply the new events."""
    result = IngestResult()
    with write_transaction(db):
        read = (_read_log(db, site_id, spool, agent_id) for agent_id in spool.event_logs())
        logs = [entry for entry in read if entry is not None]
        job_ids = {ev["job"] for entry in logs for ev in entry.events if "job" in ev}
        rows = load_rows(db, job_ids)
        for entry in logs:
            _apply_log(entry, rows, result)
            _store_offset(db, site_id, entry)
        settle_children(db, rows, ended_ids(rows.values()))
        settle_in_flight(db, rows)
        result.changed_jobs = save_rows(db, rows.values())
    return result


def _read_log(db: SqliteDatabase, site_id: int, spool: LocalSpool,
              agent_id: str) -> _AgentLog | None:
    found = db.execute_sql("SELECT events_offset, last_seq FROM agent WHERE id = ?",
                           (agent_id,)).fetchone()
    offset, last_seq = found if found else (0, 0)
    data, new_offset = spool.read_events(agent_id, offset, READ_LIMIT)
    if not data:
        return None
    events = []
    for line in data.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            log.warning("agent %s: unreadable event line skipped", agent_id)
    return _AgentLog(agent_id, new_offset, last_seq, events)


def _apply_log(entry: _AgentLog, rows: dict[int, JobRow], result: IngestResult) -> None:
    for event in entry.events:
        seq = int(event.get("seq", 0))
        if seq <= entry.last_seq:
            result.duplicates += 1
            continue
        entry.last_seq = seq
        result.events += 1
        if event.get("ev") == "agent_exited":
            result.agents_exited.append(entry.agent_id)
        if "job" not in event:
            continue
        row = rows.get(int(event["job"]))
        if row is None or int(event.get("attempt", -1)) != row.snapshot.attempt:
            result.ignored += 1
            continue
        try:
            _apply_event(row, event, entry.agent_id, result)
        except IllegalTransition as exc:
            result.ignored += 1
            log.info("event %s:%s ignored: %s", entry.agent_id, seq, exc)


def _apply_event(row: JobRow, event: dict[str, Any], agent_id: str, result: IngestResult) -> None:
    kind = event.get("ev")
    state = row.snapshot.state
    if kind == "claimed":
        if state is JobState.QUEUED:
            apply_chain(row, Chain(row.snapshot).to(JobState.LAUNCHED, data={"agent": agent_id}))
        row.agent = agent_id
    elif kind == "started":
        chain = Chain(row.snapshot)
        if state is JobState.QUEUED:
            chain.to(JobState.LAUNCHED)
        if chain.job.state is JobState.LAUNCHED:
            chain.to(JobState.RUNNING, data={"pid": event.get("pid"), "host": event.get("host")})
        apply_chain(row, chain)
        row.agent = agent_id
        row.started = float(event.get("t", time.time()))
    elif kind == "finished":
        reason = str(event.get("reason", "error"))
        rc = event.get("rc")
        message = str(event.get("message") or "")
        apply_chain(row, finish(row.snapshot, reason, rc, message, _judged(event),
                                _step_index(event)))
        row.exit_code = rc
        row.message = message or _describe(reason, rc)
        row.ended = float(event.get("t", time.time()))
        result.finished[row.snapshot.status.value] = result.finished.get(
            row.snapshot.status.value, 0) + 1
    elif kind == "step":
        if state in (JobState.RUNNING, JobState.KILLREQ):
            name = str(event.get("name") or "")
            row.record(row.snapshot, [step_note(row.snapshot, name,
                                                float(event.get("t", time.time())))])
    elif kind == "returned":
        if state in (JobState.QUEUED, JobState.LAUNCHED, JobState.RUNNING, JobState.KILLREQ):
            message = str(event.get("message", ""))
            apply_chain(row, give_back(row.snapshot, message))
            row.agent = None
            if row.snapshot.state is JobState.READY and state is JobState.RUNNING:
                row.message = message


def _step_index(event: dict[str, Any]) -> int | None:
    """The index of the step a job ended in, as its agent reports it (older agents: None)."""
    step = event.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def _judged(event: dict[str, Any]) -> JobStatus | None:
    """The status the agent's rules gave, if any (an unknown name counts as FAIL)."""
    name = event.get("status")
    if not name:
        return None
    try:
        return JobStatus(str(name))
    except ValueError:
        return JobStatus.FAIL


def _describe(reason: str, rc: int | None) -> str:
    if reason == "exit":
        return "" if rc == 0 else f"exit code {rc}"
    if reason == "timeout":
        return "runtime limit reached"
    return reason


def _store_offset(db: SqliteDatabase, site_id: int, entry: _AgentLog) -> None:
    now = time.time()
    updated = db.execute_sql(
        "UPDATE agent SET events_offset = ?, last_seq = ?, last_seen = ? WHERE id = ?",
        (entry.offset, entry.last_seq, now, entry.agent_id)).rowcount
    if not updated:
        Agent.insert(id=entry.agent_id, site=site_id, started=now, last_seen=now,
                     events_offset=entry.offset, last_seq=entry.last_seq).execute()

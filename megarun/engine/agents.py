"""Agent liveness: heartbeats, dead-agent detection, and settling the jobs a dead agent held.

No attempt of a job may overlap another. A dead agent's jobs are settled (DEAD and retried, or
READY again) only once nothing of them runs: its heartbeat says `jobs_gone` (written by
megarun/agent/orphans.py, here for an agent of this host, by the exchange for an agent of an
SSH site), or it exited on purpose, or its batch job ended (the scheduler ended its processes).
Until then its jobs keep their state, and the next cycle looks again.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from peewee import SqliteDatabase

from megarun.agent.exchange import process_is_agent
from megarun.agent.orphans import settle_dead_agent
from megarun.core.lifecycle import Chain, mark_dead
from megarun.core.states import ACTIVE_STATES, FINAL_STATES, JobState, sql_list
from megarun.db.connection import write_transaction
from megarun.db.jobstore import JobRow, load_rows, load_rows_where, save_rows
from megarun.db.models import Agent
from megarun.db.transitions import apply_chain, ended_ids, settle_children
from megarun.engine.ingest import ingest_site_events
from megarun.sites.local_spool import LocalSpool

HOSTNAME = socket.gethostname()
log = logging.getLogger(__name__)

#: States of the jobs an agent holds (claimed from the queue, or running).
HELD_BY_AGENT = ACTIVE_STATES - {JobState.QUEUED}


@dataclass(frozen=True)
class AgentStatus:
    """An agent as its heartbeat file shows it."""

    agent_id: str
    host: str
    pid: int | None
    beat: float
    state: str
    batch_job: int | None = None
    process: bool | None = None  # an SSH site's own check of the agent's process
    mirrored: bool = False  # read from an SSH site by the last exchange
    jobs_gone: bool | None = None  # a dead agent's settler found nothing of its jobs running

    def alive(self, dead_after: float, now: float | None = None) -> bool:
        """Whether the agent still runs.

        Where the agent's process can be checked, it decides: a slow agent whose heartbeat is
        late but whose process lives is alive, and one whose process is gone is dead at once.
        That check is made here for agents of this host, and by the site itself (during the
        last exchange) for agents of an SSH site. Otherwise a heartbeat older than
        `dead_after` means dead.
        """
        if self.state != "running":
            return False
        if self.process is not None:
            return self.process
        if self.host == HOSTNAME and self.pid and not self.mirrored:
            return process_is_agent(self.pid, self.agent_id)
        return (now or time.time()) - self.beat <= dead_after


def read_heartbeats(spool: LocalSpool) -> dict[str, AgentStatus]:
    statuses = {}
    for beat in spool.heartbeats():
        try:
            process = beat.get("process")
            status = AgentStatus(str(beat["agent"]), str(beat.get("host", "")),
                                 beat.get("pid"), float(beat.get("time", 0)),
                                 str(beat.get("state", "running")), beat.get("batch_job"),
                                 process if isinstance(process, bool) else None,
                                 bool(beat.get("mirrored")),
                                 beat.get("jobs_gone") if isinstance(beat.get("jobs_gone"),
                                                                     bool) else None)
        except (KeyError, TypeError, ValueError):
            continue  # a heartbeat written by something else: not an agent of ours
        statuses[status.agent_id] = status
    return statuses


def live_agents(spool: LocalSpool, dead_after: float) -> list[AgentStatus]:
    now = time.time()
    return [s for s in read_heartbeats(spool).values() if s.alive(dead_after, now)]


def settle_gone_agents(db: SqliteDatabase, site_id: int, spool: LocalSpool,
                       dead_after: float, ingest: Callable[[], object] | None = None) -> list[str]:
    """Settle the jobs of every agent that exited or died; return their ids.

    Call after ingesting the site's events, so that everything the agent reported counts first.
    A dead agent of this host is settled on the spot first (its jobs' processes killed, the ends
    it could not report written to its log, then taken in with `ingest`). Started jobs become
    DEAD (retried while attempts remain); claimed but unstarted ones go back to READY; a kill
    that was pending ends KILLED. An agent whose jobs may still run is left for a later call.
    """
    beats = read_heartbeats(spool)
    now = time.time()
    ended = _ended_batch_jobs(db, {s.batch_job for s in beats.values() if s.batch_job})
    gone = [aid for aid, status in beats.items()
            if not status.alive(dead_after, now) or status.batch_job in ended]
    if _kill_leftovers_here(db, spool, [beats[aid] for aid in gone]):
        if ingest is not None:
            ingest()
        else:
            ingest_site_events(db, site_id, spool)
        beats = read_heartbeats(spool)
    settled = []
    for agent_id in gone:
        status = beats[agent_id]
        if not (status.state == "exited" or status.jobs_gone or status.batch_job in ended):
            log.info("agent %s on %s died and its jobs may still run there: they keep "
                        "their state until that is known", agent_id, status.host)
            continue
        with write_transaction(db):
            if _settle_agent(db, site_id, spool, agent_id, status):
                settled.append(agent_id)
    return settled


def _kill_leftovers_here(db: SqliteDatabase, spool: LocalSpool,
                         gone: list[AgentStatus]) -> bool:
    """Run the dead-agent settler for the gone agents of this host; True if one ran."""
    ran = False
    for status in gone:
        if (status.host != HOSTNAME or status.mirrored or status.state == "exited"
                or status.jobs_gone or not _unsettled(db, status.agent_id)):
            continue
        if status.pid and process_is_agent(status.pid, status.agent_id):
            continue  # a pilot whose batch job ended but whose process lives: not ours to kill
        settle_dead_agent(str(spool.workdir), status.agent_id)
        ran = True
    return ran


def _unsettled(db: SqliteDatabase, agent_id: str) -> bool:
    row = db.execute_sql("SELECT state FROM agent WHERE id = ?", (agent_id,)).fetchone()
    return row is None or row[0] not in ("dead", "exited")


def _ended_batch_jobs(db: SqliteDatabase, batch_ids: set[int]) -> set[int]:
    """Of the batch jobs pilots report, those the scheduler has ended: their agents are gone
    whatever their last heartbeat says."""
    if not batch_ids:
        return set()
    ids = sorted(int(i) for i in batch_ids)
    rows = db.execute_sql(
        f"SELECT id FROM batch_job WHERE id IN ({','.join('?' * len(ids))}) "  # noqa: S608
        "AND state IN ('finished', 'cancelled', 'submit_failed')", ids).fetchall()
    return {batch_id for (batch_id,) in rows}


def _settle_agent(db: SqliteDatabase, site_id: int, spool: LocalSpool, agent_id: str,
                  status: AgentStatus) -> bool:
    row = Agent.get_or_none(Agent.id == agent_id)
    if row is not None and row.state in ("dead", "exited"):
        return False
    held = load_rows_where(db, f"agent = ? AND state IN ({sql_list(HELD_BY_AGENT)})",
                           (agent_id,))
    rows = {r.id: r for r in held}
    claimed = dict(spool.claimed_jobs(agent_id))
    rows.update({k: v for k, v in load_rows(db, claimed).items() if k not in rows})
    why = "agent exited" if status.state == "exited" else "agent died (heartbeat lost)"
    if status.state != "exited" and status.batch_job is not None and status.alive(1e18):
        why = f"agent's batch job {status.batch_job} ended"
    for job in rows.values():
        _settle_job(job.snapshot.state, job, claimed, why)
    settle_children(db, rows, ended_ids(rows.values()))
    save_rows(db, rows.values())
    spool.drop_claimed(agent_id)
    final_state = "exited" if status.state == "exited" else "dead"
    now = time.time()
    if row is None:
        Agent.insert(id=agent_id, site=site_id, host=status.host, pid=status.pid,
                     started=now, last_seen=status.beat, state=final_state).execute()
    else:
        Agent.update(state=final_state, last_seen=status.beat).where(Agent.id == agent_id).execute()
    return True


def _settle_job(state: JobState, job: JobRow, claimed: dict[int, int], why: str) -> None:
    if state is JobState.RUNNING:
        apply_chain(job, mark_dead(job.snapshot, why))
        job.message = why
    elif state is JobState.KILLREQ:
        apply_chain(job, Chain(job.snapshot).to(JobState.KILLED, message=why))
        job.message = "killed"
    elif state is JobState.LAUNCHED or (
        state is JobState.QUEUED and claimed.get(job.id) == job.snapshot.attempt
    ):
        apply_chain(job, Chain(job.snapshot).to(JobState.READY, message=f"{why} before start"))
        job.agent = None


def clear_finished_kills(db: SqliteDatabase, spool: LocalSpool) -> None:
    """Forget kill requests of jobs that ended (or are gone): they must not hit a later attempt."""
    pending = spool.pending_kills()
    if not pending:
        return
    rows = load_rows(db, pending)
    for job_id in pending:
        row = rows.get(job_id)
        if row is None or row.snapshot.state in FINAL_STATES:
            spool.clear_kill(job_id)


def requeue_orphans(db: SqliteDatabase, site_id: int, spool: LocalSpool) -> int:
    """QUEUED jobs that are in no bundle (a dispatcher crashed mid-way) go back to READY.

    Only safe while holding the site's launcher lock, after stale temporaries were removed.
    """
    with write_transaction(db):
        queued = load_rows_where(db, f"site_id = ? AND state = '{JobState.QUEUED.value}'", (site_id,))
        if not queued:
            return 0
        bundled = spool.bundled_jobs()
        count = 0
        for job in queued:
            if (job.id, job.snapshot.attempt) not in bundled:
                apply_chain(job, Chain(job.snapshot).to(JobState.READY,
                                                        message="lost before an agent took it"))
                count += 1
        save_rows(db, queued)
    return count

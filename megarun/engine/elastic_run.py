"""The elastic step of a batch site's cycle: the policy's decision, made and applied.

`sync` and `launch` run it on every batch site whose [elastic] settings turn it on. It holds
the site's submission lock (the one `queue submit` takes) from the moment it reads the open
pilots until its submissions are recorded, so two syncs, a sync and a launch, or a hand-made
`queue submit` at the same time never count the same free place twice; a step that finds the
lock taken leaves the site to the holder and says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from peewee import SqliteDatabase

from megarun.engine.backlog import (
    BacklogGroup,
    app_id_of,
    last_elastic_submit,
    open_pilots,
    site_backlogs,
    waiting_jobs,
)
from megarun.engine.batch import SubmitRequest, cancel, submit_held
from megarun.engine.elastic import (
    Backlog,
    Decision,
    ElasticOutcome,
    QueueLimits,
    decide,
    job_fit,
    node_demand,
    per_node,
    wanted_nodes,
)
from megarun.engine.scope import SiteScope
from megarun.engine.submissions import settle_interrupted, submit_lock
from megarun.errors import MegarunError
from megarun.schedulers.base import BatchState
from megarun.sites.registry import SiteInfo


def queue_limits(site: SiteInfo) -> QueueLimits:
    """The limits of the queue elastic pilots go to (elastic.queue, else the site's default
    queue), with the elastic account; a site without queues limits nothing."""
    spec, settings = site.spec, site.spec.elastic
    name = settings.queue or spec.default_queue
    account = settings.account or spec.account
    queue = spec.queues.get(name)
    if queue is None:
        return QueueLimits(name, account)
    # Node-count walltime bins, the per-user job limit (queued or running) and the shortest
    # walltime, where the preset gives them (config.queues).
    return QueueLimits(name, account, queue.min_nodes, queue.max_nodes, float(queue.max_walltime),
                       0, queue.max_queued, float(queue.min_walltime), queue.max_walltime_for)


def plan(scope: SiteScope, ready_limit: int | None = None, now: float | None = None) -> Decision:
    """The elastic decision for the site as things are (`ready_limit`: how many READY jobs the
    launch gates let through; None: all)."""
    site = scope.site
    settings, limits = site.spec.elastic, queue_limits(site)
    if not settings.enabled:
        return decide(settings, limits, Backlog(), [], time.time(), None)
    backlog = waiting_jobs(scope.db, scope.sid, job_fit(settings, limits), ready_limit)
    return decide(settings, limits, backlog, open_pilots(scope.db, scope.sid),
                  time.time() if now is None else now, last_elastic_submit(scope.db, scope.sid),
                  site.spec.node.cpus)


def run_elastic(scope: SiteScope, ready_limit: int | None = None,
                dry_run: bool = False) -> ElasticOutcome:
    """Decide, and unless `dry_run` submit and cancel what the decision says, holding the
    site's submission lock (module docstring)."""
    if dry_run or not scope.site.spec.elastic.enabled:
        return ElasticOutcome(plan(scope, ready_limit), dry_run=dry_run)
    with submit_lock(scope.area, scope.name, wait=False) as held:
        if not held:
            return ElasticOutcome(Decision(True, held="another megarun is submitting batch "
                                           "jobs to the site; it decides this time"))
        settle_interrupted(scope)
        decision = plan(scope, ready_limit)
        return _apply(scope, decision)


def _apply(scope: SiteScope, decision: Decision) -> ElasticOutcome:
    outcome = ElasticOutcome(decision)
    settings = scope.site.spec.elastic
    for request in decision.submit:
        asked = SubmitRequest(scope.name, request.nodes, request.walltime, request.queue or None,
                              request.account or None, "pilot", idle_exit=settings.idle_exit,
                              elastic=True)
        try:
            rows = submit_held(scope, asked)
        except MegarunError as exc:  # refused before the scheduler was asked: say why, stop
            outcome.failed[0] = str(exc)
            break
        for row in rows:
            if row["state"] == BatchState.SUBMIT_FAILED.value:
                outcome.failed[row["id"]] = row["message"] or ""
            else:
                outcome.submitted.append(row["id"])
        if outcome.failed:
            break  # the next cycle tries again; a refusal now is likely a refusal then
    for cancellation in decision.cancel:
        try:
            cancel(scope, cancellation.batch_id,
                   f"cancelled by the elastic policy: {cancellation.reason}")
        except MegarunError as exc:
            outcome.failed[cancellation.batch_id] = str(exc)
            continue
        outcome.cancelled.append(cancellation.batch_id)
    return outcome


# -- `queue backlog` -------------------------------------------------------------------------
@dataclass
class BacklogReport:
    """One site's backlog for `queue backlog`: job counts (in all and per (app, jobgroup)),
    its open pilots, and the nodes the elastic policy would want for it."""

    site: str
    elastic: bool
    total: BacklogGroup
    groups: dict[tuple[str, str], BacklogGroup] = field(default_factory=dict)
    pilots_queued: int = 0
    pilots_running: int = 0
    pilot_nodes: int = 0
    pilot_slots: int = 0  # pilot nodes x the site's node.cpus (0: cpus not known)
    wanted_nodes: int = 0


def backlog_reports(db: SqliteDatabase, scopes: list[SiteScope],
                    app: str | None = None) -> list[BacklogReport]:
    """The backlog of each site of `scopes` (of one app's jobs with `app`), in SQL aggregates.
    Without elastic settings, the wanted nodes are what the backlog asks for, uncapped."""
    found = site_backlogs(db, scopes[0].sid if len(scopes) == 1 else None,
                          None if app is None else app_id_of(db, app))
    reports = []
    for scope in scopes:
        site = found.get(scope.sid)
        spec = scope.site.spec
        total = site.total if site is not None else BacklogGroup()
        pilots = open_pilots(db, scope.sid)
        settings = spec.elastic
        waiting = Backlog(total.ready + total.queued, total.single_node, total.multi_node_nodes)
        wanted = (wanted_nodes(settings, queue_limits(scope.site), waiting, spec.node.cpus)
                  if settings.enabled else
                  node_demand(waiting, per_node(settings, spec.node.cpus)))
        nodes = sum(p.nodes for p in pilots)
        reports.append(BacklogReport(
            scope.name, settings.enabled, total, site.groups if site is not None else {},
            sum(1 for p in pilots if p.state is not BatchState.RUNNING),
            sum(1 for p in pilots if p.state is BatchState.RUNNING), nodes,
            nodes * spec.node.cpus, wanted))
    return reports

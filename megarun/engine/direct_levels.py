"""Direct mode for suites with waiton: each dependency level is submitted as it becomes READY.

`queue submit --mode direct` gives each READY job its own batch job; a job waiting for
parents is not READY then, and would need another `queue submit` per dependency level. So the
launcher's and sync's cycle does it: a READY job whose parent ran in a direct batch job of the
same site gets a direct batch job of its own, with the queue, account and directives of that
parent's batch job (the newest, when parents ran in several).

Never twice: a job leaves READY (dispatched into its batch job's pool, in one transaction)
before the scheduler is asked; a job that already had a batch job since its parents' is left
alone, so a batch job that was refused, cancelled or ended before starting its job is not
submitted again by itself (`queue submit --mode direct` does it by hand); and submissions to
a site take turns, the next one settling what a kill cut short (megarun.engine.submissions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peewee import SqliteDatabase

from megarun.core.states import JobState
from megarun.db.models import BatchJob
from megarun.engine.batch import BatchJobRow, submit_like
from megarun.engine.scope import SiteScope
from megarun.engine.submissions import has_pending, settle_interrupted, submit_lock
from megarun.errors import UsageError
from megarun.schedulers.base import BatchState

#: READY jobs of a site whose parent ran in a direct batch job of that site and that had no
#: batch job since (their own is older than the parents' newest, or they never had one), with
#: the id of the parents' newest direct batch job. It starts from the site's direct batch jobs
#: (CROSS JOIN keeps that order): a site fed by pilots costs nothing, whatever its READY jobs.
_NEXT_LEVEL = """
SELECT id, template FROM (
    SELECT j.id AS id, j.priority AS priority, j.batch_job_id AS own, max(b.id) AS template
    FROM batch_job b
    CROSS JOIN job p ON p.batch_job_id = b.id
    CROSS JOIN job_dependency d ON d.parent_id = p.id
    CROSS JOIN job j ON j.id = d.child_id
    WHERE b.site_id = ? AND b.mode = 'direct' AND j.site_id = b.site_id AND j.state = ?
    {run}
    GROUP BY j.id
) WHERE own IS NULL OR own < template
ORDER BY priority DESC, id
"""


@dataclass
class LevelSubmission:
    """What one cycle submitted for the next dependency levels of a site."""

    submitted: list[BatchJobRow] = field(default_factory=list)  # batch job rows
    refused: list[BatchJobRow] = field(default_factory=list)  # rows the scheduler refused
    settled: list[str] = field(default_factory=list)  # submissions a kill cut short, settled

    @property
    def jobs(self) -> int:
        return len(self.submitted)


def next_level_jobs(db: SqliteDatabase, site: int,
                    run_id: int | None = None) -> dict[int, list[int]]:
    """The jobs to submit now, grouped by the parents' direct batch job whose settings they
    take (see _NEXT_LEVEL)."""
    sql = _NEXT_LEVEL.format(run="AND j.run_id = ?" if run_id is not None else "")
    params = (site, JobState.READY.value, *((run_id,) if run_id is not None else ()))
    groups: dict[int, list[int]] = {}
    for job_id, template in db.execute_sql(sql, params).fetchall():
        groups.setdefault(int(template), []).append(int(job_id))
    return groups


def submit_next_levels(scope: SiteScope, run_id: int | None = None) -> LevelSubmission:
    """Submit a direct batch job for each READY job whose parents ran in direct batch jobs,
    after settling the submissions a kill cut short. Nothing when another process is
    submitting to the site (the next cycle does it).

    Raises EnvironmentProblem when the site cannot be reached (nothing changed then)."""
    outcome = LevelSubmission()
    if not has_pending(scope) and not next_level_jobs(scope.db, scope.sid, run_id):
        return outcome  # the common case: one cheap query, no lock
    with submit_lock(scope.area, scope.name, wait=False) as held:
        if held:
            outcome.settled = settle_interrupted(scope)
            _submit_levels(scope, next_level_jobs(scope.db, scope.sid, run_id), outcome)
    return outcome


def _submit_levels(scope: SiteScope, groups: dict[int, list[int]],
                   outcome: LevelSubmission) -> None:
    for template_id, job_ids in groups.items():
        template = BatchJob.get_by_id(template_id)
        try:
            rows = submit_like(scope, template, job_ids)
        except UsageError:
            continue  # none of them READY any more: `queue submit` took them meanwhile
        for row in rows:
            failed = row["state"] == BatchState.SUBMIT_FAILED.value
            (outcome.refused if failed else outcome.submitted).append(row)
